//! What the synthetic probes measured: attempts, failures by reason, and outages. An outage
//! runs from the last moment the probe's path was known to serve (its last success, or the
//! moment the server closed the probe's idle session, whichever is later) to the next success.
//! A probe that writes once a second while the cluster is calm still times the start of an
//! outage that a server's shutdown or crash begins to the millisecond: the kernel tells the
//! session's end at once.

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

impl FailureReason {
    /// A failure of the path itself (a closed, refused, silent or read-only server, a login
    /// or handshake refused): the checks between commits would have seen it, so an outage it
    /// starts dates from the last check that found the path serving. An error the server
    /// returned to the statement (`Other`: a full disk, a revoked privilege) says nothing
    /// about when commits began to fail: that outage dates from the last acknowledged commit.
    pub fn is_path_failure(self) -> bool {
        self != FailureReason::Other
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
    /// When the current outage began; `None` when there is none.
    pub outage_since: Option<Instant>,
    /// The last moment the path was known to serve: the last success, or a later close of the
    /// idle session by the server, or a later check that found it serving (see
    /// [`FailureReason::is_path_failure`]).
    pub served_until: Option<Instant>,
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
            served_until: None,
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
        self.outcome(finished, result)
    }

    /// What an attempt's result at `finished` changes: up or not, the outage state.
    fn outcome(&mut self, finished: Instant, result: Result<(), FailureReason>) -> Transition {
        match result {
            Ok(()) => {
                self.up = true;
                self.last_success = Some(finished);
                self.served_until = Some(finished);
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
                let since = if reason.is_path_failure() { self.served_until } else { self.last_success };
                match (self.outage_since, since) {
                    (None, Some(since)) => {
                        self.outage_since = Some(since);
                        Transition::OutageStarted { last_success: since, reason }
                    }
                    _ => Transition::None,
                }
            }
        }
    }

    /// A check that writes nothing found the path serving at `at` (the write probe between its
    /// commits while the cluster is calm): an attempt, and the outage a later failure starts
    /// begins no earlier than this. True when it moved that start.
    pub fn record_served(&mut self, at: Instant) -> bool {
        self.attempts += 1;
        let moves = self.up && self.outage_since.is_none() && self.served_until.is_none_or(|s| s < at);
        if moves {
            self.served_until = Some(at);
        }
        moves
    }

    /// The server closed the probe's session at `at` while no attempt was running on it: the
    /// path served until then, and the close is the failure that starts an outage.
    pub fn record_close(&mut self, at: Instant) -> Transition {
        if self.up && self.outage_since.is_none() {
            self.served_until = self.served_until.max(Some(at));
        }
        // An attempt that took no time: counted, but no latency sample.
        self.attempts += 1;
        self.outcome(at, Err(FailureReason::ClosedConnection))
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
    /// A write to the probe table succeeded (only tried when not in recovery), or, while calm
    /// between writes, the member is still not in recovery since the last one that did.
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
    fn an_idle_session_closed_by_the_server_starts_the_outage_at_the_close() {
        let mut s = ProbeStats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        s.record(&Attempt { started: at(0), finished: at(2), result: Ok(()) });
        assert_eq!(
            s.record_close(at(900)),
            Transition::OutageStarted { last_success: at(900), reason: FailureReason::ClosedConnection }
        );
        assert_eq!(s.last_success, Some(at(2)), "the last success stays what it was");
        assert_eq!(
            s.record(&Attempt { started: at(950), finished: at(951), result: Err(FailureReason::ConnectRefused) }),
            Transition::None
        );
        let ended = s.record(&Attempt { started: at(3000), finished: at(3010), result: Ok(()) });
        assert_eq!(ended, Transition::OutageEnded(Outage { last_success: at(900), recovered: at(3010) }));
        assert_eq!(s.last_outage, Some(Duration::from_millis(2110)));
        // A close during an outage moves nothing; one before any success starts none.
        s.record(&Attempt { started: at(4000), finished: at(4500), result: Err(FailureReason::Timeout) });
        assert_eq!(s.record_close(at(4600)), Transition::None);
        assert_eq!(s.outage_since, Some(at(3010)));
        assert_eq!(ProbeStats::default().record_close(at(1)), Transition::None);
    }

    #[test]
    fn a_check_between_commits_moves_the_outage_start_but_not_the_last_success() {
        let mut s = ProbeStats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        s.record(&Attempt { started: at(0), finished: at(2), result: Ok(()) });
        s.record_served(at(1000));
        s.record_served(at(2000));
        let started = s.record(&Attempt { started: at(3000), finished: at(4000), result: Err(FailureReason::Timeout) });
        assert_eq!(started, Transition::OutageStarted { last_success: at(2000), reason: FailureReason::Timeout });
        assert_eq!((s.last_success, s.attempts), (Some(at(2)), 4));
        s.record_served(at(4500));
        assert_eq!(s.outage_since, Some(at(2000)), "a check during an outage does not end or move it");
    }

    #[test]
    fn a_statement_error_dates_the_outage_from_the_last_commit_not_the_last_check() {
        let mut s = ProbeStats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        s.record(&Attempt { started: at(0), finished: at(2), result: Ok(()) });
        s.record_served(at(1000));
        let started = s.record(&Attempt { started: at(1500), finished: at(1510), result: Err(FailureReason::Other) });
        assert_eq!(started, Transition::OutageStarted { last_success: at(2), reason: FailureReason::Other });
        assert_eq!(s.outage_since, Some(at(2)));
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
