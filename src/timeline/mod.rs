//! Cluster events and the failover timeline.
//!
//! Every source reports the state changes it sees as typed [`Change`]s, timed by that source
//! (the leader key watched in etcd, each member's REST API, HAProxy's stats, the probes). The
//! [`Tracker`] keeps the recent ones for `/api/v1/events` and assembles failovers from them,
//! step by step. It reads only the changes' fields: their wording (`detail`) is for people.

pub mod event;
pub mod tracker;

pub use event::{Change, Event, EventKind, LeaderSeenIn};
pub use tracker::{Failover, Phase, Sees, Step, Tracker, EVENTS_KEPT};

use std::time::{Instant, SystemTime};

/// The wall-clock time of a monotonic instant.
pub fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at <= now {
        SystemTime::now() - (now - at)
    } else {
        SystemTime::now() + (at - now)
    }
}

/// Unix seconds of a monotonic instant.
pub fn unix(at: Instant) -> f64 {
    wall(at).duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
