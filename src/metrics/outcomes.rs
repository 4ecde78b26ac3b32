//! The families of what the exporter measured or derived: the probes, the failovers, the
//! conditions and the verdict.

use std::time::Instant;

use super::{l, Families};
use crate::assess::assess;
use crate::model::probe::{FailureReason, ProbeKind, ProbeStats};
use crate::model::verdict::Verdict;
use crate::state::ClusterData;
use crate::timeline::Phase;

pub fn families(f: &mut Families, scope: &str, data: &ClusterData, direct_probes: bool, now: Instant) {
    probe_families(f, scope, data, now);
    timeline_families(f, scope, data);
    condition_families(f, scope, data, direct_probes);
}

fn probe_stats_families(f: &mut Families, scope: &str, probe: ProbeKind, p: &ProbeStats, now: Instant) {
    let labels = l(&[("scope", scope), ("probe", probe.as_str())]);
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
            "Unix time of the probe's last success (the write probe's: its last acknowledged commit).",
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
        probe_stats_families(f, scope, ProbeKind::Write, w, now);
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
        probe_stats_families(f, scope, ProbeKind::Read, r, now);
        if let Some(s) = probes.read_staleness_seconds {
            f.gauge(
                "pgha_probe_read_staleness_seconds",
                "How long the oldest write probe commit not yet visible through the replicas port has been acknowledged (0: all visible).",
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
        for reason in FailureReason::ALL.iter().copied() {
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
    for phase in Phase::ALL {
        f.histogram(
            "pgha_failover_phase_duration_seconds",
            "Phase durations over all failovers.",
            l(&[("scope", scope), ("phase", phase.as_str())]),
            &t.phase_hists[phase.index()],
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
                l(&[("scope", scope), ("phase", phase.as_str())]),
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

fn condition_families(f: &mut Families, scope: &str, data: &ClusterData, direct_probes: bool) {
    let c = assess(data, direct_probes);
    for (condition, on) in c.each() {
        let labels = l(&[("scope", scope), ("condition", condition.as_str())]);
        f.flag("pgha_cluster_condition", "Each cluster condition, 0 or 1 (see README).", labels, on);
    }
    let v = Verdict::of(&c);
    for verdict in Verdict::ALL.iter().copied() {
        f.flag(
            "pgha_cluster_verdict",
            "The cluster's verdict, one-hot: the first condition that holds by precedence, else degraded, healthy or unknown.",
            l(&[("scope", scope), ("verdict", verdict.as_str())]),
            verdict == v,
        );
    }
}
