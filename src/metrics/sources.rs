//! The families of what the sources said: each target's health, Patroni's members and
//! cluster summary, etcd's members and quorum, HAProxy's backends and servers.

use std::time::{Duration, Instant};

use super::{l, Families};
use crate::model::haproxy::{member_of, CheckResult, ServerStatus};
use crate::model::patroni::{PgState, Role};
use crate::model::source::Source;
use crate::model::vip::{Answer, VrrpState};
use crate::state::ClusterData;

/// `sources`: each source this cluster reads, with the age beyond which its readings are stale.
pub fn families(f: &mut Families, scope: &str, sources: &[(Source, Duration)], data: &ClusterData, now: Instant) {
    health_families(f, scope, sources, data, now);
    patroni_families(f, scope, data);
    etcd_families(f, scope, data);
    haproxy_families(f, scope, data);
    vip_families(f, scope, data);
}

fn health_families(f: &mut Families, scope: &str, sources: &[(Source, Duration)], data: &ClusterData, now: Instant) {
    for (source, (target, h)) in sources.iter().flat_map(|(s, _)| data.targets(*s).into_iter().map(move |t| (s, t))) {
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
    for (source, bound) in sources {
        let labels = l(&[("scope", scope), ("source", source.as_str())]);
        // A source none of whose targets has answered a call yet has no snapshot, so no age.
        if let Some(age) = data.snapshot_age(*source, now) {
            f.gauge(
                "pgha_source_snapshot_age_seconds",
                "Time since this source last completed a round of polls.",
                labels.clone(),
                age.as_secs_f64(),
            );
        }
        f.gauge(
            "pgha_source_stale_after_seconds",
            "Snapshot age beyond which this source's collection has stopped: two calm rounds with their timeouts, and 2 s.",
            labels,
            bound.as_secs_f64(),
        );
    }
}

fn patroni_families(f: &mut Families, scope: &str, data: &ClusterData) {
    f.gauge(
        "pgha_discovery_members_dropped",
        "Members the latest discovery listed beyond max_members, not watched.",
        l(&[("scope", scope)]),
        data.members_dropped as f64,
    );
    if !data.members.is_empty() {
        let summary = data.summary();
        let sync_in_view = |name: &str| {
            data.dcs_view.as_ref().is_some_and(|v| v.members.iter().any(|m| m.name == name && m.sync_standby))
        };
        for (name, member) in &data.members {
            let labels = l(&[("scope", scope), ("member", name)]);
            let status = member.status.as_ref();
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
            info.push(("postgres", member.postgres.as_ref().map(|p| p.to_string()).unwrap_or_default()));
            info.push(("version", member.version.clone().unwrap_or_default()));
            f.info("pgha_patroni_member", "Addresses and Patroni version of a member.", info);
            for role in Role::ALL.iter().copied() {
                let mut rl = labels.clone();
                rl.push(("role", role.as_str().to_string()));
                f.flag(
                    "pgha_patroni_member_role",
                    "The member's role by its own answer (primary covers Patroni 3's master); all 0 when it does not answer.",
                    rl,
                    status.is_some_and(|s| s.role == role),
                );
            }
            for state in PgState::ALL.iter().copied() {
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
    let Some(etcd) = data.etcd.as_ref().filter(|e| e.polled()) else { return };
    for (endpoint, ep) in &etcd.endpoints {
        // Not `endpoint`: Prometheus Operator puts that label on every target it scrapes.
        let labels = l(&[("scope", scope), ("etcd_endpoint", endpoint)]);
        let status = ep.status.as_ref();
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
    let members = data.member_addresses();
    for (instance, h) in &data.haproxy {
        let Some(stats) = h.stats() else { continue };
        for b in &stats.backends {
            let labels = l(&[
                ("scope", scope),
                ("haproxy", instance),
                ("backend", &b.name),
                ("route", h.routes.of(&b.name).as_str()),
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
                ("route", h.routes.of(&s.backend).as_str()),
            ]);
            for status in ServerStatus::ALL.iter().copied() {
                let mut sl = labels.clone();
                sl.push(("status", status.as_str().to_string()));
                f.flag(
                    "pgha_haproxy_server_status",
                    "The server's status in HAProxy, one-hot.",
                    sl,
                    s.status == status,
                );
            }
            let result = CheckResult::of(&s.check_status);
            for r in CheckResult::ALL.iter().copied() {
                let mut rl = labels.clone();
                rl.push(("result", r.as_str().to_string()));
                f.flag(
                    "pgha_haproxy_server_check_result",
                    "The server's last health check, one-hot: ok, timeout, refused, bad_response (L7STS: Patroni's 503), pending, none, other.",
                    rl,
                    result == r,
                );
            }
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

fn vip_families(f: &mut Families, scope: &str, data: &ClusterData) {
    let Some(vip) = &data.vip else { return };
    let holder = vip.holder();
    let named = data.haproxy.keys().map(String::as_str).chain(holder.filter(|h| !data.haproxy.contains_key(*h)));
    for instance in named {
        f.flag(
            "pgha_vip_holder",
            "1 for the HAProxy instance the whoami page read through the virtual IP names.",
            l(&[("scope", scope), ("haproxy", instance)]),
            holder == Some(instance),
        );
    }
    if let Some(answer) = vip.answer_kind() {
        for a in Answer::ALL.iter().copied() {
            f.flag(
                "pgha_vip_answer",
                "How the whoami page through the virtual IP answered, one-hot: held, unreachable (nobody holds the address), refused or no_answer (its holder's HAProxy is down or frozen), bad_answer.",
                l(&[("scope", scope), ("answer", a.as_str())]),
                answer == a,
            );
        }
    }
    for (instance, page) in &vip.instances {
        for state in VrrpState::ALL.iter().copied() {
            f.flag(
                "pgha_haproxy_vrrp_state",
                "The instance's keepalived state by its own whoami page, one-hot (unknown: the page does not answer).",
                l(&[("scope", scope), ("haproxy", instance), ("state", state.as_str())]),
                page.state() == state,
            );
        }
    }
    f.counter(
        "pgha_vip_moves",
        "Moves of the virtual IP from one HAProxy instance to another, since the exporter started.",
        l(&[("scope", scope)]),
        vip.moves,
    );
    if let Some(n) = crate::assess::vip_standbys(data) {
        f.gauge(
            "pgha_vip_standbys",
            "HAProxy instances ready to take the virtual IP over: VRRP backup, and routing to the primary.",
            l(&[("scope", scope)]),
            n as f64,
        );
    }
}
