//! Synthetic probes: what an application behind HAProxy actually experiences.
//!
//! - `write`: a commit every interval through HAProxy's primary port, with the acknowledged-write
//!   loss check after every outage;
//! - `read`: the newest heartbeat row visible through the replicas port (staleness);
//! - `direct`: every member's own PostgreSQL, each member in its own task, so "HAProxy is down
//!   but the primary takes writes" is told apart from "the database is down", and the moment a
//!   new primary became writable is timed.
//!
//! All three speak to PostgreSQL through one [`session::Session`] type. Every attempt runs under
//! a client-side deadline (a server-side statement timeout does nothing against a frozen
//! server); on expiry or any error the session is dropped and the next attempt reconnects.

pub mod direct;
mod password_guard;
pub mod read;
pub mod session;
pub mod write;

use std::time::SystemTime;

/// A probe id unique per exporter instance: two exporters on one cluster never collide.
pub fn new_probe_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{}-{:x}", host.trim(), std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_ids_differ() {
        assert_ne!(super::new_probe_id(), super::new_probe_id());
    }
}
