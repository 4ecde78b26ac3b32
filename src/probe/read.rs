//! The read probe: the newest heartbeat row visible through HAProxy's replicas port, against
//! the write probe's acknowledged commits. Its staleness is how long the oldest acknowledged
//! commit it does not see has been acknowledged: the replication delay as an application
//! reading from replicas sees it, zero when it sees every commit, whatever the write rate
//! (while calm the write probe commits once a minute).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::session::{idle, Deadline, Session};
use crate::config::ProbePlan;
use crate::model::address::HostPort;
use crate::model::probe::{Attempt, FailureReason, ProbeKind};
use crate::state::ClusterState;

pub struct ReadProbe {
    state: Arc<ClusterState>,
    plan: ProbePlan,
    addr: HostPort,
    probe_id: String,
    session: Option<Session>,
}

impl ReadProbe {
    pub fn new(state: Arc<ClusterState>, plan: ProbePlan, addr: HostPort, probe_id: String) -> Self {
        Self { state, plan, addr, probe_id, session: None }
    }

    pub async fn run(mut self) {
        loop {
            let began = Instant::now();
            self.attempt().await;
            let ping = self.ping();
            let round = self.state.cadence.next_round(began, self.plan.polling.pace());
            if let Some(l) = idle(&mut self.session, round, ping, self.plan.polling.timeout).await {
                self.session = None;
                self.state.apply_probe_lost(ProbeKind::Read, l.since, l.reason, Instant::now());
            }
        }
    }

    /// Pinged only without the write probe, whose pings through the same HAProxy find a frozen
    /// HAProxy as soon: each ping costs.
    fn ping(&self) -> Option<Duration> {
        self.plan.ping.filter(|_| self.plan.primary.is_none())
    }

    /// The newest visible row's sequence number, `None` when none is visible yet.
    async fn read_once(&mut self) -> Result<Option<i64>, FailureReason> {
        let deadline = Deadline::after(self.plan.polling.timeout);
        if self.session.is_none() {
            self.session = Some(Session::connect(&self.plan.login, &self.plan.schema, &self.addr, &deadline).await?);
        }
        let session = self.session.as_mut().expect("connected above");
        session.newest_seq(&self.probe_id, &deadline).await
    }

    async fn attempt(&mut self) {
        let started = Instant::now();
        let result = self.read_once().await;
        let finished = Instant::now();
        if result.is_err() {
            self.session = None;
        }
        // Without the write probe nothing writes the rows it looks for; before its first
        // acknowledged commit (or an hour after its last) there is nothing to compare with.
        let staleness = match &result {
            Ok(visible) if self.plan.primary.is_some() => {
                let ledger = self.state.ledger();
                let unseen = ledger.unseen_since(*visible);
                (!ledger.acked.is_empty())
                    .then(|| unseen.map_or(0.0, |t| finished.saturating_duration_since(t).as_secs_f64()))
            }
            _ => None,
        };
        let attempt = Attempt { started, finished, result: result.map(|_| ()) };
        self.state.apply_probe(ProbeKind::Read, attempt, staleness);
    }
}
