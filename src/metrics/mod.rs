//! From the clusters' latest readings to metric families, at scrape time.
//!
//! `/metrics` only reads what the collection loops left in memory: building the families is a
//! pure function of the readings (testable without a registry), and encoding is
//! prometheus-client's. Families gather the series of every cluster, because OpenMetrics wants
//! each family once. No sample carries a timestamp.
//!
//! `sources` holds the families of what the sources said (Patroni, etcd, HAProxy, and each
//! target's health), `outcomes` those the exporter measured or derived (probes, failovers,
//! conditions), `process` the exporter's own `process_*`.

mod outcomes;
pub mod process;
mod sources;
pub mod text;

#[cfg(test)]
mod golden;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::fleet::Fleet;
use crate::model::hist::Hist;
use crate::state::ClusterState;

pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
    Gauge(f64),
    Counter(u64),
    /// A counter of fractional units (CPU seconds).
    FloatCounter(f64),
    Info,
}

#[derive(Debug, Clone)]
pub struct Family {
    /// Full name as exposed, without `_total` (counters) or `_info` (infos): the encoder adds it.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub series: Vec<(Labels, Value)>,
}

/// Collects series into families, keeping the order families were first used in.
#[derive(Default)]
pub struct Families {
    order: Vec<&'static str>,
    by_name: BTreeMap<&'static str, Family>,
}

impl Families {
    fn push(&mut self, name: &'static str, help: &'static str, kind: MetricType, labels: Labels, value: Value) {
        let family = self.by_name.entry(name).or_insert_with(|| {
            self.order.push(name);
            Family { name, help, kind, series: Vec::new() }
        });
        family.series.push((labels, value));
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.push(name, help, MetricType::Gauge, labels, Value::Gauge(v));
    }

    pub fn flag(&mut self, name: &'static str, help: &'static str, labels: Labels, v: bool) {
        self.gauge(name, help, labels, if v { 1.0 } else { 0.0 });
    }

    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: u64) {
        self.push(name, help, MetricType::Counter, labels, Value::Counter(v));
    }

    pub fn float_counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.push(name, help, MetricType::Counter, labels, Value::FloatCounter(v));
    }

    pub fn histogram(&mut self, name: &'static str, help: &'static str, labels: Labels, h: &Hist) {
        let v = Value::Histogram { sum: h.sum, count: h.count, buckets: h.buckets() };
        self.push(name, help, MetricType::Histogram, labels, v);
    }

    pub fn info(&mut self, name: &'static str, help: &'static str, labels: Labels) {
        self.push(name, help, MetricType::Info, labels, Value::Info);
    }

    pub fn into_vec(mut self) -> Vec<Family> {
        self.order.iter().filter_map(|n| self.by_name.remove(n)).collect()
    }
}

/// Labels from (name, value) pairs.
pub fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Every family of every cluster, plus the exporter's own.
pub fn build(clusters: &[Arc<ClusterState>], now: Instant) -> Vec<Family> {
    let mut f = Families::default();
    let build = l(&[("version", env!("CARGO_PKG_VERSION")), ("revision", env!("PGHA_REVISION"))]);
    f.info("pgha_build", "Build of the exporter.", build);
    for cluster in clusters {
        let data = cluster.read();
        let scope = cluster.scope();
        let sources: Vec<_> = cluster.plan.sources().into_iter().map(|s| (s, cluster.staleness_bound(s))).collect();
        sources::families(&mut f, scope, &sources, &data, now);
        outcomes::families(&mut f, scope, &data, cluster.plan.direct_probes(), now);
        for (task, n) in cluster.task_restarts() {
            let labels = l(&[("scope", scope), ("task", task)]);
            f.counter(
                "pgha_task_restarts",
                "Collection tasks that stopped (panicked) and were started again.",
                labels,
                n,
            );
        }
        let labels = l(&[("scope", scope)]);
        f.flag(
            "pgha_collection_burst",
            "1 while every source is read at its interval (a sign of change was seen less than calm_after ago), 0 while calm (calm_interval).",
            labels.clone(),
            cluster.cadence.bursting(now),
        );
        f.counter(
            "pgha_collection_alarms",
            "Signs of change (events, targets failing or back, closed sessions) that started or extended a burst.",
            labels,
            cluster.cadence.alarms_raised(),
        );
    }
    process::families(&mut f);
    f.into_vec()
}
/// Every family of the fleet's clusters, the exporter's own, and how the last reload went.
pub fn exposed(fleet: &Fleet, now: Instant) -> Vec<Family> {
    let mut families = build(&fleet.clusters(), now);
    let status = fleet.reload_status();
    let mut f = Families::default();
    f.flag(
        "pgha_config_last_reload_successful",
        "1 if the last reading of the configuration file (at start or reload) was valid and applied.",
        l(&[]),
        status.successful,
    );
    let at = status.last_success.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    f.gauge(
        "pgha_config_last_reload_success_timestamp_seconds",
        "When the configuration was last read and applied successfully.",
        l(&[]),
        at,
    );
    families.extend(f.into_vec());
    families
}

pub struct Exposition {
    pub fleet: Arc<Fleet>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exposition")
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in exposed(&self.fleet, Instant::now()) {
            if family.series.is_empty() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.series {
                match value {
                    Value::Gauge(v) => ConstGauge::new(*v).encode(metric.encode_family(labels)?)?,
                    Value::Counter(v) => ConstCounter::new(*v).encode(metric.encode_family(labels)?)?,
                    Value::FloatCounter(v) => ConstCounter::new(*v).encode(metric.encode_family(labels)?)?,
                    Value::Info => metric.encode_info(labels)?,
                    Value::Histogram { sum, count, buckets } => {
                        metric.encode_family(labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn registry(fleet: Arc<Fleet>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition { fleet }));
    registry
}

pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::patroni::parse_cluster;
    use crate::testing::{fixture, lab_state};

    fn text(state: Arc<ClusterState>) -> String {
        encode(&registry(crate::fleet::Fleet::fixed(vec![state]))).unwrap()
    }

    #[test]
    fn strings_from_targets_are_bounded_in_the_exposition() {
        let state = lab_state("healthy", "");
        let version = "9".repeat(3 << 20);
        let body = format!(r#"{{"state":"running","role":"master","timeline":1,"patroni":{{"version":"{version}"}}}}"#);
        let status = crate::collect::patroni::parse_status(body.as_bytes()).unwrap();
        state.apply_member("node1", "http://127.0.0.21:18008", crate::testing::answered(status));
        let name = "s".repeat(512 << 10);
        let csv =
            format!("# pxname,svname,status,type,check_status,\nprimary,{name},UP,2,L7OK,\nprimary,BACKEND,UP,1,,\n");
        let stats = crate::collect::haproxy::parse_stats_csv(&csv).unwrap();
        state.apply_haproxy("haproxy", crate::testing::answered(stats));
        let t = text(Arc::new(state));
        assert!(t.len() < 128 << 10, "a 3 MB version and a 512 KiB server name gave {} bytes", t.len());
        assert!(t.contains(&format!("version=\"{}…\"", "9".repeat(crate::model::text::MAX_TARGET_TEXT - 3))));
    }

    #[test]
    fn replica_stopped_exposition() {
        let t = text(Arc::new(lab_state("replica-stopped", "")));
        assert!(t.contains("pgha_cluster_leader_info{scope=\"demo\",member=\"node1\"} 1"), "{t}");
        assert!(t.contains("pgha_patroni_member_up{scope=\"demo\",member=\"node3\"} 0"));
        assert!(t.contains("pgha_cluster_members_running{scope=\"demo\"} 2"));
        assert!(t.contains("pgha_cluster_primaries{scope=\"demo\"} 1"));
        assert!(t.contains(
            "pgha_source_errors_total{scope=\"demo\",source=\"patroni\",target=\"node3\",kind=\"connect\"} 1"
        ));
        assert!(
            t.contains(
                "pgha_source_errors_total{scope=\"demo\",source=\"patroni\",target=\"node1\",kind=\"timeout\"} 0"
            ),
            "zero-initialised"
        );
        assert!(t.contains(
            "pgha_haproxy_server_status{scope=\"demo\",haproxy=\"haproxy\",backend=\"replicas\",server=\"node3\",member=\"node3\",route=\"replicas\",status=\"up\"} 0"
        ));
        assert!(t.contains(
            "pgha_haproxy_server_status{scope=\"demo\",haproxy=\"haproxy\",backend=\"primary\",server=\"node1\",member=\"node1\",route=\"primary\",status=\"up\"} 1"
        ));
        assert!(t.contains("# TYPE pgha_build info"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn quorum_loss_exposition_has_no_leader_and_a_stale_dcs_leader_is_kept_apart() {
        let state = lab_state("etcd-quorum-lost", "");
        let view = fixture("etcd-quorum-lost", "cluster-from-node1.json").unwrap();
        state.apply_view(parse_cluster(&view).unwrap(), Instant::now());
        let t = text(Arc::new(state));
        assert!(!t.contains("pgha_cluster_leader_info"), "no member claims primary");
        assert!(t.contains("pgha_cluster_primaries{scope=\"demo\"} 0"));
        assert!(t.contains("pgha_cluster_dcs_leader_info{scope=\"demo\",member=\"node3\"} 1"));
    }

    #[test]
    fn every_family_is_exposed_once_and_names_follow_conventions() {
        let a = Arc::new(lab_state("healthy", ""));
        let t = encode(&registry(crate::fleet::Fleet::fixed(vec![a.clone(), a]))).unwrap();
        let mut seen = std::collections::HashSet::new();
        for line in t.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(seen.insert(name.to_string()), "{name} declared twice");
            assert!(name.starts_with("pgha_") || name.starts_with("process_"), "{name}");
            if kind == "counter" {
                assert!(!name.ends_with("_total"), "the encoder adds _total: {name}");
            }
        }
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "one value, no timestamp: {line}");
            assert_eq!(line.split("} ").count(), 2.min(line.matches('{').count() + 1), "{line}");
        }
    }
}
