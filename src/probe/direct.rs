//! Direct probes of every member's own PostgreSQL (address from discovery): reachable, in
//! recovery or not, and, on a member that is not in recovery, a write to the probe table. They
//! tell "HAProxy is down but the primary takes writes" apart from "the database is down", and
//! time the moment a new primary became writable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{connect, ensure_table, host_port, within, Connection, FailureReason};
use crate::collect::ticker;
use crate::config::ProbeConfig;
use crate::state::ClusterState;
use crate::timeline::EventKind;

pub struct DirectProbes {
    state: Arc<ClusterState>,
    config: ProbeConfig,
    probe_id: String,
    conns: BTreeMap<String, Option<Connection>>,
    seq: i64,
}

struct Outcome {
    up: bool,
    in_recovery: Option<bool>,
    writable: bool,
    failure: Option<FailureReason>,
}

impl DirectProbes {
    pub fn new(state: Arc<ClusterState>, config: ProbeConfig, probe_id: String) -> Self {
        state.write().probes.direct_enabled = true;
        Self { state, config, probe_id, conns: BTreeMap::new(), seq: 0 }
    }

    pub async fn run(mut self) {
        let mut tick = ticker(self.config.interval);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    async fn round(&mut self) {
        let members: Vec<(String, String)> =
            self.state.read().members.iter().filter_map(|(n, m)| Some((n.clone(), m.postgres.clone()?))).collect();
        self.conns.retain(|n, _| members.iter().any(|(m, _)| m == n));
        self.seq += 1;
        let seq = self.seq;
        let config = &self.config;
        let probe_id = &self.probe_id;
        let mut conns: Vec<(String, String, Option<Connection>)> = members
            .into_iter()
            .map(|(n, a)| {
                let c = self.conns.remove(&n).flatten();
                (n, a, c)
            })
            .collect();
        let calls = conns.iter_mut().map(|(name, addr, conn)| async move {
            let id = format!("{probe_id}/direct/{name}");
            let outcome = probe_member(config, addr, conn, &id, seq).await;
            (name.clone(), outcome)
        });
        let outcomes = futures::future::join_all(calls).await;
        for (name, _, conn) in conns {
            self.conns.insert(name, conn);
        }
        let now = Instant::now();
        let mut events = Vec::new();
        {
            let mut data = self.state.write();
            let known: Vec<String> = data.members.keys().cloned().collect();
            data.probes.direct.retain(|n, _| known.contains(n));
            for (name, o) in outcomes {
                let entry = data.probes.direct.entry(name.clone()).or_default();
                let (was_up, was_writable) = (entry.up, entry.writable);
                let seen_before = entry.attempts > 0;
                entry.attempts += 1;
                if let Some(f) = o.failure {
                    entry.failures[f.index()] += 1;
                }
                entry.up = o.up;
                entry.in_recovery = o.in_recovery;
                entry.writable = o.writable;
                if seen_before && was_up && !o.up {
                    events.push((
                        EventKind::PostgresUnreachable,
                        name.clone(),
                        o.failure.map(|f| f.as_str()).unwrap_or("").to_string(),
                    ));
                }
                if o.writable && !was_writable {
                    events.push((EventKind::PostgresWritable, name.clone(), "a direct write succeeded".to_string()));
                }
            }
        }
        for (kind, member, detail) in events {
            self.state.event(kind, Some(&member), detail, now);
        }
    }
}

async fn probe_member(
    config: &ProbeConfig,
    addr: &str,
    conn: &mut Option<Connection>,
    probe_id: &str,
    seq: i64,
) -> Outcome {
    let failed = |f: FailureReason, up: bool, in_recovery: Option<bool>| Outcome {
        up,
        in_recovery,
        writable: false,
        failure: Some(f),
    };
    let Some((host, port)) = host_port(addr) else { return failed(FailureReason::Other, false, None) };
    let deadline = config.timeout;
    let started = Instant::now();
    let remaining = || deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    if conn.is_none() {
        match connect(config, &host, port, deadline).await {
            Ok(c) => *conn = Some(c),
            Err(f) => return failed(f, false, None),
        }
    }
    let client = &conn.as_ref().expect("connected above").client;
    let in_recovery: bool = match within(remaining(), client.query_one("SELECT pg_is_in_recovery()", &[])).await {
        Ok(row) => match row.try_get(0) {
            Ok(r) => r,
            Err(_) => return failed(FailureReason::Other, true, None),
        },
        Err(f) => {
            *conn = None;
            return failed(f, false, None);
        }
    };
    if in_recovery {
        return Outcome { up: true, in_recovery: Some(true), writable: false, failure: None };
    }
    if !conn.as_ref().is_some_and(|c| c.table_ready) {
        if let Err(e) = ensure_table(client, config, remaining()).await {
            tracing::warn!(error = %e, "direct probe setup");
            return failed(FailureReason::Other, true, Some(false));
        }
    }
    let client = match conn.as_mut() {
        Some(c) => {
            c.table_ready = true;
            &c.client
        }
        None => return failed(FailureReason::Other, false, None),
    };
    let sql = format!("INSERT INTO {}.heartbeat (probe_id, seq, written_at) VALUES ($1, $2, $3)", config.schema);
    let keep_from = seq - 1000;
    let prune = format!("DELETE FROM {}.heartbeat WHERE probe_id = $1 AND seq < $2", config.schema);
    match within(remaining(), client.execute(&sql, &[&probe_id, &seq, &SystemTime::now()])).await {
        Ok(_) => {
            // Keep this member's direct rows bounded, now and then.
            if seq % 600 == 0 {
                let _ = within(remaining(), client.execute(&prune, &[&probe_id, &keep_from])).await;
            }
            Outcome { up: true, in_recovery: Some(false), writable: true, failure: None }
        }
        Err(f) => {
            *conn = None;
            failed(f, f != FailureReason::Timeout, Some(false))
        }
    }
}
