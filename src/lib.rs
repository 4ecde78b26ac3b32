//! pgha-exporter: a Prometheus exporter for PostgreSQL HA clusters built from Patroni, etcd and
//! HAProxy. See README.md for what it exposes and why, and its Architecture section for how
//! the modules below fit together:
//!
//! `config` (the plan) -> `collect` and `probe` (readings) -> `state` (applied whole) ->
//! `assess` and `timeline` (verdict, failovers) -> `metrics` and `http` (exposition).
//! `model` holds the pure types all of them share; `tasks` the loops' plumbing.

pub mod assess;
pub mod collect;
pub mod config;
pub mod fleet;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod probe;
pub mod state;
pub mod tasks;
pub mod timeline;
pub mod web;

#[cfg(test)]
mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collect::http::HttpCaller;
use config::{BasicCredentials, Polling, TlsPlan, ValidatedConfig};
use model::probe::FailureReason;
use probe::session::{Deadline, Session, SetupError, SLOW_STATEMENT};
use state::ClusterState;

/// How often conditions are re-assessed (verdict change events) and pending failovers closed:
/// five times a second in a burst, once a second when calm.
const ASSESS_PACE: tasks::Pace = tasks::Pace { fine: Duration::from_millis(200), calm: Duration::from_secs(1) };

/// How often the targets that stay down are summed up in one log line.
const DOWN_SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Targets named in the summary line, at most.
const DOWN_SUMMARY_NAMED: usize = 10;

/// A target's state changes are logged once each; those that stay down are summed up here,
/// in one line a minute for every cluster together.
pub(crate) async fn down_summary(fleet: std::sync::Weak<fleet::Fleet>) {
    let mut tick = tasks::ticker(DOWN_SUMMARY_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(fleet) = fleet.upgrade() else { return };
        let mut down = Vec::new();
        for c in &fleet.clusters() {
            let data = c.read();
            for source in c.plan.sources() {
                for (target, h) in data.targets(source) {
                    if let Some(kind) = h.failing {
                        down.push(format!("{}/{source}/{target} ({kind})", c.scope()));
                    }
                }
            }
        }
        if !down.is_empty() {
            let named = down.iter().take(DOWN_SUMMARY_NAMED).cloned().collect::<Vec<_>>().join(", ");
            tracing::warn!(count = down.len(), first = %named, "targets still down");
        }
    }
}

/// Starts the tasks filling `state`, on the current tokio runtime; they stop when the returned
/// handles are dropped. Each cluster's tasks are its own: one cluster's failing targets cannot
/// slow another's.
pub(crate) fn run_cluster(
    state: &Arc<ClusterState>,
    client: &reqwest::Client,
    max_body_bytes: usize,
) -> Vec<tasks::AbortOnDrop> {
    let mut running = Vec::new();
    let running = &mut running;
    let probe_id = state.read().probes.probe_id.clone();
    let plan = state.plan.clone();
    let caller = |polling: Polling, auth: &Option<BasicCredentials>, tls: &Option<TlsPlan>| HttpCaller {
        client: tls.as_ref().map_or_else(|| client.clone(), |t| collect::http::http_client(Some(t))),
        timeout: polling.timeout,
        max_body_bytes,
        auth: auth.clone(),
    };
    let patroni = caller(plan.patroni.polling, &plan.patroni.auth, &plan.patroni.tls);
    let every = plan.patroni.polling.pace();
    let s = state.clone();
    state.register_task("patroni_member");
    spawn_supervised(running, state, "patroni_members", {
        let (s, patroni) = (s.clone(), patroni.clone());
        move || collect::patroni::supervise_members(s.clone(), patroni.clone(), every)
    });
    spawn_supervised(running, state, "patroni_view", {
        let s = s.clone();
        move || collect::patroni::watch_cluster_view(s.clone(), patroni.clone(), every)
    });
    if let Some(etcd) = plan.etcd {
        let (s1, e) = (s.clone(), etcd.clone());
        spawn_supervised(running, state, "etcd", move || collect::etcd::EtcdPoller::new(s1.clone(), e.clone()).run());
        let s2 = s.clone();
        spawn_supervised(running, state, "dcs_watch", move || {
            collect::dcs_watch::DcsWatch::new(s2.clone(), etcd.clone()).run()
        });
    }
    for h in plan.haproxy {
        let (s, http) = (s.clone(), caller(h.polling, &h.auth, &h.tls));
        spawn_supervised(running, state, "haproxy", move || collect::haproxy::poll(s.clone(), http.clone(), h.clone()));
    }
    if let Some(vip) = plan.vip {
        let s = s.clone();
        spawn_supervised(running, state, "vip", move || collect::vip::poll(s.clone(), vip.clone()));
    }
    if let (Some(p), Some(id)) = (plan.probes, probe_id) {
        tracing::info!(scope = %plan.scope, probe_id = %id, "probes start");
        if let Some(addr) = p.primary.clone() {
            let (s, p, id) = (s.clone(), p.clone(), id.clone());
            spawn_supervised(running, state, "write_probe", move || {
                probe::write::WriteProbe::new(s.clone(), p.clone(), addr.clone(), id.clone()).run()
            });
        }
        if let Some(addr) = p.replicas.clone() {
            let (s, p, id) = (s.clone(), p.clone(), id.clone());
            spawn_supervised(running, state, "read_probe", move || {
                probe::read::ReadProbe::new(s.clone(), p.clone(), addr.clone(), id.clone()).run()
            });
        }
        if p.direct {
            state.register_task("direct_probe");
            let s = s.clone();
            spawn_supervised(running, state, "direct_probes", move || {
                probe::direct::supervise(s.clone(), p.clone(), id.clone())
            });
        }
    }
    spawn_supervised(running, state, "assess", move || assess_loop(s.clone()));
    std::mem::take(running)
}

/// Spawns a collection task under [`tasks::supervise`]: a restart is counted as `task` in
/// `pgha_task_restarts_total`.
fn spawn_supervised<F, Fut>(
    running: &mut Vec<tasks::AbortOnDrop>,
    state: &Arc<ClusterState>,
    task: &'static str,
    start: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    state.register_task(task);
    let counted = state.clone();
    let what = format!("{}: {task}", state.scope());
    running.push(tasks::AbortOnDrop(tokio::spawn(tasks::supervise(
        what,
        move || counted.note_restarts(task, 1),
        start,
    ))));
}

/// Re-assesses the verdict (an event when it changes) and closes failovers that timed out.
async fn assess_loop(state: Arc<ClusterState>) {
    loop {
        let began = Instant::now();
        // Before every target had its first call, a verdict (and its changes) would be a guess.
        if state.ready() {
            let verdict = assess::verdict(&state.read(), state.plan.direct_probes());
            state.apply_verdict(verdict, Instant::now());
        }
        state.cadence.next_round(began, ASSESS_PACE).await;
    }
}

/// Checks, before serving, that each cluster's probe role may create (or use) its table. A
/// cluster that cannot be reached now is not an error (the probe retries); a role that lacks the
/// privilege is, with the SQL to run.
pub async fn preflight(config: &ValidatedConfig) -> Result<(), SetupError> {
    for c in &config.clusters {
        let Some(p) = &c.probes else { continue };
        let Some(addr) = &p.primary else { continue };
        match Session::connect(&p.login, &p.schema, addr, &Deadline::after(p.polling.timeout)).await {
            Ok(mut session) => match session
                .ensure_table(p, &Deadline::after(p.polling.timeout.max(SLOW_STATEMENT)))
                .await
            {
                Err(e @ SetupError::NotAllowed { .. }) => return Err(e),
                Err(e) => tracing::warn!(scope = %c.scope, error = %e, "probe setup not done yet; the probe retries"),
                Ok(()) => {}
            },
            Err(FailureReason::Auth) => tracing::warn!(scope = %c.scope, user = %p.login.user,
                "the probe role cannot log in through the primary port (password, pg_hba.conf); the probe retries"),
            Err(FailureReason::Tls) => tracing::warn!(scope = %c.scope, sslmode = ?p.login.tls.sslmode,
                "TLS with the primary port failed (certificate, CA, server_name, or TLS off on the server); the probe retries"),
            Err(reason) => tracing::warn!(scope = %c.scope, reason = reason.as_str(),
                "cannot reach the primary port yet; the probe retries"),
        }
    }
    Ok(())
}
