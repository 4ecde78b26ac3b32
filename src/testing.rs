//! Test support: a cluster's state built, through the state's own `apply_*` methods, from the
//! readings recorded in the lab (`tests/fixtures/<state>/`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::collect::etcd::parse_member_key;
use crate::collect::haproxy::parse_stats_csv;
use crate::collect::patroni::{parse_cluster, parse_status};
use crate::config::{ClusterPlan, Config};
use crate::model::source::{ErrorKind, Reading, TargetError};
use crate::state::ClusterState;

pub const MEMBERS: [&str; 3] = ["node1", "node2", "node3"];

/// The lab's cluster: its three members, and HAProxy; `extra` adds cluster settings (indented
/// by four spaces, e.g. `"    probes: {user: u, primary: 'h:1'}\n"`).
pub fn plan(extra: &str) -> ClusterPlan {
    plan_behind("      - {stats_url: 'http://127.0.0.31:17000/;csv'}\n", extra)
}

/// As [`plan`], with the HAProxy instances of `haproxy` (list items indented by six spaces).
pub fn plan_behind(haproxy: &str, extra: &str) -> ClusterPlan {
    let yaml = format!(
        "clusters:\n  - scope: demo\n    patroni:\n      members:\n{}    haproxy:\n{haproxy}{extra}",
        (1..=3)
            .map(|i| format!("        - {{name: node{i}, api_url: 'http://127.0.0.2{i}:18008'}}\n"))
            .collect::<String>()
    );
    Config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).clusters.remove(0)
}

pub fn fixture(state: &str, file: &str) -> Option<Vec<u8>> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(state).join(file)).ok()
}

pub fn answered<T>(value: T) -> Reading<T> {
    Reading { at: Instant::now(), duration: Duration::from_millis(3), result: Ok(value) }
}

pub fn refused<T>() -> Reading<T> {
    let error = TargetError::new(ErrorKind::Connect, "connection refused");
    Reading { at: Instant::now(), duration: Duration::from_millis(2), result: Err(error) }
}

/// The state whose readings are the ones recorded in `state`: members' addresses from their
/// etcd keys, each member's own `/patroni` (a member without one did not answer), the first
/// `/cluster` recorded as the DCS view, and HAProxy's stats (none: HAProxy refused).
pub fn lab_state(state: &str, extra: &str) -> ClusterState {
    lab_state_of(state, plan(extra))
}

/// Two HAProxy instances, `haproxy` and `haproxy2`, each with its own whoami page, behind a
/// virtual IP.
pub const VIP_HAPROXY: &str = "      - {stats_url: 'http://127.0.0.31:17000/;csv', whoami_url: 'http://127.0.0.31:17001/'}\n      - {name: haproxy2, stats_url: 'http://127.0.0.32:17000/;csv', whoami_url: 'http://127.0.0.32:17001/'}\n    vip: {whoami_url: 'http://127.0.0.30:17001/'}\n";

/// As [`lab_state`] under `plan`: every HAProxy instance of the plan gets the recorded stats.
pub fn lab_state_of(state: &str, plan: ClusterPlan) -> ClusterState {
    let cluster = ClusterState::new(plan, None);
    let keys = MEMBERS
        .iter()
        .filter_map(|n| Some(parse_member_key(n, &fixture(state, &format!("etcd-member-{n}.json"))?).unwrap()));
    cluster.apply_discovery(keys.collect(), Instant::now());
    for (i, n) in MEMBERS.iter().enumerate() {
        let api = format!("http://127.0.0.2{}:18008", i + 1);
        let reading = match fixture(state, &format!("patroni-{n}.json")) {
            Some(body) => answered(parse_status(&body).unwrap()),
            None => refused(),
        };
        cluster.apply_member(n, &api, reading);
    }
    if let Some(view) = MEMBERS.iter().find_map(|n| fixture(state, &format!("cluster-from-{n}.json"))) {
        cluster.apply_view(parse_cluster(&view).unwrap(), Instant::now());
    }
    for h in &cluster.plan.haproxy {
        let stats = match fixture(state, "haproxy.csv") {
            Some(csv) => answered(parse_stats_csv(&String::from_utf8(csv).unwrap()).unwrap().routes_only(&h.routes)),
            None => refused(),
        };
        cluster.apply_haproxy(&h.name, stats);
    }
    cluster
}
