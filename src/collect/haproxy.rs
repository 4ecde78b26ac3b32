//! HAProxy's stats page in CSV form (`/;csv`): per backend and server, status, last check,
//! sessions and downtime.
//!
//! Columns are found by the header's names, not by position, since they differ between HAProxy
//! versions. The header line starts with `# ` and every line ends with a trailing comma.

use std::sync::Arc;

use super::http::{FetchError, HttpCaller};
use super::timed;
use crate::config::HaproxyPlan;
use crate::model::address::HostPort;
use crate::model::haproxy::{Backend, Route, Server, ServerStatus, Stats};
use crate::model::source::{ErrorKind, TargetError};
use crate::model::text::bounded;
use crate::state::ClusterState;

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("malformed stats CSV: {0}")]
    Parse(String),
}

impl From<HaproxyError> for TargetError {
    fn from(e: HaproxyError) -> Self {
        let kind = match &e {
            HaproxyError::Fetch(f) => f.kind(),
            HaproxyError::Parse(_) => ErrorKind::Parse,
        };
        TargetError::new(kind, e.to_string())
    }
}

/// Parses the stats CSV.
pub fn parse_stats_csv(text: &str) -> Result<Stats, HaproxyError> {
    let text = text
        .strip_prefix("# ")
        .ok_or_else(|| HaproxyError::Parse("no `# ` header line: not HAProxy's stats CSV".into()))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| HaproxyError::Parse(e.to_string()))?.clone();
    let column = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| HaproxyError::Parse(format!("no `{name}` column")))
    };
    let (px, sv, status, ty) = (column("pxname")?, column("svname")?, column("status")?, column("type")?);
    let optional = |name: &str| header.iter().position(|h| h == name);
    let (check, lastchg, downtime, scur, act, addr) = (
        optional("check_status"),
        optional("lastchg"),
        optional("downtime"),
        optional("scur"),
        optional("act"),
        optional("addr"),
    );

    let mut stats = Stats::default();
    for record in reader.records() {
        let record = record.map_err(|e| HaproxyError::Parse(e.to_string()))?;
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::trim).filter(|s| !s.is_empty());
        let number = |i: Option<usize>| field(i).and_then(|s| s.parse::<u64>().ok());
        let (Some(pxname), Some(svname)) = (field(Some(px)), field(Some(sv))) else {
            return Err(HaproxyError::Parse(format!(
                "line {} lacks pxname/svname",
                record.position().map_or(0, |p| p.line())
            )));
        };
        // type: 0 frontend, 1 backend, 2 server, 3 listener.
        match field(Some(ty)) {
            Some("1") => stats.backends.push(Backend {
                name: bounded(pxname),
                up: field(Some(status)) == Some("UP"),
                active_servers: number(act),
            }),
            Some("2") => stats.servers.push(Server {
                backend: bounded(pxname),
                name: bounded(svname),
                status: ServerStatus::parse(field(Some(status)).unwrap_or("")),
                check_status: field(check).map(|c| bounded(c.trim_start_matches("* "))).unwrap_or_default(),
                last_change_seconds: number(lastchg),
                downtime_seconds: number(downtime),
                current_sessions: number(scur),
                address: field(addr).and_then(HostPort::parse),
            }),
            Some(_) => {}
            None => return Err(HaproxyError::Parse(format!("no type for {pxname}/{svname}"))),
        }
    }
    Ok(stats)
}

/// Parses the header and the lines of the backends `keep` accepts, and skips the others
/// before the CSV parser sees them: an HAProxy serving thousands of other servers costs a scan
/// of its lines, not a parse of each. A line opening with a quote is always parsed.
pub fn parse_stats_csv_of(text: &str, keep: impl Fn(&str) -> bool) -> Result<Stats, HaproxyError> {
    let mut kept = String::with_capacity(16 << 10);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let backend = line.split(',').next().unwrap_or("");
        if i == 0 || backend.starts_with('"') || keep(backend.trim()) {
            kept.push_str(line);
        }
    }
    parse_stats_csv(&kept)
}

async fn fetch_stats(http: &HttpCaller, plan: &HaproxyPlan) -> Result<Stats, HaproxyError> {
    let body = http.get(plan.stats_url.as_str()).await?;
    let text = String::from_utf8_lossy(&body);
    match plan.all_backends {
        true => parse_stats_csv(&text),
        false => Ok(parse_stats_csv_of(&text, |b| plan.routes.of(b) != Route::Other)?.routes_only(&plan.routes)),
    }
}

/// One HAProxy instance's loop: its stats every interval, applied as one reading.
pub async fn poll(state: Arc<ClusterState>, http: HttpCaller, plan: HaproxyPlan) {
    loop {
        let began = std::time::Instant::now();
        let reading = timed(fetch_stats(&http, &plan)).await;
        state.apply_haproxy(&plan.name, reading);
        state.cadence.next_round(began, plan.polling.pace()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::haproxy::{member_of, server_transitions, Routes};
    use std::collections::BTreeMap;

    fn fixture(path: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn lab_members() -> BTreeMap<String, Option<HostPort>> {
        (1..=3).map(|i| (format!("node{i}"), HostPort::parse(&format!("127.0.0.2{i}:15432")))).collect()
    }

    fn up_servers(stats: &Stats, backend: &str) -> Vec<String> {
        stats
            .servers
            .iter()
            .filter(|s| s.backend == backend && s.status == ServerStatus::Up)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn healthy_primary_port_routes_to_the_leader_only() {
        let stats = parse_stats_csv(&fixture("healthy/haproxy.csv")).unwrap();
        assert_eq!(up_servers(&stats, "primary"), ["node1"]);
        assert_eq!(up_servers(&stats, "replicas"), ["node2", "node3"]);
        let primary = stats.backends.iter().find(|b| b.name == "primary").unwrap();
        assert_eq!(primary.active_servers, Some(1));
        let n1 = stats.servers.iter().find(|s| s.backend == "primary" && s.name == "node1").unwrap();
        assert!(n1.check_status.starts_with("L7"), "{}", n1.check_status);
        // Recorded without `stats show-legends`: no address, so members map by name.
        assert_eq!(member_of(n1, &lab_members()).as_deref(), Some("node1"));
    }

    #[test]
    fn stopped_replica_is_down_with_a_layer4_check_and_dropped_from_replicas() {
        let stats = parse_stats_csv(&fixture("replica-stopped/haproxy.csv")).unwrap();
        assert_eq!(up_servers(&stats, "replicas"), ["node2"]);
        let n3 = stats.servers.iter().find(|s| s.backend == "replicas" && s.name == "node3").unwrap();
        assert_eq!(n3.status, ServerStatus::Down);
        assert_eq!(n3.check_status, "L4CON");
    }

    #[test]
    fn after_failover_primary_port_routes_to_the_new_leader() {
        let stats = parse_stats_csv(&fixture("leader-stopped/haproxy.csv")).unwrap();
        let up = up_servers(&stats, "primary");
        assert_eq!(up.len(), 1);
        assert_ne!(up[0], "node1");
    }

    #[test]
    fn quorum_loss_leaves_no_primary_server_up() {
        let stats = parse_stats_csv(&fixture("etcd-quorum-lost/haproxy.csv")).unwrap();
        assert!(up_servers(&stats, "primary").is_empty());
        let primary = stats.backends.iter().find(|b| b.name == "primary").unwrap();
        assert!(!primary.up);
    }

    #[test]
    fn failover_transitions_between_recorded_states() {
        let before = parse_stats_csv(&fixture("healthy/haproxy.csv")).unwrap();
        let after = parse_stats_csv(&fixture("leader-stopped/haproxy.csv")).unwrap();
        let changes: Vec<(String, String, bool)> = server_transitions(&before, &after)
            .into_iter()
            .map(|(s, up)| (s.backend.clone(), s.name.clone(), up))
            .collect();
        assert!(changes.contains(&("primary".into(), "node1".into(), false)), "{changes:?}");
        assert!(changes.iter().any(|(b, n, up)| b == "primary" && n != "node1" && *up), "{changes:?}");
        assert!(server_transitions(&before, &before).is_empty());
    }

    #[test]
    fn only_the_routed_backends_are_kept_unless_all_are_asked_for() {
        let mut csv = String::from("# pxname,svname,status,type,\nprimary,node1,UP,2,\nprimary,BACKEND,UP,1,\n");
        for i in 0..40_000 {
            csv.push_str(&format!("web{},srv{i},UP,2,\n", i % 100));
        }
        let all = parse_stats_csv(&csv).unwrap();
        assert_eq!(all.servers.len(), 40_001);
        let routes = Routes { primary_backend: "primary".into(), replicas_backend: "replicas".into() };
        let kept = all.routes_only(&routes);
        assert_eq!((kept.servers.len(), kept.backends.len()), (1, 1));
        assert_eq!(kept.servers[0].name, "node1");
        let skipped = parse_stats_csv_of(&csv, |b| routes.of(b) != Route::Other).unwrap();
        assert_eq!((skipped.servers.len(), skipped.backends.len()), (1, 1));
        assert_eq!(skipped.servers[0].name, "node1");
        let quoted =
            parse_stats_csv_of("# pxname,svname,status,type,\n\"primary\",n2,UP,2,\nweb,x,UP,\n", |b| b == "primary");
        assert_eq!(
            quoted.unwrap().servers[0].name,
            "n2",
            "a quoted line is parsed; a broken line of another backend skipped"
        );
    }

    #[test]
    fn address_wins_over_name_when_shown() {
        let csv = "# pxname,svname,status,type,addr,check_status,\nprimary,pg-a,UP,2,127.0.0.22:15432,* L7OK,\nprimary,BACKEND,UP,1,,,\n";
        let stats = parse_stats_csv(csv).unwrap();
        let s = &stats.servers[0];
        assert_eq!(s.check_status, "L7OK");
        assert_eq!(member_of(s, &lab_members()).as_deref(), Some("node2"));
        assert_eq!(stats.backends[0].active_servers, None);
    }

    #[test]
    fn malformed_and_truncated_csv_are_errors_not_panics() {
        let healthy = fixture("healthy/haproxy.csv");
        assert!(parse_stats_csv("").is_err());
        assert!(parse_stats_csv("<html>stats</html>").is_err());
        assert!(parse_stats_csv("# a,b,c,\n1,2,3,\n").is_err(), "no pxname column");
        assert!(parse_stats_csv("# pxname,svname,status,type,\nprimary,node1,UP,\n").is_err(), "no type");
        // Cut inside the header: a column is missing.
        assert!(parse_stats_csv(&healthy[..40]).is_err());
        // Cut mid-row: whatever is parsed must not invent an UP server.
        if let Ok(stats) = parse_stats_csv(&healthy[..healthy.len() / 2]) {
            assert!(stats.servers.len() < 6);
        }
    }
}
