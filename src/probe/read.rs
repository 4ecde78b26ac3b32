//! The read probe: the newest heartbeat row visible through HAProxy's replicas port. Its age is
//! the replication delay as an application reading from replicas sees it (it includes up to one
//! write-probe interval, since rows are written that often).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::session::{closed, Deadline, Session};
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
            tokio::select! {
                _ = self.state.cadence.next_round(began, self.plan.polling.pace()) => {}
                _ = closed(&mut self.session) => {
                    self.session = None;
                    self.state.apply_probe_close(ProbeKind::Read, Instant::now());
                }
            }
        }
    }

    /// The newest row's timestamp, `None` when the probe has written nothing visible yet.
    async fn read_once(&mut self) -> Result<Option<SystemTime>, FailureReason> {
        let deadline = Deadline::after(self.plan.polling.timeout);
        if self.session.is_none() {
            self.session = Some(Session::connect(&self.plan.login, &self.plan.schema, &self.addr, &deadline).await?);
        }
        let session = self.session.as_mut().expect("connected above");
        session.newest_heartbeat(&self.probe_id, &deadline).await
    }

    async fn attempt(&mut self) {
        let started = Instant::now();
        let result = self.read_once().await;
        let finished = Instant::now();
        if result.is_err() {
            self.session = None;
        }
        let staleness = result
            .as_ref()
            .ok()
            .copied()
            .flatten()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default().as_secs_f64());
        let attempt = Attempt { started, finished, result: result.map(|_| ()) };
        self.state.apply_probe(ProbeKind::Read, attempt, staleness);
    }
}
