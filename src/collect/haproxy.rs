//! HAProxy's stats page in CSV form (`/;csv`): per backend and server, status, last check,
//! sessions and downtime; each server mapped to the Patroni member it points at, so "which member
//! does the primary port route to" is one query.
//!
//! Columns are found by the header's names, not by position, since they differ between HAProxy
//! versions. The header line starts with `# ` and every line ends with a trailing comma.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{get_capped, ticker, FetchError, HttpAuth};
use crate::state::{ClusterState, ErrorKind, Source};
use crate::timeline::EventKind;

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("malformed stats CSV: {0}")]
    Parse(String),
}

impl HaproxyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HaproxyError::Fetch(f) => f.kind(),
            HaproxyError::Parse(_) => ErrorKind::Parse,
        }
    }
}

/// A server's status, folded into a fixed set of label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    /// Includes `UP 1/2` (failing checks, still routed to).
    Up,
    /// Includes `DOWN 1/2` (passing checks, not routed to yet).
    Down,
    Maint,
    Drain,
    NoLb,
    NoCheck,
    Other,
}

impl ServerStatus {
    pub const ALL: [ServerStatus; 7] = [
        ServerStatus::Up,
        ServerStatus::Down,
        ServerStatus::Maint,
        ServerStatus::Drain,
        ServerStatus::NoLb,
        ServerStatus::NoCheck,
        ServerStatus::Other,
    ];

    pub fn parse(s: &str) -> ServerStatus {
        let s = s.trim();
        if s.starts_with("UP") {
            ServerStatus::Up
        } else if s.starts_with("DOWN") {
            ServerStatus::Down
        } else if s.starts_with("MAINT") {
            ServerStatus::Maint
        } else if s.starts_with("DRAIN") {
            ServerStatus::Drain
        } else if s.starts_with("NOLB") {
            ServerStatus::NoLb
        } else if s == "no check" {
            ServerStatus::NoCheck
        } else {
            ServerStatus::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Up => "up",
            ServerStatus::Down => "down",
            ServerStatus::Maint => "maint",
            ServerStatus::Drain => "drain",
            ServerStatus::NoLb => "nolb",
            ServerStatus::NoCheck => "no_check",
            ServerStatus::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub backend: String,
    pub name: String,
    pub status: ServerStatus,
    /// Last health check result (`L7OK`, `L4CON`, ...), without the in-progress `* ` marker.
    pub check_status: String,
    /// Seconds since the last status change.
    pub last_change_seconds: Option<u64>,
    pub downtime_seconds: Option<u64>,
    pub current_sessions: Option<u64>,
    /// `host:port`, when the stats page shows it (`stats show-legends`).
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    pub up: bool,
    pub active_servers: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    pub backends: Vec<Backend>,
    pub servers: Vec<Server>,
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
                name: pxname.to_string(),
                up: field(Some(status)) == Some("UP"),
                active_servers: number(act),
            }),
            Some("2") => stats.servers.push(Server {
                backend: pxname.to_string(),
                name: svname.to_string(),
                status: ServerStatus::parse(field(Some(status)).unwrap_or("")),
                check_status: field(check).map(|c| c.trim_start_matches("* ").to_string()).unwrap_or_default(),
                last_change_seconds: number(lastchg),
                downtime_seconds: number(downtime),
                current_sessions: number(scur),
                address: field(addr).map(str::to_string),
            }),
            Some(_) => {}
            None => return Err(HaproxyError::Parse(format!("no type for {pxname}/{svname}"))),
        }
    }
    Ok(stats)
}

/// Maps a server to a member: by address when the stats show it, else by name.
pub fn member_of(server: &Server, members: &BTreeMap<String, Option<String>>) -> Option<String> {
    if let Some(addr) = &server.address {
        if let Some((name, _)) = members.iter().find(|(_, pg)| pg.as_deref() == Some(addr.as_str())) {
            return Some(name.clone());
        }
    }
    members.contains_key(&server.name).then(|| server.name.clone())
}

/// Servers whose routed-or-not state changed between two readings: (server, now up).
pub fn server_transitions<'a>(before: &Stats, after: &'a Stats) -> Vec<(&'a Server, bool)> {
    after
        .servers
        .iter()
        .filter_map(|s| {
            let was = before.servers.iter().find(|b| b.backend == s.backend && b.name == s.name)?;
            let (was_up, is_up) = (was.status == ServerStatus::Up, s.status == ServerStatus::Up);
            (was_up != is_up).then_some((s, is_up))
        })
        .collect()
}

/// What a backend is for, from the configuration: the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replicas,
    Other,
}

impl Route {
    pub fn of(backend: &str, primary_backend: &str, replicas_backend: &str) -> Route {
        if backend == primary_backend {
            Route::Primary
        } else if backend == replicas_backend {
            Route::Replicas
        } else {
            Route::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replicas => "replicas",
            Route::Other => "other",
        }
    }
}

/// The latest stats of one HAProxy instance.
#[derive(Debug, Clone)]
pub struct HaproxyReading {
    pub stats: Option<Stats>,
    pub primary_backend: String,
    pub replicas_backend: String,
}

impl HaproxyReading {
    pub fn route(&self, backend: &str) -> Route {
        Route::of(backend, &self.primary_backend, &self.replicas_backend)
    }
}

pub struct HaproxyPoller {
    pub state: Arc<ClusterState>,
    pub client: reqwest::Client,
    pub name: String,
    pub stats_url: String,
    pub primary_backend: String,
    pub replicas_backend: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub auth: Option<HttpAuth>,
    /// The last stats read successfully: transitions are found against it, so a change across
    /// a failed poll is not lost.
    pub last_good: Option<Stats>,
}

impl HaproxyPoller {
    pub async fn run(mut self) {
        self.state.register_target(Source::Haproxy, &self.name);
        let mut tick = ticker(self.interval);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    pub async fn round(&mut self) {
        let started = Instant::now();
        let result = match get_capped(
            &self.client,
            &self.stats_url,
            self.timeout,
            self.max_body_bytes,
            self.auth.as_ref(),
        )
        .await
        {
            Ok(body) => parse_stats_csv(&String::from_utf8_lossy(&body)),
            Err(e) => Err(e.into()),
        };
        let elapsed = started.elapsed();
        let stats = match result {
            Ok(stats) => {
                self.state.record_poll(Source::Haproxy, &self.name, elapsed, Ok(()));
                Some(stats)
            }
            Err(e) => {
                self.state.record_poll(Source::Haproxy, &self.name, elapsed, Err((e.kind(), e.to_string())));
                None
            }
        };
        if let Some(new) = &stats {
            if let Some(old) = &self.last_good {
                let members: BTreeMap<String, Option<String>> =
                    self.state.read().members.iter().map(|(n, m)| (n.clone(), m.postgres.clone())).collect();
                for (server, up) in server_transitions(old, new) {
                    let member = member_of(server, &members);
                    let route = Route::of(&server.backend, &self.primary_backend, &self.replicas_backend).as_str();
                    let kind = if up { EventKind::HaproxyServerUp } else { EventKind::HaproxyServerDown };
                    let detail = format!(
                        "route={route} haproxy={} backend={} server={} check={}",
                        self.name, server.backend, server.name, server.check_status
                    );
                    self.state.event(kind, member.as_deref(), detail, Instant::now());
                }
            }
        }
        if stats.is_some() {
            self.last_good = stats.clone();
        }
        let reading = HaproxyReading {
            stats,
            primary_backend: self.primary_backend.clone(),
            replicas_backend: self.replicas_backend.clone(),
        };
        self.state.write().haproxy.insert(self.name.clone(), reading);
        self.state.finish_round(Source::Haproxy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn lab_members() -> BTreeMap<String, Option<String>> {
        (1..=3).map(|i| (format!("node{i}"), Some(format!("127.0.0.2{i}:15432")))).collect()
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
    fn address_wins_over_name_when_shown() {
        let csv = "# pxname,svname,status,type,addr,check_status,\nprimary,pg-a,UP,2,127.0.0.22:15432,* L7OK,\nprimary,BACKEND,UP,1,,,\n";
        let stats = parse_stats_csv(csv).unwrap();
        let s = &stats.servers[0];
        assert_eq!(s.check_status, "L7OK");
        assert_eq!(member_of(s, &lab_members()).as_deref(), Some("node2"));
        assert_eq!(stats.backends[0].active_servers, None);
    }

    #[test]
    fn statuses_fold_to_fixed_values() {
        for (raw, want) in [
            ("UP", ServerStatus::Up),
            ("UP 1/2", ServerStatus::Up),
            ("DOWN 1/2", ServerStatus::Down),
            ("MAINT (via primary/x)", ServerStatus::Maint),
            ("no check", ServerStatus::NoCheck),
            ("DRAIN", ServerStatus::Drain),
            ("???", ServerStatus::Other),
        ] {
            assert_eq!(ServerStatus::parse(raw), want, "{raw}");
        }
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
