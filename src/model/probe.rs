//! What the synthetic probes measured: attempts, failures by reason, and outages. An outage
//! runs from the last success before a failure to the next success.

use std::time::{Duration, Instant, SystemTime};

use super::hist::{Hist, LATENCY_BUCKETS, OUTAGE_BUCKETS};

label_enum! {
    /// The probes through HAProxy: the `probe` label.
    pub enum ProbeKind {
        Write = "write",
        Read = "read",
    }
}

label_enum! {
    /// Why a probe attempt failed: the `reason` label.
    pub enum FailureReason {
        ConnectRefused = "connect_refused",
        ClosedConnection = "closed_connection",
        ReadOnly = "read_only",
        Timeout = "timeout",
        /// The probe role could not log in (wrong password, no pg_hba rule).
        Auth = "auth",
        /// The TLS handshake failed (certificate not trusted, wrong name, TLS refused).
        Tls = "tls",
        Other = "other",
    }
}

/// An outage that ended: from the last success before a failure to the next success.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub last_success: Instant,
    pub recovered: Instant,
}

impl Outage {
    pub fn duration(&self) -> Duration {
        self.recovered.saturating_duration_since(self.last_success)
    }
}

/// What one attempt changed about the probe's outage state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    None,
    /// The first failure after a success; the outage began at that success.
    OutageStarted {
        last_success: Instant,
        reason: FailureReason,
    },
    OutageEnded(Outage),
}

/// One probe attempt, whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    pub started: Instant,
    pub finished: Instant,
    pub result: Result<(), FailureReason>,
}

/// Counters and outage state of one probe. Counters reset when the exporter restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStats {
    pub attempts: u64,
    pub failures: [u64; FailureReason::COUNT],
    pub latency: Hist,
    pub up: bool,
    pub last_success: Option<Instant>,
    pub last_success_wall: Option<SystemTime>,
    pub last_failure: Option<FailureReason>,
    /// When the current outage began (the last success before it); `None` when there is none.
    pub outage_since: Option<Instant>,
    pub outages: u64,
    pub last_outage: Option<Duration>,
    pub outage_durations: Hist,
}

impl Default for ProbeStats {
    fn default() -> Self {
        Self {
            attempts: 0,
            failures: [0; FailureReason::COUNT],
            latency: Hist::new(LATENCY_BUCKETS),
            up: false,
            last_success: None,
            last_success_wall: None,
            last_failure: None,
            outage_since: None,
            outages: 0,
            last_outage: None,
            outage_durations: Hist::new(OUTAGE_BUCKETS),
        }
    }
}

impl ProbeStats {
    pub fn failures_by_reason(&self) -> impl Iterator<Item = (FailureReason, u64)> + '_ {
        FailureReason::ALL.iter().map(|r| (*r, self.failures[r.index()]))
    }

    /// Failing now, after at least one attempt.
    pub fn failing(&self) -> bool {
        self.attempts > 0 && !self.up
    }

    /// Records one attempt.
    pub fn record(&mut self, attempt: &Attempt) -> Transition {
        let Attempt { started, finished, result } = *attempt;
        self.attempts += 1;
        self.latency.observe(finished.saturating_duration_since(started).as_secs_f64());
        match result {
            Ok(()) => {
                self.up = true;
                self.last_success = Some(finished);
                self.last_success_wall = Some(SystemTime::now() - Instant::now().saturating_duration_since(finished));
                let Some(since) = self.outage_since.take() else { return Transition::None };
                let outage = Outage { last_success: since, recovered: finished };
                self.outages += 1;
                self.last_outage = Some(outage.duration());
                self.outage_durations.observe(outage.duration().as_secs_f64());
                Transition::OutageEnded(outage)
            }
            Err(reason) => {
                self.up = false;
                self.failures[reason.index()] += 1;
                self.last_failure = Some(reason);
                // Before a first success there is no known start: no outage is counted.
                match (self.outage_since, self.last_success) {
                    (None, Some(last)) => {
                        self.outage_since = Some(last);
                        Transition::OutageStarted { last_success: last, reason }
                    }
                    _ => Transition::None,
                }
            }
        }
    }

    /// Time into the current outage (zero when there is none).
    pub fn current_outage(&self, now: Instant) -> Duration {
        self.outage_since.map(|s| now.saturating_duration_since(s)).unwrap_or_default()
    }
}

/// One direct probe of a member's own PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectOutcome {
    pub up: bool,
    pub in_recovery: Option<bool>,
    /// A write to the probe table succeeded (only tried when not in recovery).
    pub writable: bool,
    pub failure: Option<FailureReason>,
}

/// The direct probe's state for one member.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectStatus {
    pub up: bool,
    pub in_recovery: Option<bool>,
    pub writable: bool,
    pub attempts: u64,
    pub failures: [u64; FailureReason::COUNT],
}

/// What a direct probe outcome changed: the member's PostgreSQL stopped answering, or became
/// writable.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DirectTransition {
    pub unreachable: Option<FailureReason>,
    pub writable: bool,
}

impl DirectStatus {
    pub fn record(&mut self, o: &DirectOutcome) -> DirectTransition {
        let (was_up, was_writable, seen_before) = (self.up, self.writable, self.attempts > 0);
        self.attempts += 1;
        if let Some(f) = o.failure {
            self.failures[f.index()] += 1;
        }
        (self.up, self.in_recovery, self.writable) = (o.up, o.in_recovery, o.writable);
        DirectTransition {
            unreachable: (seen_before && was_up && !o.up).then(|| o.failure.unwrap_or(FailureReason::Other)),
            writable: o.writable && !was_writable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_runs_from_last_success_to_next_success() {
        let mut s = ProbeStats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let attempt = |a: u64, b: u64, result| Attempt { started: at(a), finished: at(b), result };
        assert_eq!(s.record(&attempt(0, 1, Err(FailureReason::ConnectRefused))), Transition::None, "no success yet");
        assert_eq!(s.outage_since, None);
        assert_eq!(s.record(&attempt(100, 101, Ok(()))), Transition::None);
        assert_eq!(
            s.record(&attempt(200, 205, Err(FailureReason::ReadOnly))),
            Transition::OutageStarted { last_success: at(101), reason: FailureReason::ReadOnly }
        );
        assert_eq!(s.record(&attempt(300, 1300, Err(FailureReason::Timeout))), Transition::None);
        assert_eq!(s.current_outage(at(1401)), Duration::from_millis(1300));
        let ended = s.record(&attempt(3000, 3101, Ok(())));
        assert_eq!(ended, Transition::OutageEnded(Outage { last_success: at(101), recovered: at(3101) }));
        assert_eq!(s.last_outage, Some(Duration::from_secs(3)));
        assert_eq!((s.outages, s.attempts), (1, 5));
        assert_eq!(s.current_outage(at(4000)), Duration::ZERO);
        let failures: Vec<_> = s.failures_by_reason().collect();
        assert!(failures.contains(&(FailureReason::ConnectRefused, 1)));
        assert!(failures.contains(&(FailureReason::ClosedConnection, 0)));
        assert_eq!(s.outage_durations.count, 1);
        let le3 = s.outage_durations.buckets().iter().find(|(b, _)| *b == 3.0).unwrap().1;
        assert_eq!(le3, 1, "3.0 s lands in the le=3 bucket");
    }

    #[test]
    fn direct_transitions_need_a_change() {
        let mut d = DirectStatus::default();
        let up = DirectOutcome { up: true, in_recovery: Some(false), writable: true, failure: None };
        let down =
            DirectOutcome { up: false, in_recovery: None, writable: false, failure: Some(FailureReason::Timeout) };
        assert_eq!(d.record(&down), DirectTransition::default(), "not seen up before: no transition");
        assert_eq!(d.record(&up), DirectTransition { unreachable: None, writable: true });
        assert_eq!(d.record(&up), DirectTransition::default());
        assert_eq!(d.record(&down).unreachable, Some(FailureReason::Timeout));
        assert_eq!((d.attempts, d.failures[FailureReason::Timeout.index()]), (4, 2));
    }
}
