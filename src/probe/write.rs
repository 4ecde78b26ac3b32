//! The write probe: a commit every interval through HAProxy's primary port, on a persistent
//! session that reconnects by itself after any error (the lab report's script died on its
//! closed connection; this one must not).
//!
//! Each row is (probe id, sequence number, the exporter's clock). After every outage the probe
//! checks, on the (new) primary, that every sequence number whose commit was acknowledged is
//! still there: what is missing is a lost acknowledged write. A write whose commit was not
//! acknowledged (timed out, connection dropped) is never counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::session::{Deadline, Session, SetupError, SLOW_STATEMENT};
use crate::config::ProbePlan;
use crate::model::address::HostPort;
use crate::model::probe::{Attempt, FailureReason, ProbeKind, Transition};
use crate::state::ClusterState;
use crate::tasks::ticker;

/// Acknowledged writes remembered for the loss check: the newest this many...
const ACKED_KEPT: usize = 100_000;
/// ...and no older than this (rows older than it are pruned from the table too).
const ACKED_AGE: Duration = Duration::from_secs(3600);
/// How often the probe deletes its old rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct WriteProbe {
    state: Arc<ClusterState>,
    plan: ProbePlan,
    addr: HostPort,
    probe_id: String,
    session: Option<Session>,
    last_prune: Instant,
}

impl WriteProbe {
    pub fn new(state: Arc<ClusterState>, plan: ProbePlan, addr: HostPort, probe_id: String) -> Self {
        let last_prune = Instant::now();
        Self { state, plan, addr, probe_id, session: None, last_prune }
    }

    pub async fn run(mut self) {
        let mut tick = ticker(self.plan.polling.interval);
        loop {
            tick.tick().await;
            self.attempt().await;
        }
    }

    async fn write_once(&mut self, seq: i64) -> Result<(), FailureReason> {
        let deadline = Deadline::after(self.plan.polling.timeout);
        if self.session.is_none() {
            let mut session = Session::connect(&self.plan.login, &self.plan.schema, &self.addr, &deadline).await?;
            if let Err(e) = session.ensure_table(&self.plan, &deadline).await {
                // A missing privilege is worth an error; a setup that failed because the
                // server is going away is just this attempt's failure.
                match &e {
                    SetupError::NotAllowed { .. } => {
                        tracing::error!(scope = %self.state.scope(), error = %e, "write probe setup")
                    }
                    SetupError::Failed(_) => {
                        tracing::debug!(scope = %self.state.scope(), error = %e, "write probe setup")
                    }
                }
                return Err(FailureReason::Other);
            }
            self.session = Some(session);
        }
        let session = self.session.as_ref().expect("connected above");
        session.write_heartbeat(&self.probe_id, seq, &deadline).await
    }

    async fn attempt(&mut self) {
        let seq = {
            let mut ledger = self.state.ledger();
            ledger.seq += 1;
            ledger.seq
        };
        let started = Instant::now();
        let result = self.write_once(seq).await;
        let finished = Instant::now();
        match result {
            Err(reason) => {
                tracing::debug!(scope = %self.state.scope(), seq, reason = reason.as_str(),
                    took_ms = (finished - started).as_millis() as u64, "write probe failed");
                // Whatever went wrong, the next attempt starts from a fresh session: a read-only
                // or closing server, a hung one, or HAProxy that routed us nowhere.
                self.session = None;
            }
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
        let attempt = Attempt { started, finished, result };
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
