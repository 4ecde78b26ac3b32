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

/// Unix seconds of a monotonic instant.
pub fn unix(at: Instant) -> f64 {
    Clock::now().unix(at)
}

/// The monotonic and the wall clock read once, to convert several instants alike: instants in
/// order stay in order (two reads of the clocks a microsecond apart could swap close ones).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        Self { instant: Instant::now(), wall: SystemTime::now() }
    }

    pub fn unix(&self, at: Instant) -> f64 {
        let wall = match at.checked_duration_since(self.instant) {
            Some(after) => self.wall + after,
            None => self.wall - self.instant.saturating_duration_since(at),
        };
        wall.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_clock_keeps_instants_in_order() {
        let t0 = Instant::now();
        let clock = Clock::now();
        let times: Vec<f64> = (0..1000).map(|i| clock.unix(t0 + Duration::from_nanos(i / 3))).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(clock.unix(t0), clock.unix(t0));
        let later = clock.unix(t0 + Duration::from_secs(5)) - clock.unix(t0);
        assert!((later - 5.0).abs() < 1e-6, "{later}");
    }
}
