//! etcd, the DCS: each member's own status, quorum, and Patroni's keys under
//! `<namespace>/<scope>/`.
//!
//! One client per endpoint, because a client given several endpoints load-balances and its
//! `status()` would answer for whichever member it reached. Every call runs under a deadline: a
//! SIGSTOPped member accepts the TCP connection and then never answers.
//!
//! The member count for quorum comes from the member list and is remembered, so a stopped
//! member still counts against the quorum instead of silently shrinking the cluster.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use serde::Deserialize;

use super::ticker;
use crate::collect::patroni::api_base;
use crate::config::Secret;
use crate::state::{ClusterState, ErrorKind, FoundMember, Source};
use crate::timeline::EventKind;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Rpc(String),
    #[error("malformed member key {key}: {message}")]
    Parse { key: String, message: String },
}

impl EtcdError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EtcdError::Timeout(_) => ErrorKind::Timeout,
            EtcdError::Connect(_) => ErrorKind::Connect,
            EtcdError::Rpc(_) => ErrorKind::Rpc,
            EtcdError::Parse { .. } => ErrorKind::Parse,
        }
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        match e {
            etcd_client::Error::TransportError(t) => EtcdError::Connect(t.to_string()),
            etcd_client::Error::IoError(io) => EtcdError::Connect(io.to_string()),
            // etcd's gRPC status for a member it cannot reach is Unavailable.
            etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable => {
                EtcdError::Connect(s.message().to_string())
            }
            // tonic's own request deadline, should one fire before ours.
            etcd_client::Error::GRpcStatus(s)
                if s.code() == tonic::Code::DeadlineExceeded
                    || (s.code() == tonic::Code::Cancelled && s.message().contains("Timeout")) =>
            {
                EtcdError::Timeout(Duration::ZERO)
            }
            etcd_client::Error::GRpcStatus(s) => EtcdError::Rpc(s.message().to_string()),
            other => EtcdError::Rpc(other.to_string()),
        }
    }
}

async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map_err(EtcdError::from),
        Err(_) => Err(EtcdError::Timeout(deadline)),
    }
}

/// One member's answer to `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    pub member_id: u64,
    /// The raft leader this member follows; 0 when it has none.
    pub leader_id: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub db_size_bytes: i64,
    pub version: String,
    /// Errors the member reports about itself, e.g. `etcdserver: no leader`.
    pub errors: Vec<String>,
}

impl EndpointStatus {
    pub fn is_leader(&self) -> bool {
        self.member_id != 0 && self.member_id == self.leader_id
    }

    /// Part of a working quorum: it follows a leader and reports no error.
    pub fn healthy(&self) -> bool {
        self.leader_id != 0 && self.errors.is_empty()
    }
}

/// Patroni's leader key.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderKey {
    pub holder: String,
    pub lease_id: i64,
    /// Seconds left on its lease; `None` when the lease could not be read.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EtcdReading {
    /// Latest status by endpoint; absent when the endpoint did not answer.
    pub status: BTreeMap<String, EndpointStatus>,
    /// Member id to name, from the member list (remembered).
    pub member_names: BTreeMap<u64, String>,
    /// Members in the cluster, from the latest member list that answered.
    pub member_count: usize,
    /// Patroni's leader key, read from a member that is part of the quorum; `None` if absent or
    /// no such member answered.
    pub leader_key: Option<LeaderKey>,
    /// The keys were read from a member with a quorum (otherwise they may be stale).
    pub keys_from_quorum: bool,
    /// Raft leader changes seen (the leader id differing between rounds).
    pub leader_changes: u64,
}

/// Quorum as the exporter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub healthy: usize,
    pub members: usize,
    pub holds: bool,
}

impl EtcdReading {
    pub fn quorum(&self) -> Quorum {
        let healthy = self.status.values().filter(|s| s.healthy()).count();
        let members = self.member_count.max(self.status.len());
        Quorum { healthy, members, holds: members > 0 && healthy > members / 2 }
    }

    pub fn leader_id(&self) -> Option<u64> {
        self.status.values().find(|s| s.is_leader()).map(|s| s.member_id)
    }
}

#[derive(Deserialize)]
struct RawMemberKey {
    conn_url: Option<String>,
    api_url: Option<String>,
}

/// Parses Patroni's member key value (`<namespace>/<scope>/members/<name>`).
pub fn parse_member_key(name: &str, value: &[u8]) -> Result<FoundMember, EtcdError> {
    let parse_error = |message: String| EtcdError::Parse { key: name.to_string(), message };
    let raw: RawMemberKey = serde_json::from_slice(value).map_err(|e| parse_error(e.to_string()))?;
    let api_url = raw.api_url.ok_or_else(|| parse_error("no api_url".into()))?;
    Ok(FoundMember {
        name: name.to_string(),
        api_url: api_base(&api_url),
        postgres: raw.conn_url.as_deref().and_then(host_port),
    })
}

/// `postgres://host:port/db?x=y` to `host:port`.
fn host_port(conn_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(conn_url).ok()?;
    Some(format!("{}:{}", url.host_str()?, url.port().unwrap_or(5432)))
}

pub struct EtcdPoller {
    pub state: Arc<ClusterState>,
    pub endpoints: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub credentials: Option<(String, Secret)>,
    /// `<namespace>/<scope>/`
    pub prefix: String,
    clients: Vec<Option<Client>>,
    reading: EtcdReading,
    last_leader: Option<u64>,
}

impl EtcdPoller {
    pub fn new(
        state: Arc<ClusterState>,
        endpoints: Vec<String>,
        interval: Duration,
        timeout: Duration,
        credentials: Option<(String, Secret)>,
        namespace: &str,
    ) -> Self {
        for e in &endpoints {
            state.register_target(Source::Etcd, e);
        }
        let prefix = format!("{}/{}/", namespace.trim_end_matches('/'), state.scope);
        let clients = endpoints.iter().map(|_| None).collect();
        Self {
            state,
            endpoints,
            interval,
            timeout,
            credentials,
            prefix,
            clients,
            reading: EtcdReading::default(),
            last_leader: None,
        }
    }

    pub async fn run(mut self) {
        let mut tick = ticker(self.interval);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    async fn client(&mut self, i: usize) -> Result<Client, EtcdError> {
        if let Some(c) = &self.clients[i] {
            return Ok(c.clone());
        }
        // Request deadlines are ours (`within`), so a slow answer is always counted as a timeout.
        let mut options = ConnectOptions::new().with_connect_timeout(self.timeout);
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.expose().to_string());
        }
        let endpoint = self.endpoints[i].clone();
        let client = within(self.timeout, Client::connect([endpoint], Some(options))).await?;
        self.clients[i] = Some(client.clone());
        Ok(client)
    }

    pub async fn round(&mut self) {
        let deadline = self.timeout;
        let mut clients = Vec::new();
        for i in 0..self.endpoints.len() {
            clients.push(self.client(i).await);
        }
        let calls = clients.into_iter().map(|c| async move {
            let started = Instant::now();
            let result = match c {
                Ok(mut client) => within(deadline, client.status()).await.map(|s| {
                    let status = EndpointStatus {
                        member_id: s.header().map(|h| h.member_id()).unwrap_or(0),
                        leader_id: s.leader(),
                        raft_term: s.raft_term(),
                        raft_index: s.raft_index(),
                        db_size_bytes: s.db_size(),
                        version: s.version().to_string(),
                        errors: s.errors().to_vec(),
                    };
                    (client, status)
                }),
                Err(e) => Err(e),
            };
            (started.elapsed(), result)
        });
        let results = futures::future::join_all(calls).await;

        let mut best: Option<(u8, Client)> = None;
        self.reading.status.clear();
        for (endpoint, (elapsed, result)) in self.endpoints.iter().zip(results) {
            match result {
                Ok((client, status)) => {
                    self.state.record_poll(Source::Etcd, endpoint, elapsed, Ok(()));
                    // Read keys from the leader if possible, else from a healthy follower.
                    let rank = if status.is_leader() {
                        2
                    } else if status.healthy() {
                        1
                    } else {
                        0
                    };
                    if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                        best = Some((rank, client));
                    }
                    self.reading.status.insert(endpoint.clone(), status);
                }
                Err(e) => {
                    // A client whose channel broke is rebuilt next round.
                    if matches!(e, EtcdError::Connect(_)) {
                        if let Some(i) = self.endpoints.iter().position(|x| x == endpoint) {
                            self.clients[i] = None;
                        }
                    }
                    self.state.record_poll(Source::Etcd, endpoint, elapsed, Err((e.kind(), e.to_string())));
                }
            }
        }

        let leader = self.reading.leader_id();
        if let (Some(now), Some(before)) = (leader, self.last_leader) {
            if now != before {
                self.reading.leader_changes += 1;
                let name = |id: u64| self.reading.member_names.get(&id).cloned().unwrap_or_else(|| format!("{id:x}"));
                let detail = format!("{} -> {}", name(before), name(now));
                self.state.event(EventKind::EtcdLeaderChanged, Some(&name(now)), detail, Instant::now());
            }
        }
        if leader.is_some() {
            self.last_leader = leader;
        }

        match best {
            Some((rank, client)) => self.read_cluster(client, rank >= 1).await,
            None => {
                self.reading.leader_key = None;
                self.reading.keys_from_quorum = false;
            }
        }
        self.state.write().etcd = Some(self.reading.clone());
        self.state.finish_round(Source::Etcd);
    }

    /// Member list and Patroni's keys, from one member.
    async fn read_cluster(&mut self, mut client: Client, has_quorum: bool) {
        let deadline = self.timeout;
        match within(deadline, client.member_list()).await {
            Ok(list) => {
                self.reading.member_count = list.members().len();
                for m in list.members() {
                    self.reading.member_names.insert(m.id(), m.name().to_string());
                }
            }
            Err(e) => tracing::debug!(scope = %self.state.scope, error = %e, "etcd member list failed"),
        }
        // Serializable: a member without quorum still answers (from its possibly stale copy),
        // which keeps discovery going; the leader key is only trusted from a quorum member.
        let options = GetOptions::new().with_prefix().with_serializable();
        let kvs = match within(deadline, client.get(self.prefix.clone(), Some(options))).await {
            Ok(r) => r.kvs().to_vec(),
            Err(e) => {
                tracing::debug!(scope = %self.state.scope, error = %e, "reading Patroni keys failed");
                self.reading.leader_key = None;
                self.reading.keys_from_quorum = false;
                return;
            }
        };
        let mut found = Vec::new();
        let mut leader_key = None;
        for kv in &kvs {
            let Some(rest) = kv.key().strip_prefix(self.prefix.as_bytes()) else { continue };
            let rest = String::from_utf8_lossy(rest);
            if let Some(name) = rest.strip_prefix("members/") {
                match parse_member_key(name, kv.value()) {
                    Ok(m) => found.push(m),
                    Err(e) => tracing::warn!(scope = %self.state.scope, error = %e, "skipping member key"),
                }
            } else if rest == "leader" {
                leader_key = Some(LeaderKey {
                    holder: String::from_utf8_lossy(kv.value()).into_owned(),
                    lease_id: kv.lease(),
                    ttl_seconds: None,
                });
            }
        }
        self.state.observe_members(found, Instant::now());
        if let Some(key) = leader_key.as_mut().filter(|k| has_quorum && k.lease_id != 0) {
            // Lease time-to-live is served by the raft leader: it fails without quorum.
            match within(deadline, client.lease_time_to_live(key.lease_id, None)).await {
                Ok(ttl) if ttl.ttl() >= 0 => key.ttl_seconds = Some(ttl.ttl()),
                Ok(_) => {}
                Err(e) => tracing::debug!(scope = %self.state.scope, error = %e, "lease time-to-live failed"),
            }
        }
        self.reading.leader_key = if has_quorum { leader_key } else { None };
        self.reading.keys_from_quorum = has_quorum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn member_key_gives_rest_and_postgres_addresses() {
        let m = parse_member_key("node2", &fixture("healthy/etcd-member-node2.json")).unwrap();
        assert_eq!(m.api_url, "http://127.0.0.22:18008");
        assert_eq!(m.postgres.as_deref(), Some("127.0.0.22:15432"));
    }

    #[test]
    fn malformed_member_keys_are_errors() {
        for bad in [&b"{"[..], b"null", b"{\"conn_url\": 5}", b"{\"conn_url\":\"postgres://h:1/x\"}"] {
            let e = parse_member_key("x", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Parse);
        }
    }

    fn status(id: u64, leader: u64, errors: &[&str]) -> EndpointStatus {
        EndpointStatus {
            member_id: id,
            leader_id: leader,
            raft_term: 2,
            raft_index: 10,
            db_size_bytes: 1,
            version: "3.4.23".into(),
            errors: errors.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn quorum_counts_remembered_members_not_just_answers() {
        let mut r = EtcdReading { member_count: 3, ..Default::default() };
        r.status.insert("a".into(), status(1, 3, &[]));
        r.status.insert("c".into(), status(3, 3, &[]));
        assert_eq!(r.quorum(), Quorum { healthy: 2, members: 3, holds: true });
        assert_eq!(r.leader_id(), Some(3));
        r.status.remove("c");
        assert_eq!(r.quorum(), Quorum { healthy: 1, members: 3, holds: false });
        r.status.insert("a".into(), status(1, 0, &["etcdserver: no leader"]));
        assert_eq!(r.quorum().healthy, 0);
        assert_eq!(r.leader_id(), None);
    }
}
