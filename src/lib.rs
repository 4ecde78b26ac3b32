//! pgha-exporter: a Prometheus exporter for PostgreSQL HA clusters built from Patroni, etcd and
//! HAProxy. See README.md for what it exposes and why.

pub mod assess;
pub mod collect;
pub mod config;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod state;
pub mod timeline;

use std::sync::Arc;

use collect::dcs_watch::DcsWatch;
use collect::etcd::EtcdPoller;
use collect::haproxy::HaproxyPoller;
use collect::patroni::PatroniPoller;
use collect::HttpAuth;
use config::{BasicAuth, Config, ConfigError};
use state::{ClusterState, Source};
use timeline::{EventKind, Sees};

/// How often conditions are re-assessed (verdict change events) and pending failovers closed.
const ASSESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

fn auth(field: &str, basic: &Option<BasicAuth>) -> Result<Option<HttpAuth>, ConfigError> {
    basic
        .as_ref()
        .map(|b| Ok(HttpAuth { username: b.username.clone(), password: b.password.resolve(field)? }))
        .transpose()
}

/// Starts the collection loops of every configured cluster on the current tokio runtime and
/// returns the states they fill. Each cluster's loops are independent tasks: one cluster's
/// failing targets cannot slow another's.
pub fn start(config: &Config) -> Result<Vec<Arc<ClusterState>>, ConfigError> {
    let client = collect::http_client();
    let mut clusters = Vec::new();
    for (i, c) in config.clusters.iter().enumerate() {
        let mut sources = vec![Source::Patroni];
        if c.etcd.is_some() {
            sources.push(Source::Etcd);
        }
        if !c.haproxy.is_empty() {
            sources.push(Source::Haproxy);
        }
        let state = Arc::new(ClusterState::new(c.scope.clone(), sources, c.member_retention));
        for m in &c.patroni.members {
            state.add_static_member(&m.name, &m.api_url, m.postgres.clone());
        }
        let patroni = PatroniPoller {
            state: state.clone(),
            client: client.clone(),
            interval: c.patroni.interval,
            timeout: c.patroni.timeout,
            max_body_bytes: config.max_body_bytes,
            auth: auth(&format!("clusters[{i}].patroni.basic_auth.password"), &c.patroni.basic_auth)?,
            discover_from_cluster: c.etcd.is_none(),
            discovery_urls: c.patroni.discovery_urls.clone(),
        };
        if let Some(e) = &c.etcd {
            let credentials = match (&e.username, &e.password) {
                (Some(u), Some(p)) => Some((u.clone(), p.resolve(&format!("clusters[{i}].etcd.password"))?)),
                _ => None,
            };
            let watch = DcsWatch::new(state.clone(), e.endpoints.clone(), e.timeout, credentials.clone(), &c.namespace);
            tokio::spawn(watch.run());
            let poller =
                EtcdPoller::new(state.clone(), e.endpoints.clone(), e.interval, e.timeout, credentials, &c.namespace);
            tokio::spawn(poller.run());
        }
        let mut sees = Sees { haproxy: !c.haproxy.is_empty(), ..Sees::default() };
        if let Some(p) = &c.probes {
            let id = probe::new_probe_id();
            tracing::info!(scope = %c.scope, probe_id = %id, "probes start");
            state.write().probes.probe_id = Some(id.clone());
            if let Some(w) = p
                .primary
                .as_deref()
                .and_then(|a| probe::write::WriteProbe::new(state.clone(), p.clone(), a, id.clone()))
            {
                sees.write_probe = true;
                tokio::spawn(w.run());
            }
            if let Some(r) =
                p.replicas.as_deref().and_then(|a| probe::read::ReadProbe::new(state.clone(), p.clone(), a, id.clone()))
            {
                tokio::spawn(r.run());
            }
            if p.direct {
                sees.direct_probe = true;
                tokio::spawn(probe::direct::DirectProbes::new(state.clone(), p.clone(), id).run());
            }
        }
        state.write().timeline.sees = sees;
        tokio::spawn(assess_loop(state.clone()));
        tokio::spawn(patroni.run());
        for (j, h) in c.haproxy.iter().enumerate() {
            let poller = HaproxyPoller {
                state: state.clone(),
                client: client.clone(),
                name: h.name.clone(),
                stats_url: h.stats_url.clone(),
                primary_backend: h.primary_backend.clone(),
                replicas_backend: h.replicas_backend.clone(),
                interval: h.interval,
                timeout: h.timeout,
                max_body_bytes: config.max_body_bytes,
                auth: auth(&format!("clusters[{i}].haproxy[{j}].basic_auth.password"), &h.basic_auth)?,
                last_good: None,
            };
            tokio::spawn(poller.run());
        }
        clusters.push(state);
    }
    Ok(clusters)
}

/// Re-assesses the verdict (an event when it changes) and closes failovers that timed out.
async fn assess_loop(state: Arc<ClusterState>) {
    let mut tick = collect::ticker(ASSESS_EVERY);
    let mut last: Option<&'static str> = None;
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        let verdict = {
            let mut data = state.write();
            data.timeline.tick(&state.scope, now);
            assess::verdict(&assess::assess(&data))
        };
        if last != Some(verdict) {
            if let Some(before) = last {
                state.event(EventKind::VerdictChanged, None, format!("{before} -> {verdict}"), now);
            }
            last = Some(verdict);
        }
    }
}

/// Checks, before serving, that each cluster's probe role may create (or use) its table. A
/// cluster that cannot be reached now is not an error (the probe retries); a role that lacks the
/// privilege is, with the SQL to run.
pub async fn preflight(config: &Config) -> Result<(), probe::SetupError> {
    for c in &config.clusters {
        let Some(p) = &c.probes else { continue };
        let Some((host, port)) = p.primary.as_deref().and_then(probe::host_port) else { continue };
        match probe::connect(p, &host, port, p.timeout).await {
            Ok(conn) => match probe::ensure_table(&conn.client, p, p.timeout.max(std::time::Duration::from_secs(2)))
                .await
            {
                Err(e @ probe::SetupError::NotAllowed { .. }) => return Err(e),
                Err(e) => tracing::warn!(scope = %c.scope, error = %e, "probe setup not done yet; the probe retries"),
                Ok(()) => {}
            },
            Err(reason) => {
                tracing::warn!(scope = %c.scope, reason = reason.as_str(), "cannot reach the primary port yet; the probe retries")
            }
        }
    }
    Ok(())
}
