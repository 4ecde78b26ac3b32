//! Patroni's REST API: every member's own `GET /patroni`, plus `GET /cluster` from one member.
//!
//! A member's own answer is the only truthful view during a DCS outage: `/cluster` keeps showing
//! the last leader even after it demoted itself (lab-facts gotcha 6). So roles, the leader and
//! split brain are judged from the members' own answers; `/cluster` is kept as the DCS view and
//! for discovery when no etcd is configured.
//!
//! Patroni 3 says `master`, Patroni 4 says `primary`; both mean [`Role::Primary`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::{get_capped, ticker, FetchError, HttpAuth};
use crate::state::{ClusterState, ErrorKind, FoundMember, MemberReading, Source};
use crate::timeline::EventKind;

#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("malformed JSON: {0}")]
    Parse(#[from] serde_json::Error),
}

impl PatroniError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PatroniError::Fetch(f) => f.kind(),
            PatroniError::Parse(_) => ErrorKind::Parse,
        }
    }
}

/// A member's role, as it says itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    StandbyLeader,
    Other,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Primary, Role::Replica, Role::StandbyLeader, Role::Other];

    pub fn parse(s: &str) -> Role {
        match s {
            "master" | "primary" | "leader" => Role::Primary,
            "replica" | "sync_standby" | "quorum_standby" => Role::Replica,
            "standby_leader" | "standby-leader" => Role::StandbyLeader,
            _ => Role::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Other => "other",
        }
    }
}

/// PostgreSQL's state as Patroni reports it, folded into a fixed set of label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgState {
    Running,
    Streaming,
    InArchiveRecovery,
    Starting,
    Stopping,
    Stopped,
    Crashed,
    Restarting,
    Other,
}

impl PgState {
    pub const ALL: [PgState; 9] = [
        PgState::Running,
        PgState::Streaming,
        PgState::InArchiveRecovery,
        PgState::Starting,
        PgState::Stopping,
        PgState::Stopped,
        PgState::Crashed,
        PgState::Restarting,
        PgState::Other,
    ];

    pub fn parse(s: &str) -> PgState {
        match s {
            "running" => PgState::Running,
            "streaming" => PgState::Streaming,
            "in archive recovery" => PgState::InArchiveRecovery,
            "starting" => PgState::Starting,
            "stopping" => PgState::Stopping,
            "stopped" => PgState::Stopped,
            "crashed" => PgState::Crashed,
            "restarting" => PgState::Restarting,
            _ => PgState::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PgState::Running => "running",
            PgState::Streaming => "streaming",
            PgState::InArchiveRecovery => "in_archive_recovery",
            PgState::Starting => "starting",
            PgState::Stopping => "stopping",
            PgState::Stopped => "stopped",
            PgState::Crashed => "crashed",
            PgState::Restarting => "restarting",
            PgState::Other => "other",
        }
    }

    /// PostgreSQL is up and serving (as a primary or as a replica).
    pub fn is_running(self) -> bool {
        matches!(self, PgState::Running | PgState::Streaming | PgState::InArchiveRecovery)
    }
}

/// What a member says about itself in `GET /patroni`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberStatus {
    pub role: Role,
    pub state: PgState,
    pub timeline: Option<u64>,
    /// The primary's current WAL position.
    pub wal_location: Option<u64>,
    pub received_location: Option<u64>,
    pub replayed_location: Option<u64>,
    pub pending_restart: bool,
    /// Maintenance mode (`patronictl pause`).
    pub paused: bool,
    /// No member holds the leader key.
    pub cluster_unlocked: bool,
    pub failsafe_active: bool,
    pub patroni_version: Option<String>,
    /// The primary's walsenders: which replica streams, and whether synchronously.
    pub replication: Vec<Replication>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    pub application_name: String,
    pub state: String,
    pub sync_state: String,
}

#[derive(Deserialize)]
struct RawStatus {
    state: Option<String>,
    role: Option<String>,
    timeline: Option<u64>,
    #[serde(default)]
    xlog: RawXlog,
    #[serde(default)]
    pending_restart: bool,
    #[serde(default)]
    pause: bool,
    #[serde(default)]
    cluster_unlocked: bool,
    #[serde(default)]
    failsafe_mode_is_active: bool,
    patroni: Option<RawPatroni>,
    #[serde(default)]
    replication: Vec<RawReplication>,
}

#[derive(Deserialize, Default)]
struct RawXlog {
    location: Option<u64>,
    received_location: Option<u64>,
    replayed_location: Option<u64>,
}

#[derive(Deserialize)]
struct RawPatroni {
    version: Option<String>,
}

#[derive(Deserialize)]
struct RawReplication {
    application_name: Option<String>,
    state: Option<String>,
    sync_state: Option<String>,
}

/// Parses a member's own `GET /patroni` answer.
pub fn parse_status(body: &[u8]) -> Result<MemberStatus, serde_json::Error> {
    let raw: RawStatus = serde_json::from_slice(body)?;
    Ok(MemberStatus {
        role: raw.role.as_deref().map(Role::parse).unwrap_or(Role::Other),
        state: raw.state.as_deref().map(PgState::parse).unwrap_or(PgState::Other),
        timeline: raw.timeline,
        wal_location: raw.xlog.location,
        received_location: raw.xlog.received_location,
        replayed_location: raw.xlog.replayed_location,
        pending_restart: raw.pending_restart,
        paused: raw.pause,
        cluster_unlocked: raw.cluster_unlocked,
        failsafe_active: raw.failsafe_mode_is_active,
        patroni_version: raw.patroni.and_then(|p| p.version),
        replication: raw
            .replication
            .into_iter()
            .map(|r| Replication {
                application_name: r.application_name.unwrap_or_default(),
                state: r.state.unwrap_or_default(),
                sync_state: r.sync_state.unwrap_or_default(),
            })
            .collect(),
    })
}

/// Patroni's DCS view from `GET /cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub members: Vec<ViewMember>,
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ViewMember {
    pub name: String,
    pub role: Role,
    /// `sync_standby` (Patroni 3) or `sync_standby`/`quorum_standby` (Patroni 4).
    pub sync_standby: bool,
    pub state: PgState,
    /// Base URL of its REST API.
    pub api_url: Option<String>,
    pub postgres: Option<String>,
    pub timeline: Option<u64>,
    /// `None` when Patroni says `"unknown"` or leaves it out.
    pub lag_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct RawCluster {
    #[serde(default)]
    members: Vec<RawViewMember>,
    #[serde(default)]
    pause: bool,
}

#[derive(Deserialize)]
struct RawViewMember {
    name: String,
    role: Option<String>,
    state: Option<String>,
    api_url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    timeline: Option<u64>,
    /// A number of bytes, or the string "unknown".
    lag: Option<serde_json::Value>,
}

pub fn parse_cluster(body: &[u8]) -> Result<ClusterView, serde_json::Error> {
    let raw: RawCluster = serde_json::from_slice(body)?;
    Ok(ClusterView {
        paused: raw.pause,
        members: raw
            .members
            .into_iter()
            .map(|m| {
                let role_text = m.role.unwrap_or_default();
                ViewMember {
                    name: m.name,
                    role: Role::parse(&role_text),
                    sync_standby: matches!(role_text.as_str(), "sync_standby" | "quorum_standby"),
                    state: m.state.as_deref().map(PgState::parse).unwrap_or(PgState::Other),
                    api_url: m.api_url.map(|u| api_base(&u)),
                    postgres: match (m.host, m.port) {
                        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
                        _ => None,
                    },
                    timeline: m.timeline,
                    lag_bytes: m.lag.and_then(|v| v.as_u64()),
                }
            })
            .collect(),
    })
}

/// Patroni advertises `http://host:8008/patroni`; the base URL is what we add paths to.
pub fn api_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/patroni").unwrap_or(url).to_string()
}

/// The cluster as the members' own answers describe it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Members that say they are primary; more than one is split brain.
    pub primaries: Vec<String>,
    pub members_total: usize,
    pub members_running: usize,
    pub max_timeline: Option<u64>,
    pub unlocked: bool,
    pub failsafe_active: bool,
    pub paused: bool,
    /// Replication lag of each replica in bytes: the primary's WAL position minus the replica's
    /// replayed position, both from their own answers; `/cluster`'s figure when that is not
    /// possible (no single primary answered).
    pub lag_bytes: BTreeMap<String, u64>,
    /// Replicas the primary streams to synchronously.
    pub sync_standbys: Vec<String>,
}

impl Summary {
    /// The leader by the members' own answers: the one primary, if exactly one.
    pub fn leader(&self) -> Option<&str> {
        match self.primaries.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

pub fn summarize(readings: &BTreeMap<String, MemberReading>, view: Option<&ClusterView>) -> Summary {
    let answered: Vec<(&String, &MemberStatus)> =
        readings.iter().filter_map(|(n, r)| r.status.as_ref().map(|s| (n, s))).collect();
    let primaries: Vec<String> =
        answered.iter().filter(|(_, s)| s.role == Role::Primary).map(|(n, _)| (*n).clone()).collect();
    let mut summary = Summary {
        members_total: readings.len(),
        members_running: answered.iter().filter(|(_, s)| s.state.is_running()).count(),
        max_timeline: answered.iter().filter_map(|(_, s)| s.timeline).max(),
        unlocked: answered.iter().any(|(_, s)| s.cluster_unlocked),
        failsafe_active: answered.iter().any(|(_, s)| s.failsafe_active),
        paused: answered.iter().any(|(_, s)| s.paused),
        ..Summary::default()
    };
    let primary = match primaries.as_slice() {
        [one] => answered.iter().find(|(n, _)| *n == one).map(|(_, s)| *s),
        _ => None,
    };
    for (name, status) in &answered {
        if status.role != Role::Replica {
            continue;
        }
        let own = primary
            .and_then(|p| Some((p.wal_location?, status.replayed_location.or(status.received_location)?)))
            .map(|(primary_at, replica_at)| primary_at.saturating_sub(replica_at));
        let from_view = || view.and_then(|v| v.members.iter().find(|m| &m.name == *name)).and_then(|m| m.lag_bytes);
        if let Some(lag) = own.or_else(from_view) {
            summary.lag_bytes.insert((*name).clone(), lag);
        }
    }
    if let Some(p) = primary {
        summary.sync_standbys = p
            .replication
            .iter()
            .filter(|r| matches!(r.sync_state.as_str(), "sync" | "quorum"))
            .map(|r| r.application_name.clone())
            .collect();
    }
    summary.primaries = primaries;
    summary
}

/// What changed about a member between two rounds, as events.
pub fn member_events(
    name: &str,
    before: Option<&MemberStatus>,
    after: Option<&MemberStatus>,
) -> Vec<(EventKind, String, String)> {
    let mut events = Vec::new();
    let primary = |s: Option<&MemberStatus>| s.is_some_and(|s| s.role == Role::Primary);
    match (before, after) {
        (Some(_), None) => {
            events.push((EventKind::MemberUnreachable, name.to_string(), "REST API stopped answering".to_string()))
        }
        (None, Some(a)) => events.push((
            EventKind::MemberReachable,
            name.to_string(),
            format!("REST API answers again as {}", a.role.as_str()),
        )),
        _ => {}
    }
    if let (Some(b), Some(a)) = (before, after) {
        if primary(Some(b)) && !primary(Some(a)) {
            events.push((
                EventKind::LeftPrimary,
                name.to_string(),
                format!("now {} ({})", a.role.as_str(), a.state.as_str()),
            ));
        } else if !primary(Some(b)) && primary(Some(a)) {
            events.push((EventKind::BecamePrimary, name.to_string(), format!("timeline {}", a.timeline.unwrap_or(0))));
        }
    }
    events
}

/// Settings of one cluster's Patroni loop.
pub struct PatroniPoller {
    pub state: Arc<ClusterState>,
    pub client: reqwest::Client,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub max_body_bytes: usize,
    pub auth: Option<HttpAuth>,
    /// Discover members from `/cluster` (no etcd configured).
    pub discover_from_cluster: bool,
    pub discovery_urls: Vec<String>,
}

impl PatroniPoller {
    pub async fn run(self) {
        let mut tick = ticker(self.interval);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        get_capped(&self.client, url, self.timeout, self.max_body_bytes, self.auth.as_ref()).await
    }

    /// One round: every known member's `/patroni` at once, then `/cluster` from one of them.
    pub async fn round(&self) {
        let members: Vec<(String, String)> =
            self.state.read().members.iter().map(|(n, m)| (n.clone(), m.api_url.clone())).collect();
        let polls = members.iter().map(|(name, api)| async move {
            let started = Instant::now();
            let result = match self.fetch(&format!("{api}/patroni")).await {
                Ok(body) => parse_status(&body).map_err(PatroniError::from),
                Err(e) => Err(PatroniError::from(e)),
            };
            (name, api, started.elapsed(), result)
        });
        let results = futures::future::join_all(polls).await;

        let mut view_from: Option<String> = None;
        let now = Instant::now();
        let mut events = Vec::new();
        for (name, api, elapsed, result) in results {
            let status = match result {
                Ok(s) => {
                    self.state.record_poll(Source::Patroni, name, elapsed, Ok(()));
                    // Ask the primary for /cluster when there is one; any answering member will do.
                    if view_from.is_none() || s.role == Role::Primary {
                        view_from = Some(api.clone());
                    }
                    Some(s)
                }
                Err(e) => {
                    self.state.record_poll(Source::Patroni, name, elapsed, Err((e.kind(), e.to_string())));
                    None
                }
            };
            let mut data = self.state.write();
            if let Some(previous) = data.patroni.get(name) {
                events.extend(member_events(name, previous.status.as_ref(), status.as_ref()));
            }
            data.patroni.insert(name.clone(), MemberReading { status });
        }
        for (kind, member, detail) in events {
            self.state.event(kind, Some(&member), detail, now);
        }
        // With etcd, the leader key's changes come from its watch; without, the leader by the
        // members' own answers stands in for it.
        if self.discover_from_cluster {
            let leader = summarize(&self.state.read().patroni, None).leader().map(str::to_string);
            let known = self.state.read().timeline.leader.clone();
            if let Some(l) = leader.filter(|l| Some(l) != known.as_ref()) {
                self.state.event(
                    EventKind::LeaderKeyAcquired,
                    Some(&l),
                    "sole primary by the members' own answers",
                    now,
                );
            }
        }

        let view_urls: Vec<String> =
            view_from.into_iter().chain(self.discovery_urls.iter().map(|u| api_base(u))).collect();
        let mut view = None;
        for base in view_urls {
            match self.fetch(&format!("{base}/cluster")).await {
                Ok(body) => match parse_cluster(&body) {
                    Ok(v) => {
                        view = Some(v);
                        break;
                    }
                    Err(e) => tracing::warn!(scope = %self.state.scope, url = %base, error = %e, "malformed /cluster"),
                },
                Err(e) => tracing::debug!(scope = %self.state.scope, url = %base, error = %e, "/cluster failed"),
            }
        }
        if let Some(v) = &view {
            if self.discover_from_cluster {
                let found = v
                    .members
                    .iter()
                    .filter_map(|m| {
                        Some(FoundMember {
                            name: m.name.clone(),
                            api_url: m.api_url.clone()?,
                            postgres: m.postgres.clone(),
                        })
                    })
                    .collect();
                self.state.observe_members(found, Instant::now());
            }
        }
        {
            let mut data = self.state.write();
            if view.is_some() {
                data.dcs_view = view;
            }
            // Members forgotten by discovery must not linger as readings.
            let known: Vec<String> = data.members.keys().cloned().collect();
            data.patroni.retain(|n, _| known.contains(n));
        }
        // A round with no member to poll (discovery has not answered yet) is no snapshot: the
        // exporter is not ready and the verdict stays unknown until one is.
        if !members.is_empty() {
            self.state.finish_round(Source::Patroni);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn readings(state_dir: &str) -> BTreeMap<String, MemberReading> {
        ["node1", "node2", "node3"]
            .iter()
            .map(|n| {
                let path = format!("{}/tests/fixtures/{state_dir}/patroni-{n}.json", env!("CARGO_MANIFEST_DIR"));
                let status = std::fs::read(path).ok().map(|b| parse_status(&b).unwrap());
                (n.to_string(), MemberReading { status })
            })
            .collect()
    }

    #[test]
    fn patroni3_primary_and_replica() {
        let p = parse_status(&fixture("healthy/patroni-node1.json")).unwrap();
        assert_eq!(p.role, Role::Primary, "Patroni 3 says master");
        assert_eq!(p.state, PgState::Running);
        assert_eq!(p.timeline, Some(1));
        assert!(p.wal_location.is_some());
        assert_eq!(p.replication.len(), 2);
        assert_eq!(p.patroni_version.as_deref(), Some("3.0.2"));
        let r = parse_status(&fixture("healthy/patroni-node2.json")).unwrap();
        assert_eq!(r.role, Role::Replica);
        assert!(r.replayed_location.is_some() && r.wal_location.is_none());
    }

    #[test]
    fn healthy_cluster_has_one_leader_and_two_lagging_replicas() {
        let view = parse_cluster(&fixture("healthy/cluster-from-node1.json")).unwrap();
        let s = summarize(&readings("healthy"), Some(&view));
        assert_eq!(s.primaries, vec!["node1".to_string()]);
        assert_eq!(s.leader(), Some("node1"));
        assert_eq!((s.members_total, s.members_running), (3, 3));
        assert_eq!(s.max_timeline, Some(1));
        assert_eq!(s.lag_bytes.keys().collect::<Vec<_>>(), ["node2", "node3"]);
        assert!(!s.unlocked);
    }

    #[test]
    fn stopped_replica_leaves_the_leader_alone() {
        let s = summarize(&readings("replica-stopped"), None);
        assert_eq!(s.leader(), Some("node1"));
        assert_eq!((s.members_total, s.members_running), (3, 2));
        assert!(!s.lag_bytes.contains_key("node3"));
    }

    #[test]
    fn leader_stopped_gives_a_new_leader_on_a_new_timeline() {
        let s = summarize(&readings("leader-stopped"), None);
        let leader = s.leader().expect("a new leader").to_string();
        assert_ne!(leader, "node1");
        assert_eq!(s.max_timeline, Some(2));
        assert_eq!(s.members_running, 2);
    }

    #[test]
    fn quorum_loss_own_answers_show_no_primary_while_cluster_view_is_stale() {
        let s = summarize(&readings("etcd-quorum-lost"), None);
        assert!(s.primaries.is_empty(), "every member demoted itself: {:?}", s.primaries);
        let view = parse_cluster(&fixture("etcd-quorum-lost/cluster-from-node1.json")).unwrap();
        assert!(view.members.iter().any(|m| m.role == Role::Primary), "the DCS view still names the old leader");
    }

    #[test]
    fn cluster_view_gives_addresses_for_discovery() {
        let view = parse_cluster(&fixture("healthy/cluster-from-node2.json")).unwrap();
        let n3 = view.members.iter().find(|m| m.name == "node3").unwrap();
        assert_eq!(n3.api_url.as_deref(), Some("http://127.0.0.23:18008"));
        assert_eq!(n3.postgres.as_deref(), Some("127.0.0.23:15432"));
        assert_eq!(n3.lag_bytes, Some(0));
    }

    #[test]
    fn unknown_lag_and_optional_fields() {
        let body = br#"{"members":[{"name":"a","role":"replica","state":"streaming","lag":"unknown"},
            {"name":"b","role":"sync_standby","state":"streaming"}],"pause":true}"#;
        let v = parse_cluster(body).unwrap();
        assert!(v.paused);
        assert_eq!(v.members[0].lag_bytes, None);
        assert_eq!(v.members[0].state, PgState::Streaming);
        assert!(v.members[1].sync_standby);
        let minimal = parse_status(br#"{"state":"starting"}"#).unwrap();
        assert_eq!(minimal.role, Role::Other);
        assert_eq!(minimal.state, PgState::Starting);
    }

    #[test]
    fn patroni4_recorded_primary_replica_and_paused() {
        let p = parse_status(&fixture("patroni4/patroni-primary.json")).unwrap();
        assert_eq!(p.role, Role::Primary, "Patroni 4 says primary");
        assert_eq!(p.patroni_version.as_deref().map(|v| v.starts_with("4.")), Some(true));
        assert!(!p.paused);
        let paused = parse_status(&fixture("patroni4/patroni-primary-paused.json")).unwrap();
        assert!(paused.paused);
        let r = parse_status(&fixture("patroni4/patroni-replica.json")).unwrap();
        assert_eq!(r.role, Role::Replica);
        let view = parse_cluster(&fixture("patroni4/cluster.json")).unwrap();
        let p4b = view.members.iter().find(|m| m.name == "p4b").unwrap();
        assert_eq!(p4b.state, PgState::Streaming);
        assert_eq!(p4b.lag_bytes, Some(0));
        assert!(parse_cluster(&fixture("patroni4/cluster-paused.json")).unwrap().paused);
        let mut readings = BTreeMap::new();
        readings.insert("p4a".to_string(), MemberReading { status: Some(p) });
        readings.insert("p4b".to_string(), MemberReading { status: Some(r) });
        let s = summarize(&readings, Some(&view));
        assert_eq!(s.leader(), Some("p4a"));
        assert_eq!(s.members_running, 2);
        assert!(s.lag_bytes.contains_key("p4b"));
    }

    #[test]
    fn patroni4_documented_fields_not_in_the_recordings() {
        // Written from Patroni 4's documented format (not recorded): flags present only when
        // true, quorum sync state, "unknown" lag strings.
        let body = br#"{"state":"running","role":"primary","xlog":{"location":100},"timeline":3,
            "pending_restart":true,"cluster_unlocked":false,"failsafe_mode_is_active":true,
            "replication":[{"application_name":"b","state":"streaming","sync_state":"quorum"}]}"#;
        let s = parse_status(body).unwrap();
        assert!(s.pending_restart && s.failsafe_active && !s.cluster_unlocked);
        let mut readings = BTreeMap::new();
        readings.insert("a".to_string(), MemberReading { status: Some(s) });
        let replica = parse_status(br#"{"state":"running","role":"replica","xlog":{"received_location":90,"replayed_location":80},"timeline":3}"#).unwrap();
        readings.insert("b".to_string(), MemberReading { status: Some(replica) });
        let sum = summarize(&readings, None);
        assert_eq!(sum.lag_bytes.get("b"), Some(&20));
        assert_eq!(sum.sync_standbys, vec!["b".to_string()]);
        let view = parse_cluster(br#"{"members":[{"name":"b","role":"quorum_standby","state":"streaming","lag":"unknown","lsn":"unknown"}]}"#).unwrap();
        assert!(view.members[0].sync_standby);
        assert_eq!(view.members[0].lag_bytes, None);
    }

    #[test]
    fn two_primaries_are_split_brain_with_no_single_leader() {
        let mut readings = BTreeMap::new();
        for n in ["a", "b"] {
            let s = parse_status(br#"{"state":"running","role":"master","timeline":2}"#).unwrap();
            readings.insert(n.to_string(), MemberReading { status: Some(s) });
        }
        let s = summarize(&readings, None);
        assert_eq!(s.primaries.len(), 2);
        assert_eq!(s.leader(), None);
    }

    #[test]
    fn malformed_truncated_and_wrong_shaped_input_is_an_error_not_a_panic() {
        let healthy = fixture("healthy/patroni-node1.json");
        for cut in [0, 1, healthy.len() / 2, healthy.len() - 1] {
            assert!(parse_status(&healthy[..cut]).is_err(), "truncated at {cut}");
        }
        assert!(parse_status(b"<html>502 Bad Gateway</html>").is_err());
        assert!(parse_status(br#"{"role": 5}"#).is_err());
        assert!(parse_status(br#"[1,2,3]"#).is_err());
        assert!(parse_cluster(br#"{"members": "none"}"#).is_err());
        assert!(parse_cluster(&[0xff, 0xfe, 0x00]).is_err());
        // Deep nesting must not overflow the stack.
        let deep = "[".repeat(100_000);
        assert!(parse_status(deep.as_bytes()).is_err());
    }
}
