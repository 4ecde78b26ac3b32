//! From the clusters' latest readings to metric families, at scrape time.
//!
//! `/metrics` only reads what the collection loops left in memory: building the families is a
//! pure function of the readings (testable without a registry), and encoding is
//! prometheus-client's. Families gather the series of every cluster, because OpenMetrics wants
//! each family once. No sample carries a timestamp.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::assess::{assess, verdict, VERDICTS};
use crate::collect::haproxy::{member_of, ServerStatus};
use crate::collect::patroni::{summarize, PgState, Role};
use crate::probe::{FailureReason, Hist, ProbeStats};
use crate::process;
use crate::state::{ClusterData, ClusterState, Source};

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

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Every family of every cluster, plus the exporter's own.
pub fn build(clusters: &[Arc<ClusterState>], now: Instant) -> Vec<Family> {
    let mut f = Families::default();
    f.info("pgha_build", "Build of the exporter.", l(&[("version", env!("CARGO_PKG_VERSION"))]));
    for cluster in clusters {
        let data = cluster.read();
        source_families(&mut f, cluster, &data, now);
        patroni_families(&mut f, &cluster.scope, &data);
        etcd_families(&mut f, &cluster.scope, &data);
        haproxy_families(&mut f, &cluster.scope, &data);
        probe_families(&mut f, &cluster.scope, &data, now);
        timeline_families(&mut f, &cluster.scope, &data);
        condition_families(&mut f, &cluster.scope, &data);
    }
    process::families(&mut f);
    f.into_vec()
}

fn source_families(f: &mut Families, cluster: &ClusterState, data: &ClusterData, now: Instant) {
    let scope = cluster.scope.as_str();
    for ((source, target), h) in &data.health {
        let labels = l(&[("scope", scope), ("source", source.as_str()), ("target", target)]);
        f.flag("pgha_source_up", "1 if the last call to this target succeeded.", labels.clone(), h.up);
        f.gauge(
            "pgha_source_poll_duration_seconds",
            "Duration of the last call to this target.",
            labels.clone(),
            h.last_duration.as_secs_f64(),
        );
        for (kind, count) in h.errors_by_kind() {
            let mut labels = labels.clone();
            labels.push(("kind", kind.as_str().to_string()));
            f.counter("pgha_source_errors", "Failed calls to this target, by kind of failure.", labels, count);
        }
    }
    for source in &cluster.sources {
        // A source that has not finished a round yet has no snapshot, so no age.
        if let Some(at) = data.rounds.get(source) {
            f.gauge(
                "pgha_source_snapshot_age_seconds",
                "Time since this source last completed a round of polls.",
                l(&[("scope", scope), ("source", source.as_str())]),
                now.saturating_duration_since(*at).as_secs_f64(),
            );
        }
    }
}

fn patroni_families(f: &mut Families, scope: &str, data: &ClusterData) {
    if !data.members.is_empty() || !data.patroni.is_empty() {
        let summary = summarize(&data.patroni, data.dcs_view.as_ref());
        let sync_in_view = |name: &str| {
            data.dcs_view.as_ref().is_some_and(|v| v.members.iter().any(|m| m.name == name && m.sync_standby))
        };
        for (name, member) in &data.members {
            let labels = l(&[("scope", scope), ("member", name)]);
            let status = data.patroni.get(name).and_then(|r| r.status.as_ref());
            f.flag(
                "pgha_patroni_member_up",
                "1 if the member's own REST API answered GET /patroni.",
                labels.clone(),
                status.is_some(),
            );
            f.flag(
                "pgha_patroni_member_discovered",
                "1 if the latest discovery listed the member; 0 while it is only retained after vanishing.",
                labels.clone(),
                member.present,
            );
            let mut info = labels.clone();
            info.push(("api_url", member.api_url.clone()));
            info.push(("postgres", member.postgres.clone().unwrap_or_default()));
            info.push(("version", status.and_then(|s| s.patroni_version.clone()).unwrap_or_default()));
            f.info("pgha_patroni_member", "Addresses and Patroni version of a member.", info);
            for role in Role::ALL {
                let mut rl = labels.clone();
                rl.push(("role", role.as_str().to_string()));
                f.flag(
                    "pgha_patroni_member_role",
                    "The member's role by its own answer (primary covers Patroni 3's master); all 0 when it does not answer.",
                    rl,
                    status.is_some_and(|s| s.role == role),
                );
            }
            for state in PgState::ALL {
                let mut sl = labels.clone();
                sl.push(("state", state.as_str().to_string()));
                f.flag(
                    "pgha_patroni_member_state",
                    "PostgreSQL's state as the member reports it; all 0 when it does not answer.",
                    sl,
                    status.is_some_and(|s| s.state == state),
                );
            }
            if let Some(s) = status {
                if let Some(tl) = s.timeline {
                    f.gauge(
                        "pgha_patroni_member_timeline",
                        "PostgreSQL timeline of the member.",
                        labels.clone(),
                        tl as f64,
                    );
                }
                f.flag(
                    "pgha_patroni_member_pending_restart",
                    "1 if a restart is pending to apply settings.",
                    labels.clone(),
                    s.pending_restart,
                );
                f.flag(
                    "pgha_patroni_member_paused",
                    "1 if the member reports maintenance mode (pause).",
                    labels.clone(),
                    s.paused,
                );
            }
            if let Some(lag) = summary.lag_bytes.get(name) {
                f.gauge(
                    "pgha_patroni_member_replication_lag_bytes",
                    "Bytes of WAL the replica has not replayed yet: the primary's position minus the replica's, from their own answers.",
                    labels.clone(),
                    *lag as f64,
                );
            }
            f.flag(
                "pgha_patroni_member_sync_standby",
                "1 if the member is a synchronous standby.",
                labels,
                summary.sync_standbys.iter().any(|s| s == name) || sync_in_view(name),
            );
        }
        let sl = l(&[("scope", scope)]);
        if let Some(leader) = summary.leader() {
            f.info(
                "pgha_cluster_leader",
                "The leader by the members' own answers (exactly one claims primary).",
                l(&[("scope", scope), ("member", leader)]),
            );
        }
        f.gauge(
            "pgha_cluster_primaries",
            "Members claiming the primary role by their own answers; above 1 is split brain.",
            sl.clone(),
            summary.primaries.len() as f64,
        );
        f.gauge(
            "pgha_cluster_members",
            "Members known (discovered, static, or retained after vanishing).",
            sl.clone(),
            summary.members_total as f64,
        );
        f.gauge(
            "pgha_cluster_members_running",
            "Members whose PostgreSQL is running, by their own answers.",
            sl.clone(),
            summary.members_running as f64,
        );
        if let Some(tl) = summary.max_timeline {
            f.gauge("pgha_cluster_timeline", "Highest PostgreSQL timeline among the members.", sl.clone(), tl as f64);
        }
        f.flag(
            "pgha_cluster_unlocked",
            "1 if a member reports that no one holds the leader lock.",
            sl.clone(),
            summary.unlocked,
        );
        f.flag(
            "pgha_cluster_failsafe_active",
            "1 if a member reports Patroni's failsafe mode active.",
            sl.clone(),
            summary.failsafe_active,
        );
        f.flag("pgha_cluster_paused", "1 if a member reports maintenance mode.", sl, summary.paused);
        if let Some(view) = &data.dcs_view {
            for m in view.members.iter().filter(|m| m.role == Role::Primary) {
                f.info(
                    "pgha_cluster_dcs_leader",
                    "The leader in Patroni's DCS view (GET /cluster); stale during a DCS outage.",
                    l(&[("scope", scope), ("member", &m.name)]),
                );
            }
        }
    }
}

fn etcd_families(f: &mut Families, scope: &str, data: &ClusterData) {
    let Some(etcd) = &data.etcd else { return };
    for ((source, endpoint), h) in &data.health {
        if *source != Source::Etcd {
            continue;
        }
        let labels = l(&[("scope", scope), ("endpoint", endpoint)]);
        f.flag("pgha_etcd_member_up", "1 if the etcd member answered status in time.", labels.clone(), h.up);
        let status = etcd.status.get(endpoint);
        f.flag(
            "pgha_etcd_member_is_leader",
            "1 if the member is the raft leader.",
            labels.clone(),
            status.is_some_and(|s| s.is_leader()),
        );
        f.flag(
            "pgha_etcd_member_has_leader",
            "1 if the member follows a raft leader and reports no error.",
            labels.clone(),
            status.is_some_and(|s| s.healthy()),
        );
        if let Some(s) = status {
            f.gauge("pgha_etcd_member_raft_term", "Raft term of the member.", labels.clone(), s.raft_term as f64);
            f.gauge("pgha_etcd_member_raft_index", "Raft index of the member.", labels.clone(), s.raft_index as f64);
            f.gauge(
                "pgha_etcd_member_db_size_bytes",
                "Size of the member's database file.",
                labels.clone(),
                s.db_size_bytes as f64,
            );
            f.gauge(
                "pgha_etcd_member_status_errors",
                "Errors the member reports in its status (e.g. 'etcdserver: no leader').",
                labels.clone(),
                s.errors.len() as f64,
            );
            let mut info = labels;
            info.push(("member", etcd.member_names.get(&s.member_id).cloned().unwrap_or_default()));
            info.push(("id", format!("{:x}", s.member_id)));
            info.push(("version", s.version.clone()));
            f.info("pgha_etcd_member", "Name, id and version of the etcd member behind an endpoint.", info);
        }
    }
    let q = etcd.quorum();
    let sl = l(&[("scope", scope)]);
    f.gauge(
        "pgha_etcd_cluster_members",
        "etcd members in the member list (remembered while members are down).",
        sl.clone(),
        q.members as f64,
    );
    f.gauge(
        "pgha_etcd_cluster_members_healthy",
        "etcd members that answer and follow a leader.",
        sl.clone(),
        q.healthy as f64,
    );
    f.flag("pgha_etcd_quorum", "1 if a majority of etcd members is healthy.", sl.clone(), q.holds);
    f.counter(
        "pgha_etcd_leader_changes",
        "etcd raft leader changes seen by the exporter since it started.",
        sl.clone(),
        etcd.leader_changes,
    );
    if etcd.keys_from_quorum {
        f.flag(
            "pgha_patroni_leader_key_present",
            "1 if Patroni's leader key exists in etcd (read from a quorum member).",
            sl.clone(),
            etcd.leader_key.is_some(),
        );
        if let Some(key) = &etcd.leader_key {
            f.info(
                "pgha_patroni_leader_key",
                "The member holding Patroni's leader key in etcd.",
                l(&[("scope", scope), ("member", &key.holder)]),
            );
            if let Some(ttl) = key.ttl_seconds {
                f.gauge(
                    "pgha_patroni_leader_key_ttl_seconds",
                    "Seconds left on the leader key's lease.",
                    sl,
                    ttl as f64,
                );
            }
        }
    }
}

fn haproxy_families(f: &mut Families, scope: &str, data: &ClusterData) {
    let members: BTreeMap<String, Option<String>> =
        data.members.iter().map(|(n, m)| (n.clone(), m.postgres.clone())).collect();
    for (instance, reading) in &data.haproxy {
        let Some(stats) = &reading.stats else { continue };
        for b in &stats.backends {
            let labels = l(&[
                ("scope", scope),
                ("haproxy", instance),
                ("backend", &b.name),
                ("route", reading.route(&b.name).as_str()),
            ]);
            f.flag(
                "pgha_haproxy_backend_up",
                "1 if HAProxy reports the backend UP (some server is up).",
                labels.clone(),
                b.up,
            );
            if let Some(act) = b.active_servers {
                f.gauge("pgha_haproxy_backend_active_servers", "Active servers UP in the backend.", labels, act as f64);
            }
        }
        for s in &stats.servers {
            let member = member_of(s, &members).unwrap_or_default();
            let labels = l(&[
                ("scope", scope),
                ("haproxy", instance),
                ("backend", &s.backend),
                ("server", &s.name),
                ("member", &member),
                ("route", reading.route(&s.backend).as_str()),
            ]);
            f.flag(
                "pgha_haproxy_server_up",
                "1 if HAProxy routes to this server (status UP).",
                labels.clone(),
                s.status == ServerStatus::Up,
            );
            for status in ServerStatus::ALL {
                let mut sl = labels.clone();
                sl.push(("status", status.as_str().to_string()));
                f.flag(
                    "pgha_haproxy_server_status",
                    "The server's status in HAProxy, one-hot.",
                    sl,
                    s.status == status,
                );
            }
            let mut check = labels.clone();
            check.push(("check_status", s.check_status.clone()));
            f.info(
                "pgha_haproxy_server_check",
                "The result of the server's last health check (L7OK, L7STS, L4CON, ...).",
                check,
            );
            if let Some(v) = s.last_change_seconds {
                f.gauge(
                    "pgha_haproxy_server_last_change_seconds",
                    "Seconds since the server's last status change.",
                    labels.clone(),
                    v as f64,
                );
            }
            if let Some(v) = s.downtime_seconds {
                f.counter(
                    "pgha_haproxy_server_downtime_seconds",
                    "Total seconds HAProxy counted the server down (whole seconds).",
                    labels.clone(),
                    v,
                );
            }
            if let Some(v) = s.current_sessions {
                f.gauge("pgha_haproxy_server_current_sessions", "Current sessions on the server.", labels, v as f64);
            }
        }
    }
}

fn probe_stats_families(f: &mut Families, scope: &str, probe: &str, p: &ProbeStats, now: Instant) {
    let labels = l(&[("scope", scope), ("probe", probe)]);
    f.flag("pgha_probe_up", "1 if the probe's last attempt succeeded.", labels.clone(), p.up);
    f.counter("pgha_probe_attempts", "Probe attempts.", labels.clone(), p.attempts);
    for (reason, n) in p.failures_by_reason() {
        let mut rl = labels.clone();
        rl.push(("reason", reason.as_str().to_string()));
        f.counter("pgha_probe_failures", "Failed probe attempts by reason.", rl, n);
    }
    f.histogram(
        "pgha_probe_duration_seconds",
        "Duration of probe attempts (connect included when reconnecting).",
        labels.clone(),
        &p.latency,
    );
    if let Some(t) = p.last_success_wall {
        let secs = t.duration_since(std::time::SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        f.gauge(
            "pgha_probe_last_success_timestamp_seconds",
            "Unix time of the probe's last success.",
            labels.clone(),
            secs,
        );
    }
    f.counter(
        "pgha_probe_outages",
        "Outages: from the last success before a failure to the next success.",
        labels.clone(),
        p.outages,
    );
    f.gauge(
        "pgha_probe_current_outage_seconds",
        "Seconds since the last success before the ongoing outage; 0 when there is none.",
        labels.clone(),
        p.current_outage(now).as_secs_f64(),
    );
    if let Some(d) = p.last_outage {
        f.gauge(
            "pgha_probe_last_outage_seconds",
            "Duration of the last finished outage.",
            labels.clone(),
            d.as_secs_f64(),
        );
    }
    f.histogram("pgha_probe_outage_duration_seconds", "Durations of finished outages.", labels, &p.outage_durations);
}

fn probe_families(f: &mut Families, scope: &str, data: &ClusterData, now: Instant) {
    let probes = &data.probes;
    if let Some(id) = &probes.probe_id {
        f.info(
            "pgha_probe",
            "The probe id this exporter writes its heartbeat rows with.",
            l(&[("scope", scope), ("probe_id", id)]),
        );
    }
    if let Some(w) = &probes.write {
        probe_stats_families(f, scope, "write", w, now);
        let sl = l(&[("scope", scope)]);
        f.counter(
            "pgha_probe_lost_writes",
            "Acknowledged probe writes found missing on the primary after an outage.",
            sl.clone(),
            probes.lost_writes_total,
        );
        if let Some(n) = probes.last_outage_lost_writes {
            f.gauge(
                "pgha_probe_last_outage_lost_writes",
                "Acknowledged writes missing after the last write outage.",
                sl,
                n as f64,
            );
        }
    }
    if let Some(r) = &probes.read {
        probe_stats_families(f, scope, "read", r, now);
        if let Some(s) = probes.read_staleness_seconds {
            f.gauge(
                "pgha_probe_read_staleness_seconds",
                "Age of the newest probe write visible through the replicas port (includes up to one write interval).",
                l(&[("scope", scope)]),
                s,
            );
        }
    }
    for (member, d) in &probes.direct {
        let labels = l(&[("scope", scope), ("member", member)]);
        f.flag(
            "pgha_member_postgres_up",
            "1 if the member's own PostgreSQL answered the direct probe.",
            labels.clone(),
            d.up,
        );
        if let Some(r) = d.in_recovery {
            f.flag(
                "pgha_member_postgres_in_recovery",
                "1 if the member's PostgreSQL is in recovery (a replica).",
                labels.clone(),
                r,
            );
        }
        f.flag(
            "pgha_member_postgres_writable",
            "1 if the last direct write to this member succeeded.",
            labels.clone(),
            d.writable,
        );
        for reason in FailureReason::ALL {
            let mut rl = labels.clone();
            rl.push(("reason", reason.as_str().to_string()));
            f.counter(
                "pgha_member_postgres_probe_failures",
                "Failed direct probes by reason.",
                rl,
                d.failures[reason.index()],
            );
        }
    }
}

fn timeline_families(f: &mut Families, scope: &str, data: &ClusterData) {
    let t = &data.timeline;
    let sl = l(&[("scope", scope)]);
    for (kind, n) in [("planned", t.planned_total), ("unplanned", t.unplanned_total)] {
        f.counter(
            "pgha_failovers",
            "Leader changes, planned (a switchover or manual failover) or not.",
            l(&[("scope", scope), ("kind", kind)]),
            n,
        );
    }
    f.counter(
        "pgha_haproxy_server_transitions",
        "HAProxy servers going up or down, seen since the exporter started.",
        sl.clone(),
        t.haproxy_transitions,
    );
    for (phase, h) in &t.phase_hists {
        f.histogram(
            "pgha_failover_phase_duration_seconds",
            "Phase durations over all failovers.",
            l(&[("scope", scope), ("phase", phase)]),
            h,
        );
    }
    f.histogram(
        "pgha_failover_write_downtime_seconds",
        "Write downtime through HAProxy over all failovers.",
        sl.clone(),
        &t.downtime_hist,
    );
    if let Some(last) = &t.last {
        for (phase, secs) in &last.phases {
            f.gauge(
                "pgha_last_failover_phase_seconds",
                "Each phase of the last failover.",
                l(&[("scope", scope), ("phase", phase)]),
                *secs,
            );
        }
        if let Some(d) = last.write_downtime_seconds {
            f.gauge(
                "pgha_last_failover_write_downtime_seconds",
                "Write downtime through HAProxy in the last failover.",
                sl.clone(),
                d,
            );
        }
        if let Some(n) = last.lost_writes {
            f.gauge(
                "pgha_last_failover_lost_writes",
                "Acknowledged writes lost in the last failover.",
                sl.clone(),
                n as f64,
            );
        }
        f.gauge(
            "pgha_last_failover_timestamp_seconds",
            "Unix time the last failover's new leader took over.",
            sl.clone(),
            last.time,
        );
        f.info(
            "pgha_last_failover",
            "The last failover's old and new leader and kind.",
            l(&[
                ("scope", scope),
                ("old_leader", last.old_leader.as_deref().unwrap_or("")),
                ("new_leader", &last.new_leader),
                ("kind", if last.planned { "planned" } else { "unplanned" }),
            ]),
        );
    }
}

fn condition_families(f: &mut Families, scope: &str, data: &ClusterData) {
    let c = assess(data);
    for (name, on) in c.list() {
        f.flag(
            "pgha_cluster_condition",
            "Each cluster condition, 0 or 1 (see README).",
            l(&[("scope", scope), ("condition", name)]),
            on,
        );
    }
    let v = verdict(&c);
    for name in VERDICTS {
        f.flag(
            "pgha_cluster_verdict",
            "The cluster's verdict, one-hot: the first condition that holds by precedence, else degraded, healthy or unknown.",
            l(&[("scope", scope), ("verdict", name)]),
            name == v,
        );
    }
}

/// The prometheus-client collector: builds the families at scrape time and encodes them.
#[derive(Debug)]
pub struct Exposition {
    pub clusters: Vec<Arc<ClusterState>>,
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in build(&self.clusters, Instant::now()) {
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

pub fn registry(clusters: Vec<Arc<ClusterState>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition { clusters }));
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
    use crate::collect::patroni::parse_status;
    use crate::state::{ErrorKind, FoundMember, MemberReading};
    use std::time::Duration;

    fn lab_state(fixture_dir: &str) -> Arc<ClusterState> {
        let state = Arc::new(ClusterState::new(
            "demo".into(),
            vec![Source::Patroni, Source::Haproxy],
            Duration::from_secs(600),
        ));
        let found = (1..=3)
            .map(|i| FoundMember {
                name: format!("node{i}"),
                api_url: format!("http://127.0.0.2{i}:18008"),
                postgres: Some(format!("127.0.0.2{i}:15432")),
            })
            .collect();
        state.observe_members(found, Instant::now());
        for i in 1..=3 {
            let name = format!("node{i}");
            let path = format!("{}/tests/fixtures/{fixture_dir}/patroni-{name}.json", env!("CARGO_MANIFEST_DIR"));
            let status = std::fs::read(path).ok().map(|b| parse_status(&b).unwrap());
            let outcome = if status.is_some() { Ok(()) } else { Err((ErrorKind::Connect, "refused".to_string())) };
            state.record_poll(Source::Patroni, &name, Duration::from_millis(3), outcome);
            state.write().patroni.insert(name, MemberReading { status });
        }
        let csv =
            std::fs::read_to_string(format!("{}/tests/fixtures/{fixture_dir}/haproxy.csv", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        state.write().haproxy.insert(
            "haproxy".into(),
            crate::collect::haproxy::HaproxyReading {
                stats: Some(crate::collect::haproxy::parse_stats_csv(&csv).unwrap()),
                primary_backend: "primary".into(),
                replicas_backend: "replicas".into(),
            },
        );
        state.finish_round(Source::Patroni);
        state
    }

    fn text(state: Arc<ClusterState>) -> String {
        encode(&registry(vec![state])).unwrap()
    }

    #[test]
    fn replica_stopped_exposition() {
        let t = text(lab_state("replica-stopped"));
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
            "pgha_haproxy_server_up{scope=\"demo\",haproxy=\"haproxy\",backend=\"replicas\",server=\"node3\",member=\"node3\",route=\"replicas\"} 0"
        ));
        assert!(t.contains(
            "pgha_haproxy_server_up{scope=\"demo\",haproxy=\"haproxy\",backend=\"primary\",server=\"node1\",member=\"node1\",route=\"primary\"} 1"
        ));
        assert!(t.contains("# TYPE pgha_build info"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn quorum_loss_exposition_has_no_leader_and_a_stale_dcs_leader_is_kept_apart() {
        let state = lab_state("etcd-quorum-lost");
        let view = std::fs::read(format!(
            "{}/tests/fixtures/etcd-quorum-lost/cluster-from-node1.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        state.write().dcs_view = Some(crate::collect::patroni::parse_cluster(&view).unwrap());
        let t = text(state);
        assert!(!t.contains("pgha_cluster_leader_info"), "no member claims primary");
        assert!(t.contains("pgha_cluster_primaries{scope=\"demo\"} 0"));
        assert!(t.contains("pgha_cluster_dcs_leader_info{scope=\"demo\",member=\"node3\"} 1"));
    }

    #[test]
    fn every_family_is_exposed_once_and_names_follow_conventions() {
        let a = lab_state("healthy");
        let t = encode(&registry(vec![a.clone(), a])).unwrap();
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
