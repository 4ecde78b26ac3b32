//! The read probe: the newest heartbeat row visible through HAProxy's replicas port. Its age is
//! the replication delay as an application reading from replicas sees it (it includes up to one
//! write-probe interval, since rows are written that often).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{connect, host_port, within, Connection, FailureReason, Transition};
use crate::collect::ticker;
use crate::config::ProbeConfig;
use crate::state::ClusterState;
use crate::timeline::EventKind;

pub struct ReadProbe {
    state: Arc<ClusterState>,
    config: ProbeConfig,
    host: String,
    port: u16,
    probe_id: String,
    conn: Option<Connection>,
}

impl ReadProbe {
    pub fn new(state: Arc<ClusterState>, config: ProbeConfig, addr: &str, probe_id: String) -> Option<Self> {
        let (host, port) = host_port(addr)?;
        state.write().probes.read = Some(Default::default());
        Some(Self { state, config, host, port, probe_id, conn: None })
    }

    pub async fn run(mut self) {
        let mut tick = ticker(self.config.interval);
        loop {
            tick.tick().await;
            self.attempt().await;
        }
    }

    /// The newest row's timestamp, `None` when the probe has written nothing visible yet.
    async fn read_once(&mut self) -> Result<Option<SystemTime>, FailureReason> {
        let deadline = self.config.timeout;
        let started = Instant::now();
        if self.conn.is_none() {
            self.conn = Some(connect(&self.config, &self.host, self.port, deadline).await?);
        }
        let client = &self.conn.as_ref().expect("connected above").client;
        let sql = format!(
            "SELECT written_at FROM {}.heartbeat WHERE probe_id = $1 ORDER BY seq DESC LIMIT 1",
            self.config.schema
        );
        let remaining = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let rows = within(remaining, client.query(&sql, &[&self.probe_id])).await?;
        // A table made by hand with other column types is a failure, not a panic.
        rows.first().map(|r| r.try_get::<_, SystemTime>(0).map_err(|_| FailureReason::Other)).transpose()
    }

    async fn attempt(&mut self) {
        let started = Instant::now();
        let result = self.read_once().await;
        let finished = Instant::now();
        if result.is_err() {
            self.conn = None;
        }
        let transition = {
            let mut data = self.state.write();
            if let Ok(newest) = &result {
                data.probes.read_staleness_seconds =
                    newest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default().as_secs_f64());
            }
            data.probes.read.get_or_insert_with(Default::default).record(started, finished, result.map(|_| ()))
        };
        match transition {
            Transition::OutageStarted { last_success, reason } => self.state.event(
                EventKind::ReadOutageStarted,
                None,
                format!("through HAProxy: {}", reason.as_str()),
                last_success,
            ),
            Transition::OutageEnded(o) => self.state.event(
                EventKind::ReadOutageEnded,
                None,
                format!("read downtime {:.3}s", o.duration().as_secs_f64()),
                o.recovered,
            ),
            Transition::None => {}
        }
    }
}
