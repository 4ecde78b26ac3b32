//! The write probe: a commit every interval through HAProxy's primary port, on a persistent
//! connection that reconnects by itself after any error (the lab report's script died on its
//! closed connection; this one must not).
//!
//! Each row is (probe id, sequence number, the exporter's clock). After every outage the probe
//! checks, on the (new) primary, that every sequence number whose commit was acknowledged is
//! still there: what is missing is a lost acknowledged write. A write whose commit was not
//! acknowledged (timed out, connection dropped) is never counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{connect, ensure_table, host_port, within, Connection, FailureReason, Transition};
use crate::collect::ticker;
use crate::config::ProbeConfig;
use crate::state::ClusterState;
use crate::timeline::EventKind;

/// Acknowledged writes remembered for the loss check: the newest this many...
const ACKED_KEPT: usize = 100_000;
/// ...and no older than this (rows older than it are pruned from the table too).
const ACKED_AGE: Duration = Duration::from_secs(3600);
/// How often the probe deletes its old rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows of any probe id (e.g. of exporters long gone) older than this are pruned.
const FOREIGN_ROWS_AGE_SECONDS: f64 = 86_400.0;

pub struct WriteProbe {
    state: Arc<ClusterState>,
    config: ProbeConfig,
    host: String,
    port: u16,
    probe_id: String,
    conn: Option<Connection>,
    seq: i64,
    /// Acknowledged sequence numbers with when, oldest first.
    acked: VecDeque<(i64, Instant)>,
    /// The loss check is owed for an outage that ended but could not be checked yet.
    check_owed: bool,
    last_prune: Instant,
}

impl WriteProbe {
    pub fn new(state: Arc<ClusterState>, config: ProbeConfig, addr: &str, probe_id: String) -> Option<Self> {
        let (host, port) = host_port(addr)?;
        state.write().probes.write = Some(Default::default());
        Some(Self {
            state,
            config,
            host,
            port,
            probe_id,
            conn: None,
            seq: 0,
            acked: VecDeque::new(),
            check_owed: false,
            last_prune: Instant::now(),
        })
    }

    pub async fn run(mut self) {
        let mut tick = ticker(self.config.interval);
        loop {
            tick.tick().await;
            self.attempt().await;
        }
    }

    fn table(&self) -> String {
        format!("{}.heartbeat", self.config.schema)
    }

    async fn write_once(&mut self, seq: i64) -> Result<(), FailureReason> {
        let deadline = self.config.timeout;
        let started = Instant::now();
        if self.conn.is_none() {
            let conn = connect(&self.config, &self.host, self.port, deadline).await?;
            if let Err(e) = ensure_table(
                &conn.client,
                &self.config,
                deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1)),
            )
            .await
            {
                // A missing privilege is worth an error; a setup that failed because the
                // server is going away is just this attempt's failure.
                match &e {
                    super::SetupError::NotAllowed { .. } => {
                        tracing::error!(scope = %self.state.scope, error = %e, "write probe setup")
                    }
                    super::SetupError::Failed(_) => {
                        tracing::debug!(scope = %self.state.scope, error = %e, "write probe setup")
                    }
                }
                return Err(FailureReason::Other);
            }
            self.conn = Some(conn);
        }
        let client = &self.conn.as_ref().expect("connected above").client;
        let sql = format!("INSERT INTO {} (probe_id, seq, written_at) VALUES ($1, $2, $3)", self.table());
        let now = SystemTime::now();
        let remaining = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        within(remaining, client.execute(&sql, &[&self.probe_id, &seq, &now])).await.map(|_| ())
    }

    async fn attempt(&mut self) {
        self.seq += 1;
        let seq = self.seq;
        let started = Instant::now();
        let result = self.write_once(seq).await;
        let finished = Instant::now();
        if let Err(reason) = result {
            tracing::debug!(scope = %self.state.scope, seq, reason = reason.as_str(), took_ms = (finished - started).as_millis() as u64, "write probe failed");
        }
        if result.is_err() {
            // Whatever went wrong, the next attempt starts from a fresh connection: a read-only
            // or closing server, a hung one, or HAProxy that routed us nowhere.
            self.conn = None;
        } else {
            self.acked.push_back((seq, finished));
            while self.acked.len() > ACKED_KEPT
                || self.acked.front().is_some_and(|(_, t)| finished.duration_since(*t) > ACKED_AGE)
            {
                self.acked.pop_front();
            }
        }
        let transition = {
            let mut data = self.state.write();
            let t = data.probes.write.get_or_insert_with(Default::default).record(started, finished, result);
            if result.is_ok() && t == Transition::None {
                data.timeline.write_ok(finished);
            }
            t
        };
        match transition {
            Transition::OutageStarted { last_success, reason } => {
                self.state.write().timeline.write_outage_started(last_success);
                self.state.event(
                    EventKind::WriteOutageStarted,
                    None,
                    format!("through HAProxy: {}", reason.as_str()),
                    last_success,
                );
            }
            Transition::OutageEnded(outage) => {
                self.check_owed = true;
                let lost = self.check_losses(outage.last_success).await;
                {
                    let mut data = self.state.write();
                    if let Some(n) = lost {
                        data.probes.lost_writes_total += n;
                        data.probes.last_outage_lost_writes = Some(n);
                    }
                    data.timeline.write_outage_ended(&self.state.scope, outage.recovered, lost);
                }
                self.state.event(
                    EventKind::WriteOutageEnded,
                    None,
                    format!(
                        "write downtime {:.3}s, lost acknowledged writes: {}",
                        outage.duration().as_secs_f64(),
                        lost.map(|n| n.to_string()).unwrap_or_else(|| "not checked".into())
                    ),
                    outage.recovered,
                );
            }
            Transition::None if result.is_ok() && self.check_owed => {
                // The check failed right after the outage: try again on a later success.
                if let Some(lost) = self.check_losses(finished).await {
                    let mut data = self.state.write();
                    data.probes.lost_writes_total += lost;
                    data.probes.last_outage_lost_writes = Some(lost);
                }
            }
            Transition::None => {}
        }
        if result.is_ok() && self.last_prune.elapsed() >= PRUNE_EVERY {
            self.prune().await;
        }
    }

    /// Counts the acknowledged writes made before `before` that the primary no longer has, and
    /// forgets them (so a later check does not count them again).
    async fn check_losses(&mut self, before: Instant) -> Option<u64> {
        let Some(conn) = &self.conn else { return None };
        let expected: Vec<i64> = self.acked.iter().filter(|(_, t)| *t <= before).map(|(s, _)| *s).collect();
        if expected.is_empty() {
            self.check_owed = false;
            return Some(0);
        }
        let sql = format!("SELECT seq FROM {} WHERE probe_id = $1 AND seq = ANY($2)", self.table());
        let deadline = self.config.timeout.max(Duration::from_secs(2));
        match within(deadline, conn.client.query(&sql, &[&self.probe_id, &expected])).await {
            Ok(rows) => {
                let present: std::collections::HashSet<i64> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
                let lost: Vec<i64> = expected.iter().copied().filter(|s| !present.contains(s)).collect();
                if !lost.is_empty() {
                    self.acked.retain(|(s, _)| !lost.contains(s));
                    let shown: Vec<String> = lost.iter().take(50).map(|s| s.to_string()).collect();
                    self.state.event(
                        EventKind::LostWrites,
                        None,
                        format!("{} acknowledged writes missing on the primary: seq {}", lost.len(), shown.join(",")),
                        Instant::now(),
                    );
                }
                self.check_owed = false;
                Some(lost.len() as u64)
            }
            Err(reason) => {
                tracing::warn!(scope = %self.state.scope, reason = reason.as_str(), "loss check failed; will retry");
                None
            }
        }
    }

    /// Deletes this probe's rows older than what the loss check still needs, and anyone's rows
    /// older than a day (exporters that are gone). Nothing outside the probe's table is touched.
    async fn prune(&mut self) {
        self.last_prune = Instant::now();
        let Some(conn) = &self.conn else { return };
        let keep_from = self.acked.front().map(|(s, _)| *s).unwrap_or(self.seq);
        let sql = format!(
            "DELETE FROM {} WHERE (probe_id = $1 AND seq < $2) OR written_at < now() - make_interval(secs => $3)",
            self.table()
        );
        if let Err(reason) = within(
            self.config.timeout,
            conn.client.execute(&sql, &[&self.probe_id, &keep_from, &FOREIGN_ROWS_AGE_SECONDS]),
        )
        .await
        {
            tracing::warn!(scope = %self.state.scope, reason = reason.as_str(), "pruning probe rows failed");
        }
    }
}
