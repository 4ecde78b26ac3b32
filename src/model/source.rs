//! Targets and their health. A target is one thing the exporter calls: a Patroni member, a
//! Patroni discovery URL, an etcd endpoint, an HAProxy instance. One call gives one [`Reading`],
//! which is applied whole: its health and what it said change together.

use std::time::{Duration, Instant};

label_enum! {
    /// A source of readings: the `source` label.
    pub enum Source {
        Patroni = "patroni",
        Etcd = "etcd",
        Haproxy = "haproxy",
        /// The whoami pages of the virtual IP in front of the HAProxy instances.
        Vip = "vip",
    }
}

label_enum! {
    /// Why a call to a target failed: the `kind` label of `pgha_source_errors_total`.
    pub enum ErrorKind {
        Timeout = "timeout",
        Connect = "connect",
        HttpStatus = "http_status",
        TooLarge = "too_large",
        Parse = "parse",
        Rpc = "rpc",
        Tls = "tls",
        Auth = "auth",
        Permission = "permission",
        Other = "other",
    }
}

/// The longest error message kept, in bytes.
const MAX_ERROR_TEXT: usize = 512;

/// A failed call: its kind, and what went wrong in words (for the log only).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TargetError {
    /// The message is bounded: it may quote what a target said.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: super::text::bounded_to(&message.into(), MAX_ERROR_TEXT) }
    }
}

/// The outcome of one call to one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<T> {
    /// When the call ended: events it reveals are stamped with it.
    pub at: Instant,
    pub duration: Duration,
    pub result: Result<T, TargetError>,
}

/// The health of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetHealth {
    pub up: bool,
    pub last_duration: Duration,
    /// When the last call ended; `None` before the first.
    pub last_poll: Option<Instant>,
    /// Failed calls by `ErrorKind::index`.
    pub errors: [u64; ErrorKind::COUNT],
    /// The kind of the last failure, while down.
    pub failing: Option<ErrorKind>,
    /// The kinds of failure already reported since the target went down: a target that
    /// alternates between two (a host dropping SYNs: timeout, connect, timeout...) is reported
    /// twice, not on every call.
    reported: [bool; ErrorKind::COUNT],
}

/// A change of a target's health worth one log line.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthChange {
    BackUp,
    Failing(TargetError),
}

impl TargetHealth {
    /// Records one call's outcome; returns a change only on a transition (down, a kind of
    /// failure not reported since it went down, back up), so a target that stays down does not
    /// flood the log, whatever its error messages say.
    pub fn record<T>(&mut self, reading: &Reading<T>) -> Option<HealthChange> {
        let (was_up, first) = (self.up, self.last_poll.is_none());
        self.last_duration = reading.duration;
        self.last_poll = Some(reading.at);
        match &reading.result {
            Ok(_) => {
                self.up = true;
                self.failing = None;
                self.reported = [false; ErrorKind::COUNT];
                (!was_up && !first).then_some(HealthChange::BackUp)
            }
            Err(e) => {
                self.up = false;
                self.errors[e.kind.index()] += 1;
                self.failing = Some(e.kind);
                let new_kind = !std::mem::replace(&mut self.reported[e.kind.index()], true);
                (was_up || first || new_kind).then(|| HealthChange::Failing(e.clone()))
            }
        }
    }

    pub fn attempted(&self) -> bool {
        self.last_poll.is_some()
    }

    pub fn errors_by_kind(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL.iter().map(|k| (*k, self.errors[k.index()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(result: Result<(), TargetError>) -> Reading<()> {
        Reading { at: Instant::now(), duration: Duration::from_millis(2), result }
    }

    #[test]
    fn errors_are_counted_by_kind_and_only_transitions_are_reported() {
        let mut h = TargetHealth::default();
        assert!(!h.attempted());
        let slow = || reading(Err(TargetError::new(ErrorKind::Timeout, "slow")));
        assert!(matches!(h.record(&slow()), Some(HealthChange::Failing(_))), "first failure");
        assert_eq!(h.record(&slow()), None, "the same failure again");
        let refused = reading(Err(TargetError::new(ErrorKind::Connect, "refused")));
        assert!(h.record(&refused).is_some(), "a different failure");
        let reworded = reading(Err(TargetError::new(ErrorKind::Connect, "refused, port 2")));
        assert_eq!(h.record(&reworded), None, "the same kind in other words");
        for _ in 0..10 {
            assert_eq!(h.record(&slow()), None, "timeout and connect alternating: both already reported");
            assert_eq!(h.record(&refused), None);
        }
        assert_eq!(h.failing, Some(ErrorKind::Connect));
        assert_eq!(h.record(&reading(Ok(()))), Some(HealthChange::BackUp));
        assert_eq!(h.record(&reading(Ok(()))), None);
        assert!(h.up && h.attempted() && h.failing.is_none());
        assert!(h.record(&slow()).is_some(), "down again: reported again");
        let counts: Vec<(ErrorKind, u64)> = h.errors_by_kind().collect();
        assert_eq!(counts.len(), ErrorKind::COUNT);
        assert!(counts.contains(&(ErrorKind::Timeout, 13)) && counts.contains(&(ErrorKind::Parse, 0)));
        let mut fresh = TargetHealth::default();
        assert_eq!(fresh.record(&reading(Ok(()))), None, "up at the first call is no transition");
    }
}
