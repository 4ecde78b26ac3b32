//! The Grafana dashboards and Prometheus rules against what really happened: a real Prometheus
//! scraped the exporter at 15 s for the whole lab run (failovers, a quorum loss, ...). Every
//! metric the bundle names must be one the exporter emits, every dashboard query must return
//! data over the run, and the alerts for the faults provoked must have fired and then resolved.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::bundle::{dashboard_queries, referenced_metrics};
use crate::support::prometheus::{unix_now, Prometheus};
use crate::support::*;
use crate::SCOPE;

/// The lab has one HAProxy and no keepalived, so no virtual IP: what the bundle shows of one
/// exists only where `vip` is configured. The compose stack's ha-entry test watches a real one.
const VIP: &str = "the lab has no virtual IP (tests/compose/entry.rs watches one)";
const VIP_METRICS: &[&str] =
    &["pgha_haproxy_vrrp_state", "pgha_vip_holder", "pgha_vip_moves_total", "pgha_vip_standbys"];

/// Queries allowed to stay empty over the run, with why.
const ALLOWED_EMPTY: &[(&str, &str)] = &[
    ("Virtual IP held by", VIP),
    ("Standbys", VIP),
    ("Moves in range", VIP),
    ("keepalived state by each instance's whoami page", VIP),
    ("annotation: Virtual IP moves", VIP),
];

/// Alerts the run provokes long enough to fire, and that must have resolved by its end.
const FIRED_AND_RESOLVED: &[&str] = &["PghaEtcdQuorumLost", "PghaReadOnly", "PghaWritesFailing", "PghaNoLeader"];
/// Alerts that fire on an event and stay for a while by design (10 min for a failover).
const FIRED: &[&str] = &["PghaFailoverHappened"];

pub fn check(prometheus: &Prometheus, exporter: &Exporter, start: f64) {
    // Every metric the bundle names exists in a real exposition (after failovers, so the
    // last-failover families are there).
    let scraped: BTreeSet<String> = exporter.scrape().samples.iter().map(|s| s.name.clone()).collect();
    let expected = |n: &String| n != "up" && n != "ALERTS" && !VIP_METRICS.contains(&n.as_str());
    let missing: Vec<String> =
        referenced_metrics().into_iter().filter(|n| expected(n) && !scraped.contains(n)).collect();
    assert!(missing.is_empty(), "named by dashboards or rules but not exposed: {missing:?}");

    // Let Prometheus scrape and evaluate the healed cluster at least twice.
    std::thread::sleep(Duration::from_secs(35));
    let end = unix_now();
    let mut empty = Vec::new();
    let queries = dashboard_queries(SCOPE);
    assert!(queries.len() > 20, "{} queries", queries.len());
    for (dashboard, panel, expr) in &queries {
        if ALLOWED_EMPTY.iter().any(|(p, _)| p == panel) {
            continue;
        }
        if prometheus.query_range(expr, start, end, 15).is_empty() {
            empty.push(format!("{dashboard} / {panel}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data over the run:\n{}", empty.join("\n"));
    eprintln!("{} dashboard queries returned data over {:.0}s", queries.len(), end - start);

    for alert in FIRED_AND_RESOLVED.iter().chain(FIRED) {
        let q = format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",scope=\"{SCOPE}\"}}");
        assert!(!prometheus.query_range(&q, start, end, 15).is_empty(), "{alert} never fired during the run");
    }
    for alert in FIRED_AND_RESOLVED {
        let q = format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",scope=\"{SCOPE}\"}}");
        let now = prometheus.query(&q);
        assert!(now.is_empty(), "{alert} still firing after recovery: {now:?}");
    }
    eprintln!("alerts fired and resolved: {FIRED_AND_RESOLVED:?}; fired: {FIRED:?}");
}
