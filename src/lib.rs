//! pgha-exporter: a Prometheus exporter for PostgreSQL HA clusters built from Patroni, etcd and
//! HAProxy. See README.md for what it exposes and why.

pub mod collect;
pub mod config;
pub mod http;
pub mod metrics;
pub mod process;
pub mod state;

use std::sync::Arc;

use collect::etcd::EtcdPoller;
use collect::haproxy::HaproxyPoller;
use collect::patroni::PatroniPoller;
use collect::HttpAuth;
use config::{BasicAuth, Config, ConfigError};
use state::{ClusterState, Source};

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
            let poller = EtcdPoller::new(state.clone(), e.endpoints.clone(), e.interval, e.timeout, credentials, &c.namespace);
            tokio::spawn(poller.run());
        }
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
            };
            tokio::spawn(poller.run());
        }
        clusters.push(state);
    }
    Ok(clusters)
}
