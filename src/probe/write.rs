//! The write probe: a commit every interval through HAProxy's primary port, on a persistent
//! session that reconnects by itself after any error (the lab report's script died on its
//! closed connection; this one must not). A session the server closes while idle is an
//! outage's start, at that moment; during an outage the probe hedges (see [`WriteProbe::hedge`]).
//!
//! Each row is (probe id, sequence number, the exporter's clock). After every outage the probe
//! checks, on the (new) primary, that every sequence number whose commit was acknowledged is
//! still there: what is missing is a lost acknowledged write. A write whose commit was not
//! acknowledged (timed out, connection dropped) is never counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::session::{idle, Deadline, Session, SetupError, SLOW_STATEMENT};
use crate::config::ProbePlan;
use crate::model::address::HostPort;
use crate::model::probe::{Attempt, FailureReason, ProbeKind, Transition};
use crate::state::ClusterState;

/// Acknowledged writes remembered for the loss check: the newest this many...
const ACKED_KEPT: usize = 100_000;
/// ...and no older than this (rows older than it are pruned from the table too).
const ACKED_AGE: Duration = Duration::from_secs(3600);
/// How often the probe deletes its old rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most hedged attempts waiting at once (the default 1s deadline over the 50ms interval makes
/// 20): each holds a session, and a hung server must not collect hundreds of them. At the cap
/// the oldest is dropped for the new one, so a new attempt still starts every interval.
const MAX_IN_FLIGHT: usize = 32;

/// A write outage younger than this keeps the cluster's burst going, so its end is timed at
/// the fine interval; an older one (HAProxy down for hours) is tried at the calm interval.
const OUTAGE_BURST: Duration = Duration::from_secs(300);

/// The hedged attempts still waiting, at most `cap`: one more started at the cap drops the
/// oldest, so a new attempt still starts every interval and a hung server never holds more
/// sessions than that.
struct InFlight<T> {
    tasks: tokio::task::JoinSet<T>,
    oldest_first: std::collections::VecDeque<tokio::task::AbortHandle>,
    cap: usize,
}

impl<T: Send + 'static> InFlight<T> {
    fn new(cap: usize) -> Self {
        Self { tasks: tokio::task::JoinSet::new(), oldest_first: Default::default(), cap }
    }

    fn start(&mut self, attempt: impl std::future::Future<Output = T> + Send + 'static) {
        self.oldest_first.retain(|h| !h.is_finished());
        if self.oldest_first.len() >= self.cap {
            if let Some(oldest) = self.oldest_first.pop_front() {
                oldest.abort();
            }
        }
        self.oldest_first.push_back(self.tasks.spawn(attempt));
    }

    /// The next attempt to finish, the dropped ones skipped (and one that panicked, logged);
    /// `None` once none waits. Cancel safe, as `JoinSet::join_next` is.
    async fn next(&mut self) -> Option<T> {
        loop {
            match self.tasks.join_next().await? {
                Ok(done) => return Some(done),
                Err(e) if e.is_panic() => tracing::error!(error = %e, "a hedged write attempt panicked"),
                Err(_dropped) => {}
            }
        }
    }
}

pub struct WriteProbe {
    state: Arc<ClusterState>,
    plan: ProbePlan,
    addr: HostPort,
    probe_id: String,
    session: Option<Session>,
    last_prune: Instant,
    /// The last commit attempted: while calm, the probe commits every `calm_write` only.
    last_commit: Option<Instant>,
    /// The last setup error of the table, logged when it appears, not on every attempt.
    setup_error: Option<SetupError>,
}

/// One write attempt's result, and the setup error that failed it if one did.
type Written = (Result<(), FailureReason>, Option<SetupError>);

/// One write on `session`, connecting (and setting the table up) first when there is none.
async fn write_on(
    session: &mut Option<Session>,
    plan: &ProbePlan,
    addr: &HostPort,
    probe_id: &str,
    seq: i64,
) -> Written {
    let deadline = Deadline::after(plan.polling.timeout);
    if session.is_none() {
        let mut fresh = match Session::connect(&plan.login, &plan.schema, addr, &deadline).await {
            Ok(s) => s,
            Err(reason) => return (Err(reason), None),
        };
        if let Err(e) = fresh.ensure_table(plan, &deadline).await {
            return (Err(FailureReason::Other), Some(e));
        }
        *session = Some(fresh);
    }
    let result = session.as_ref().expect("connected above").write_heartbeat(probe_id, seq, &deadline).await;
    if result.is_err() {
        // Whatever went wrong, the next attempt starts from a fresh session: a read-only or
        // closing server, a hung one, or HAProxy that routed us nowhere.
        *session = None;
    }
    (result, None)
}

impl WriteProbe {
    pub fn new(state: Arc<ClusterState>, plan: ProbePlan, addr: HostPort, probe_id: String) -> Self {
        let last_prune = Instant::now();
        Self { state, plan, addr, probe_id, session: None, last_prune, last_commit: None, setup_error: None }
    }

    pub async fn run(mut self) {
        loop {
            let began = Instant::now();
            if self.state.read().probes.write.as_ref().is_some_and(|w| w.failing()) {
                self.hedge().await;
                continue;
            }
            if self.check_will_do(began) {
                self.check(began).await;
            } else {
                self.last_commit = Some(began);
                let seq = self.next_seq();
                let (result, setup) = write_on(&mut self.session, &self.plan, &self.addr, &self.probe_id, seq).await;
                self.note_setup(setup, result.is_ok());
                self.settle(Attempt { started: began, finished: Instant::now(), result }, seq).await;
            }
            // Closed, or frozen: between the checks, pings find a silent HAProxy or primary.
            let round = self.state.cadence.next_round(began, self.plan.polling.pace());
            if let Some(l) = idle(&mut self.session, round, self.plan.ping, self.plan.polling.timeout).await {
                self.session = None;
                self.state.apply_probe_lost(ProbeKind::Write, l.since, l.reason, Instant::now());
            }
        }
    }

    /// While calm and between commits, on a session that is open, a check that writes nothing.
    fn check_will_do(&self, now: Instant) -> bool {
        let commit_due = self.last_commit.is_none_or(|t| now.saturating_duration_since(t) >= self.plan.calm_write);
        self.session.is_some() && !commit_due && !self.state.cadence.bursting(now)
    }

    /// Asks the primary, through HAProxy, whether it is in recovery: serving, or the failure
    /// that starts an outage (a replica or a read-only node behind the port, no answer).
    async fn check(&mut self, began: Instant) {
        let Some(session) = &self.session else { return };
        let result = match session.in_recovery(&Deadline::after(self.plan.polling.timeout)).await {
            Ok(false) => return self.state.apply_probe_served(ProbeKind::Write, Instant::now()),
            Ok(true) => Err(FailureReason::ReadOnly),
            Err(reason) => Err(reason),
        };
        self.session = None;
        self.state.apply_probe(ProbeKind::Write, Attempt { started: began, finished: Instant::now(), result }, None);
    }

    fn next_seq(&self) -> i64 {
        let mut ledger = self.state.ledger();
        ledger.seq += 1;
        ledger.seq
    }

    /// During an outage: a new attempt on a new session every interval, whatever earlier ones
    /// still wait on (one held by HAProxy's retries or a dead server must not hold the outage
    /// open). The first success ends the outage and keeps its session; the attempts still
    /// waiting are dropped, and a commit never acknowledged is never counted.
    async fn hedge(&mut self) {
        self.session = None;
        let mut waiting = InFlight::new(MAX_IN_FLIGHT);
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {
                    let (plan, addr, id, seq) = (self.plan.clone(), self.addr.clone(), self.probe_id.clone(), self.next_seq());
                    waiting.start(async move {
                        let (started, mut session) = (Instant::now(), None);
                        let (result, setup) = write_on(&mut session, &plan, &addr, &id, seq).await;
                        (Attempt { started, finished: Instant::now(), result }, seq, session, setup)
                    });
                    let now = Instant::now();
                    // Before a first success there is no outage to time: no burst for it.
                    let young = self.state.read().probes.write.as_ref()
                        .is_some_and(|w| w.outage_since.is_some() && w.current_outage(now) < OUTAGE_BURST);
                    if young && !self.state.cadence.bursting(now) {
                        self.state.cadence.alarm();
                    }
                    next = now + self.state.cadence.interval(self.plan.polling.pace(), now);
                }
                Some((attempt, seq, session, setup)) = waiting.next() => {
                    self.note_setup(setup, attempt.result.is_ok());
                    if attempt.result.is_ok() {
                        self.session = session;
                    }
                    if self.settle(attempt, seq).await {
                        return;
                    }
                }
            }
        }
    }

    /// Logs a setup error when it appears (a missing privilege as an error, a setup that failed
    /// because the server is going away at debug level) and once when writes work again.
    fn note_setup(&mut self, setup: Option<SetupError>, wrote: bool) {
        let scope = self.state.scope();
        match setup {
            Some(e) if self.setup_error.as_ref() != Some(&e) => {
                match &e {
                    SetupError::NotAllowed { .. } => tracing::error!(scope, error = %e, "write probe setup"),
                    SetupError::Failed(_) => tracing::debug!(scope, error = %e, "write probe setup"),
                }
                self.setup_error = Some(e);
            }
            None if wrote && self.setup_error.take().is_some() => {
                tracing::info!(scope, "write probe setup works again")
            }
            _ => {}
        }
    }

    /// Records one attempt; after the outage it ends, checks for lost writes. True when the
    /// probe is up.
    async fn settle(&mut self, attempt: Attempt, seq: i64) -> bool {
        let Attempt { started, finished, result } = attempt;
        match result {
            Err(reason) => tracing::debug!(scope = %self.state.scope(), seq, reason = reason.as_str(),
                took_ms = (finished - started).as_millis() as u64, "write probe failed"),
            Ok(()) => {
                let acked = &mut self.state.ledger().acked;
                acked.push_back((seq, finished));
                while acked.len() > ACKED_KEPT
                    || acked.front().is_some_and(|(_, t)| finished.duration_since(*t) > ACKED_AGE)
                {
                    acked.pop_front();
                }
            }
        }
        match self.state.apply_probe(ProbeKind::Write, attempt, None) {
            Transition::OutageEnded(outage) => {
                self.state.ledger().check_owed = true;
                let lost = self.check_losses(outage.last_success).await;
                self.state.apply_write_recovered(outage, lost);
            }
            Transition::None if result.is_ok() && self.state.ledger().check_owed => {
                // The check failed right after the outage: try again on a later success.
                if let Some(lost) = self.check_losses(finished).await {
                    self.state.apply_late_loss_check(lost);
                }
            }
            _ => {}
        }
        if result.is_ok() && self.last_prune.elapsed() >= PRUNE_EVERY {
            self.prune().await;
        }
        result.is_ok()
    }

    /// The acknowledged writes made before `before` that the primary no longer has, forgotten
    /// once found (so a later check does not count them again); `None` when the check failed.
    async fn check_losses(&mut self, before: Instant) -> Option<Vec<i64>> {
        let session = self.session.as_ref()?;
        let expected: Vec<i64> = {
            let mut ledger = self.state.ledger();
            let expected: Vec<i64> = ledger.acked.iter().filter(|(_, t)| *t <= before).map(|(s, _)| *s).collect();
            if expected.is_empty() {
                ledger.check_owed = false;
                return Some(Vec::new());
            }
            expected
        };
        let deadline = Deadline::after(self.plan.polling.timeout.max(SLOW_STATEMENT));
        match session.present(&self.probe_id, &expected, &deadline).await {
            Ok(present) => {
                let lost: Vec<i64> = expected.into_iter().filter(|s| !present.contains(s)).collect();
                let mut ledger = self.state.ledger();
                ledger.acked.retain(|(s, _)| !lost.contains(s));
                ledger.check_owed = false;
                Some(lost)
            }
            Err(reason) => {
                tracing::warn!(scope = %self.state.scope(), reason = reason.as_str(), "loss check failed; will retry");
                None
            }
        }
    }

    /// Deletes this probe's rows older than what the loss check still needs, and anyone's rows
    /// older than a day.
    async fn prune(&mut self) {
        self.last_prune = Instant::now();
        let Some(session) = &self.session else { return };
        let keep_from = {
            let ledger = self.state.ledger();
            ledger.acked.front().map(|(s, _)| *s).unwrap_or(ledger.seq)
        };
        let deadline = Deadline::after(self.plan.polling.timeout);
        if let Err(reason) = session.prune(&self.probe_id, keep_from, true, &deadline).await {
            tracing::warn!(scope = %self.state.scope(), reason = reason.as_str(), "pruning probe rows failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next<T: Send + 'static>(waiting: &mut InFlight<T>) -> Option<T> {
        tokio::time::timeout(Duration::from_secs(5), waiting.next()).await.expect("bounded")
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_waiting_attempt_is_dropped_for_the_new_one() {
        let mut waiting = InFlight::new(2);
        let mut answers = Vec::new();
        for n in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            answers.push(tx);
            waiting.start(async move { rx.await.map(|()| n) });
        }
        for tx in answers {
            let _ = tx.send(());
        }
        let mut done = Vec::new();
        while let Some(n) = next(&mut waiting).await {
            done.push(n.expect("answered, not dropped"));
        }
        done.sort();
        assert_eq!(done, vec![1, 2], "the oldest was dropped, the two newest answered");
    }

    #[tokio::test]
    async fn attempts_that_finished_do_not_count_against_the_cap() {
        let mut waiting = InFlight::new(2);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        waiting.start(async move { rx.await.map(|()| 1).unwrap_or(-1) });
        waiting.start(async { 2 });
        assert_eq!(next(&mut waiting).await, Some(2));
        waiting.start(async { 3 });
        let _ = tx.send(());
        let mut done = vec![next(&mut waiting).await, next(&mut waiting).await];
        done.sort();
        assert_eq!(done, vec![Some(1), Some(3)], "the first still waited: only one was waiting when 3 started");
        assert_eq!(next(&mut waiting).await, None);
    }
}
