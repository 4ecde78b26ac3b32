//! Patroni's REST API: every member's own `GET /patroni`, each member in its own task, and
//! `GET /cluster` (the DCS view, and the members when no etcd is configured) from the
//! configured discovery URLs or from a member.

use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;

use super::http::{FetchError, HttpCaller};
use super::timed;
use crate::model::address::HostPort;
use crate::model::patroni::{api_base, ClusterView, MemberStatus, PgState, Replication, Role, ViewMember};
use crate::model::source::{ErrorKind, TargetError};
use crate::model::text::bounded;
use crate::state::ClusterState;
use crate::tasks::{Pace, TaskSet};

#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("malformed JSON: {0}")]
    Parse(#[from] serde_json::Error),
}

impl From<PatroniError> for TargetError {
    fn from(e: PatroniError) -> Self {
        let kind = match &e {
            PatroniError::Fetch(f) => f.kind(),
            PatroniError::Parse(_) => ErrorKind::Parse,
        };
        TargetError::new(kind, e.to_string())
    }
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
        patroni_version: raw.patroni.and_then(|p| p.version).map(|v| bounded(&v)),
        replication: raw
            .replication
            .into_iter()
            .map(|r| Replication {
                application_name: bounded(&r.application_name.unwrap_or_default()),
                state: bounded(&r.state.unwrap_or_default()),
                sync_state: bounded(&r.sync_state.unwrap_or_default()),
            })
            .collect(),
    })
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

/// Parses `GET /cluster`.
pub fn parse_cluster(body: &[u8]) -> Result<ClusterView, serde_json::Error> {
    let raw: RawCluster = serde_json::from_slice(body)?;
    let member = |m: RawViewMember| {
        let role_text = m.role.unwrap_or_default();
        ViewMember {
            name: bounded(&m.name),
            role: Role::parse(&role_text),
            sync_standby: matches!(role_text.as_str(), "sync_standby" | "quorum_standby"),
            state: m.state.as_deref().map(PgState::parse).unwrap_or(PgState::Other),
            api_url: m.api_url.map(|u| api_base(&u)),
            postgres: match (m.host, m.port) {
                (Some(host), Some(port)) => Some(HostPort { host, port }),
                _ => None,
            },
            timeline: m.timeline,
            lag_bytes: m.lag.and_then(|v| v.as_u64()),
        }
    };
    Ok(ClusterView { paused: raw.pause, members: raw.members.into_iter().map(member).collect() })
}

async fn fetch_status(http: &HttpCaller, api: &str) -> Result<MemberStatus, PatroniError> {
    Ok(parse_status(&http.get(&format!("{api}/patroni")).await?)?)
}

async fn fetch_view(http: &HttpCaller, api: &str) -> Result<ClusterView, PatroniError> {
    Ok(parse_cluster(&http.get(&format!("{api}/cluster")).await?)?)
}

/// One member's loop: its own `GET /patroni` every interval, applied as one reading.
async fn poll_member(state: Arc<ClusterState>, http: HttpCaller, pace: Pace, name: String, api: String) {
    loop {
        let began = Instant::now();
        let reading = timed(fetch_status(&http, &api)).await;
        state.apply_member(&name, &api, reading);
        state.cadence.next_round(began, pace).await;
    }
}

/// Keeps one polling task per known member (a member that moved to another address gets a new
/// one), checking as often as `reconcile_pace` says (no call: it reads the state).
pub async fn supervise_members(state: Arc<ClusterState>, http: HttpCaller, pace: Pace) {
    let mut members = TaskSet::new(format!("{}: Patroni member", state.scope()));
    loop {
        let began = Instant::now();
        let stopped = members.reconcile(state.member_targets(), |(name, api)| {
            poll_member(state.clone(), http.clone(), pace, name.clone(), api.clone())
        });
        state.note_restarts("patroni_member", stopped);
        state.cadence.next_round(began, crate::tasks::reconcile_pace(pace.calm)).await;
    }
}

/// `/cluster` every interval, from the primary (any member that answers, when none claims it)
/// and from every discovery URL at once. Each discovery URL is a target; the view kept is the
/// member's, else the first discovery URL's that answered.
pub async fn watch_cluster_view(state: Arc<ClusterState>, http: HttpCaller, pace: Pace) {
    // A member whose /cluster is malformed is warned about once, until it answers well again.
    let mut malformed_from: Option<String> = None;
    let mut began: Option<Instant> = None;
    loop {
        if let Some(began) = began {
            state.cadence.next_round(began, pace).await;
        }
        began = Some(Instant::now());
        let urls = &state.plan.patroni.discovery_urls;
        let malformed = &mut malformed_from;
        let from_member = async {
            let api = state.view_source()?;
            match fetch_view(&http, &api).await {
                Ok(view) => {
                    *malformed = None;
                    Some(view)
                }
                Err(PatroniError::Parse(e)) => {
                    if malformed.as_ref() != Some(&api) {
                        tracing::warn!(scope = %state.scope(), url = %api, error = %e, "malformed /cluster");
                        *malformed = Some(api);
                    }
                    None
                }
                Err(e) => {
                    tracing::debug!(scope = %state.scope(), url = %api, error = %e, "/cluster failed");
                    None
                }
            }
        };
        let from_urls = futures::future::join_all(urls.iter().map(|u| timed(fetch_view(&http, u))));
        let (mut view, readings) = futures::join!(from_member, from_urls);
        for (url, reading) in urls.iter().zip(readings) {
            let answer = state.apply_discovery_url(url, reading);
            view = view.or(answer);
        }
        if let Some(view) = view {
            state.apply_view(view, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::patroni::{summarize, Summary};
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn sum(m: &BTreeMap<String, Option<MemberStatus>>, view: Option<&ClusterView>) -> Summary {
        summarize(m.iter().map(|(n, s)| (n.as_str(), s.as_ref())), view)
    }

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn readings(state_dir: &str) -> BTreeMap<String, Option<MemberStatus>> {
        ["node1", "node2", "node3"]
            .iter()
            .map(|n| {
                let path = format!("{}/tests/fixtures/{state_dir}/patroni-{n}.json", env!("CARGO_MANIFEST_DIR"));
                let status = std::fs::read(path).ok().map(|b| parse_status(&b).unwrap());
                (n.to_string(), status)
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
        let s = sum(&readings("healthy"), Some(&view));
        assert_eq!(s.primaries, vec!["node1".to_string()]);
        assert_eq!(s.leader(), Some("node1"));
        assert_eq!((s.members_total, s.members_running), (3, 3));
        assert_eq!(s.max_timeline, Some(1));
        assert_eq!(s.lag_bytes.keys().collect::<Vec<_>>(), ["node2", "node3"]);
        assert!(!s.unlocked);
    }

    #[test]
    fn stopped_replica_leaves_the_leader_alone() {
        let s = sum(&readings("replica-stopped"), None);
        assert_eq!(s.leader(), Some("node1"));
        assert_eq!((s.members_total, s.members_running), (3, 2));
        assert!(!s.lag_bytes.contains_key("node3"));
    }

    #[test]
    fn leader_stopped_gives_a_new_leader_on_a_new_timeline() {
        let s = sum(&readings("leader-stopped"), None);
        let leader = s.leader().expect("a new leader").to_string();
        assert_ne!(leader, "node1");
        assert_eq!(s.max_timeline, Some(2));
        assert_eq!(s.members_running, 2);
    }

    #[test]
    fn quorum_loss_own_answers_show_no_primary_while_cluster_view_is_stale() {
        let s = sum(&readings("etcd-quorum-lost"), None);
        assert!(s.primaries.is_empty(), "every member demoted itself: {:?}", s.primaries);
        let view = parse_cluster(&fixture("etcd-quorum-lost/cluster-from-node1.json")).unwrap();
        assert!(view.members.iter().any(|m| m.role == Role::Primary), "the DCS view still names the old leader");
    }

    #[test]
    fn cluster_view_gives_addresses_for_discovery() {
        let view = parse_cluster(&fixture("healthy/cluster-from-node2.json")).unwrap();
        let n3 = view.members.iter().find(|m| m.name == "node3").unwrap();
        assert_eq!(n3.api_url.as_deref(), Some("http://127.0.0.23:18008"));
        assert_eq!(n3.postgres.as_ref().map(|p| p.to_string()).as_deref(), Some("127.0.0.23:15432"));
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
        readings.insert("p4a".to_string(), Some(p));
        readings.insert("p4b".to_string(), Some(r));
        let s = sum(&readings, Some(&view));
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
        readings.insert("a".to_string(), Some(s));
        let replica = parse_status(br#"{"state":"running","role":"replica","xlog":{"received_location":90,"replayed_location":80},"timeline":3}"#).unwrap();
        readings.insert("b".to_string(), Some(replica));
        let sum = sum(&readings, None);
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
            readings.insert(n.to_string(), Some(s));
        }
        let s = sum(&readings, None);
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

    /// A loopback REST API answering every request with `body`, or, without one, accepting
    /// connections and never answering (a frozen member).
    async fn member_api(body: Option<Vec<u8>>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let Some(body) = body.clone() else {
                    held.push(s);
                    continue;
                };
                tokio::spawn(async move {
                    let _ = s.read(&mut [0u8; 4096]).await;
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(&[head.as_bytes(), &body].concat()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_frozen_member_delays_no_other_members_reading() {
        let (live, frozen) = (member_api(Some(fixture("healthy/patroni-node1.json"))).await, member_api(None).await);
        let yaml = format!(
            "clusters:\n  - scope: s\n    patroni:\n      timeout: 3s\n      interval: 100ms\n      members:\n        \
             - {{name: live, api_url: '{live}'}}\n        - {{name: frozen, api_url: '{frozen}'}}\n"
        );
        let plan = crate::config::Config::parse(&yaml).unwrap().clusters.remove(0);
        let state = Arc::new(ClusterState::new(plan, None));
        let http = HttpCaller {
            client: crate::collect::http::http_client(None),
            timeout: Duration::from_secs(3),
            max_body_bytes: 1 << 20,
            auth: None,
        };
        let started = Instant::now();
        let pace = Pace { fine: Duration::from_millis(100), calm: Duration::from_millis(100) };
        let task = tokio::spawn(supervise_members(state.clone(), http, pace));
        while state.read().members["live"].health.last_poll.is_none_or(|at| at < started + Duration::from_millis(500)) {
            assert!(started.elapsed() < Duration::from_secs(2), "the live member's readings are held up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let data = state.read();
        assert!(data.members["live"].status.as_ref().is_some_and(|s| s.is_primary()));
        assert!(!data.members["frozen"].health.attempted(), "the frozen member's first call waits on its 3 s deadline");
        drop(data);
        task.abort();
    }
}
