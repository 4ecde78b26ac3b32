//! Direct probes of every member's own PostgreSQL (address from discovery), each member in its
//! own task: reachable, in recovery or not, and, on a member that is not in recovery, a write
//! to the probe table. They tell "HAProxy is down but the primary takes writes" apart from "the
//! database is down", and time the moment a new primary became writable.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::session::{idle, Deadline, Session, SetupError};
use crate::config::ProbePlan;
use crate::model::address::HostPort;
use crate::model::probe::{DirectOutcome, FailureReason};
use crate::state::ClusterState;
use crate::tasks::{reconcile_pace, TaskSet};

/// Every this many writes a member's old direct rows are deleted...
const PRUNE_EVERY_WRITES: u64 = 600;
/// ...keeping the rows of the last this many sequence numbers.
const ROWS_KEPT: i64 = 1000;

/// Keeps one direct probe per member with a known PostgreSQL address.
pub async fn supervise(state: Arc<ClusterState>, plan: ProbePlan, probe_id: String) {
    // One sequence for all members: a member's task that restarts never reuses a number.
    let seq = Arc::new(AtomicI64::new(0));
    let mut probes = TaskSet::new(format!("{}: direct probe", state.scope()));
    loop {
        let began = Instant::now();
        let stopped = probes.reconcile(state.postgres_targets(), |(member, addr)| {
            let probe = DirectProbe {
                state: state.clone(),
                plan: plan.clone(),
                probe_id: format!("{probe_id}/direct/{member}"),
                member: member.clone(),
                addr: addr.clone(),
                seq: seq.clone(),
                session: None,
                writes: 0,
                setup_error: None,
                writable: false,
                last_write: None,
            };
            probe.run()
        });
        state.note_restarts("direct_probe", stopped);
        state.cadence.next_round(began, reconcile_pace(plan.polling.calm)).await;
    }
}

struct DirectProbe {
    state: Arc<ClusterState>,
    plan: ProbePlan,
    /// `<probe id>/direct/<member>`: its rows never mix with the write probe's.
    probe_id: String,
    member: String,
    addr: HostPort,
    seq: Arc<AtomicI64>,
    session: Option<Session>,
    /// Writes attempted, for pruning.
    writes: u64,
    /// The last setup failure, logged once when it appears and once when it clears.
    setup_error: Option<SetupError>,
    /// The last write on this member succeeded (and it was not in recovery since).
    writable: bool,
    /// When the last write was attempted: while calm, at most one every `calm_write`.
    last_write: Option<Instant>,
}

/// What [`write_due`] weighs for one round on a member not in recovery.
struct WriteCheck {
    /// The last write on this member succeeded.
    writable: bool,
    bursting: bool,
    /// Since this member's last write attempt; `None` before the first.
    since_write: Option<Duration>,
    /// Since the write probe's last acknowledged commit through HAProxy, while it is up and
    /// this member is the only one found writable; `None` otherwise.
    since_routed_commit: Option<Duration>,
}

/// While calm, a member found writable is written again only every `calm_write`, and not at
/// all while the write probe's commits through HAProxy succeed and no other member is found
/// writable (a second primary is written as before): every commit moves the WAL, and each
/// Patroni member then rewrites its key in etcd. A burst (any sign of change, the write probe
/// failing among them) writes on every round. `slack` covers the write probe's own rounds
/// (its commits land up to a calm interval and a deadline after `calm_write`).
fn write_due(c: &WriteCheck, calm_write: Duration, slack: Duration) -> bool {
    let stale = c.since_write.is_none_or(|d| d >= calm_write);
    let routed = c.since_routed_commit.is_some_and(|d| d < calm_write + slack);
    !c.writable || c.bursting || (stale && !routed)
}

fn failed(reason: FailureReason, up: bool, in_recovery: Option<bool>) -> DirectOutcome {
    DirectOutcome { up, in_recovery, writable: false, failure: Some(reason) }
}

impl DirectProbe {
    async fn run(mut self) {
        loop {
            let began = Instant::now();
            let outcome = self.probe().await;
            self.state.apply_direct(&self.member, &self.addr, outcome, Instant::now());
            // The server ended the session (shutdown, crash): the next round, at once, tells
            // whether it still answers. A ping left unanswered (a frozen member, or its packets
            // dropped) is that round's failure, reported now.
            let round = self.state.cadence.next_round(began, self.plan.polling.pace());
            if let Some(l) = idle(&mut self.session, round, self.plan.ping, self.plan.polling.timeout).await {
                self.session = None;
                if l.reason != FailureReason::ClosedConnection {
                    self.writable = false;
                    self.state.apply_direct(&self.member, &self.addr, failed(l.reason, false, None), Instant::now());
                }
            }
        }
    }

    async fn probe(&mut self) -> DirectOutcome {
        let outcome = self.probe_once().await;
        self.writable = outcome.writable;
        outcome
    }

    fn write_due(&self, now: Instant) -> bool {
        let check = WriteCheck {
            writable: self.writable,
            bursting: self.state.cadence.bursting(now),
            since_write: self.last_write.map(|t| now.saturating_duration_since(t)),
            since_routed_commit: self.state.routed_commit(&self.member).map(|t| now.saturating_duration_since(t)),
        };
        write_due(&check, self.plan.calm_write, self.plan.polling.calm + self.plan.polling.timeout)
    }

    async fn probe_once(&mut self) -> DirectOutcome {
        let deadline = Deadline::after(self.plan.polling.timeout);
        if self.session.is_none() {
            match Session::connect(&self.plan.login, &self.plan.schema, &self.addr, &deadline).await {
                Ok(s) => self.session = Some(s),
                Err(f) => return failed(f, false, None),
            }
        }
        let session = self.session.as_ref().expect("connected above");
        let in_recovery = match session.in_recovery(&deadline).await {
            Ok(r) => r,
            Err(f) => {
                self.session = None;
                return failed(f, false, None);
            }
        };
        if in_recovery {
            return DirectOutcome { up: true, in_recovery: Some(true), writable: false, failure: None };
        }
        let now = Instant::now();
        if !self.write_due(now) {
            return DirectOutcome { up: true, in_recovery: Some(false), writable: true, failure: None };
        }
        self.last_write = Some(now);
        let session = self.session.as_mut().expect("connected above");
        let setup = session.ensure_table(&self.plan, &deadline).await.err();
        self.note_setup(setup.clone());
        if setup.is_some() {
            return failed(FailureReason::Other, true, Some(false));
        }
        let session = self.session.as_ref().expect("connected above");
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.writes += 1;
        match session.write_heartbeat(&self.probe_id, seq, &deadline).await {
            Ok(()) => {
                if self.writes % PRUNE_EVERY_WRITES == 0 {
                    let _ = session.prune(&self.probe_id, seq - ROWS_KEPT, false, &deadline).await;
                }
                DirectOutcome { up: true, in_recovery: Some(false), writable: true, failure: None }
            }
            Err(f) => {
                self.session = None;
                failed(f, f != FailureReason::Timeout, Some(false))
            }
        }
    }

    fn note_setup(&mut self, now: Option<SetupError>) {
        if now == self.setup_error {
            return;
        }
        let scope = self.state.scope();
        match &now {
            Some(e) => tracing::warn!(scope = %scope, member = %self.member, error = %e, "direct probe setup failed"),
            None => tracing::info!(scope = %scope, member = %self.member, "direct probe setup works again"),
        }
        self.setup_error = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALM_WRITE: Duration = Duration::from_secs(60);
    const SLACK: Duration = Duration::from_secs(2);

    fn calm(since_write: Option<u64>, since_routed_commit: Option<u64>) -> WriteCheck {
        let secs = |s: Option<u64>| s.map(Duration::from_secs);
        WriteCheck {
            writable: true,
            bursting: false,
            since_write: secs(since_write),
            since_routed_commit: secs(since_routed_commit),
        }
    }

    #[test]
    fn a_member_not_yet_found_writable_or_in_a_burst_is_written_every_round() {
        assert!(write_due(&WriteCheck { writable: false, ..calm(Some(0), Some(0)) }, CALM_WRITE, SLACK));
        assert!(write_due(&WriteCheck { bursting: true, ..calm(Some(0), Some(0)) }, CALM_WRITE, SLACK));
        assert!(!write_due(&calm(Some(0), Some(0)), CALM_WRITE, SLACK));
    }

    #[test]
    fn while_calm_a_recent_commit_through_haproxy_spares_the_direct_write_until_it_is_too_old() {
        assert!(!write_due(&calm(None, Some(10)), CALM_WRITE, SLACK), "never written, but routed commits succeed");
        assert!(
            !write_due(&calm(Some(600), Some(61)), CALM_WRITE, SLACK),
            "within the slack of the write probe's round"
        );
        assert!(write_due(&calm(Some(600), Some(62)), CALM_WRITE, SLACK), "the write probe's commits stopped");
    }

    #[test]
    fn without_routed_commits_a_writable_member_is_written_every_calm_write() {
        assert!(write_due(&calm(None, None), CALM_WRITE, SLACK));
        assert!(!write_due(&calm(Some(59), None), CALM_WRITE, SLACK));
        assert!(write_due(&calm(Some(60), None), CALM_WRITE, SLACK));
    }
}
