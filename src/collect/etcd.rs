//! etcd, the DCS: each member's own status, the member list, and Patroni's keys under
//! `<namespace>/<scope>/`.
//!
//! One client per endpoint, because a client given several endpoints load-balances and its
//! `status()` would answer for whichever member it reached. Every call runs under a deadline: a
//! SIGSTOPped member accepts the TCP connection and then never answers. A round's answers are
//! applied to the state as one [`EtcdRound`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use serde::Deserialize;

use crate::config::{BasicCredentials, EtcdPlan};
use crate::model::address::HostPort;
use crate::model::etcd::{EndpointStatus, EtcdRound, LeaderKey, PatroniKeys};
use crate::model::patroni::{api_base, FoundMember};
use crate::model::source::{ErrorKind, Reading, TargetError};
use crate::model::text::bounded;

/// Errors kept from one member's status, at most.
const MAX_STATUS_ERRORS: usize = 8;
use crate::state::ClusterState;
use crate::tasks::ticker;

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

impl From<EtcdError> for TargetError {
    fn from(e: EtcdError) -> Self {
        TargetError::new(e.kind(), e.to_string())
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

/// An etcd call under our own deadline, so a slow answer is always counted as a timeout.
pub async fn etcd_call<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map_err(EtcdError::from),
        Err(_) => Err(EtcdError::Timeout(deadline)),
    }
}

/// Options for a client of one endpoint (request deadlines are ours, see [`etcd_call`]).
pub fn connect_options(timeout: Duration, credentials: Option<&BasicCredentials>) -> ConnectOptions {
    let options = ConnectOptions::new().with_connect_timeout(timeout);
    match credentials {
        Some(c) => options.with_user(c.username.clone(), c.password.expose().to_string()),
        None => options,
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
        name: bounded(name),
        api_url: api_base(&api_url),
        postgres: raw.conn_url.as_deref().and_then(postgres_address_of),
    })
}

/// `postgres://host:port/db?x=y` to its address.
fn postgres_address_of(conn_url: &str) -> Option<HostPort> {
    let url = reqwest::Url::parse(conn_url).ok()?;
    Some(HostPort { host: url.host_str()?.trim_matches(['[', ']']).to_string(), port: url.port().unwrap_or(5432) })
}

/// Patroni's keys from the prefix's key-values; malformed member keys are skipped and named.
pub fn parse_keys(
    prefix: &[u8],
    kvs: &[etcd_client::KeyValue],
) -> (Vec<FoundMember>, Option<LeaderKey>, Vec<EtcdError>) {
    let (mut found, mut leader, mut bad) = (Vec::new(), None, Vec::new());
    for kv in kvs {
        let Some(rest) = kv.key().strip_prefix(prefix) else { continue };
        let rest = String::from_utf8_lossy(rest);
        if let Some(name) = rest.strip_prefix("members/") {
            match parse_member_key(name, kv.value()) {
                Ok(m) => found.push(m),
                Err(e) => bad.push(e),
            }
        } else if rest == "leader" {
            let holder = bounded(&String::from_utf8_lossy(kv.value()));
            leader = Some(LeaderKey { holder, lease_id: kv.lease(), ttl_seconds: None });
        }
    }
    (found, leader, bad)
}

fn endpoint_status(s: &etcd_client::StatusResponse) -> EndpointStatus {
    EndpointStatus {
        member_id: s.header().map(|h| h.member_id()).unwrap_or(0),
        leader_id: s.leader(),
        raft_term: s.raft_term(),
        raft_index: s.raft_index(),
        db_size_bytes: s.db_size(),
        version: bounded(s.version()),
        errors: s.errors().iter().take(MAX_STATUS_ERRORS).map(|e| bounded(e)).collect(),
    }
}

/// One cluster's etcd loop.
pub struct EtcdPoller {
    state: Arc<ClusterState>,
    plan: EtcdPlan,
    /// `<namespace>/<scope>/`
    prefix: String,
    clients: Vec<Option<Client>>,
    /// Malformed member keys already warned about (each once, while it stays malformed).
    malformed: std::collections::BTreeSet<String>,
}

impl EtcdPoller {
    pub fn new(state: Arc<ClusterState>, plan: EtcdPlan) -> Self {
        let prefix = state.plan.key_prefix.clone();
        let clients = plan.endpoints.iter().map(|_| None).collect();
        Self { state, plan, prefix, clients, malformed: Default::default() }
    }

    pub async fn run(mut self) {
        let mut tick = ticker(self.plan.polling.interval);
        loop {
            tick.tick().await;
            let round = self.round().await;
            self.state.apply_etcd(round);
        }
    }

    async fn client(&mut self, i: usize) -> Result<Client, EtcdError> {
        if let Some(c) = &self.clients[i] {
            return Ok(c.clone());
        }
        let timeout = self.plan.polling.timeout;
        let options = connect_options(timeout, self.plan.credentials.as_ref());
        let endpoint = self.plan.endpoints[i].clone();
        let client = etcd_call(timeout, Client::connect([endpoint], Some(options))).await?;
        self.clients[i] = Some(client.clone());
        Ok(client)
    }

    /// Every endpoint's status at once, then the member list and Patroni's keys from the best
    /// member that answered: the leader, else a healthy follower, else any.
    async fn round(&mut self) -> EtcdRound {
        let timeout = self.plan.polling.timeout;
        let mut clients = Vec::new();
        for i in 0..self.plan.endpoints.len() {
            clients.push(self.client(i).await);
        }
        let calls = clients.into_iter().map(|c| async move {
            let started = Instant::now();
            let result = match c {
                Ok(mut client) => etcd_call(timeout, client.status()).await.map(|s| (client, endpoint_status(&s))),
                Err(e) => Err(e),
            };
            (started, Instant::now(), result)
        });
        let results = futures::future::join_all(calls).await;
        let mut best: Option<(u8, Client)> = None;
        let mut endpoints = Vec::new();
        for (i, (started, at, result)) in results.into_iter().enumerate() {
            let result = match result {
                Ok((client, status)) => {
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
                    Ok(status)
                }
                Err(e) => {
                    // A client whose channel broke is rebuilt next round.
                    if matches!(e, EtcdError::Connect(_)) {
                        self.clients[i] = None;
                    }
                    Err(TargetError::from(e))
                }
            };
            let reading = Reading { at, duration: at - started, result };
            endpoints.push((self.plan.endpoints[i].clone(), reading));
        }
        let (member_list, keys) = match best {
            Some((rank, client)) => self.read_cluster(client, rank >= 1).await,
            None => (None, None),
        };
        EtcdRound { endpoints, member_list, keys }
    }

    /// Member list and Patroni's keys, from one member.
    async fn read_cluster(
        &mut self,
        mut client: Client,
        has_quorum: bool,
    ) -> (Option<Vec<(u64, String)>>, Option<PatroniKeys>) {
        let (timeout, scope) = (self.plan.polling.timeout, self.state.scope());
        let member_list = match etcd_call(timeout, client.member_list()).await {
            Ok(list) => Some(list.members().iter().map(|m| (m.id(), bounded(m.name()))).collect()),
            Err(e) => {
                tracing::debug!(scope = %scope, error = %e, "etcd member list failed");
                None
            }
        };
        // Serializable: a member without quorum still answers (from its possibly stale copy),
        // which keeps discovery going; the leader key is only trusted from a quorum member.
        let options = GetOptions::new().with_prefix().with_serializable();
        let kvs = match etcd_call(timeout, client.get(self.prefix.clone(), Some(options))).await {
            Ok(r) => r.kvs().to_vec(),
            Err(e) => {
                tracing::debug!(scope = %scope, error = %e, "reading Patroni keys failed");
                return (member_list, None);
            }
        };
        let (members, mut leader_key, bad) = parse_keys(self.prefix.as_bytes(), &kvs);
        let mut still = std::collections::BTreeSet::new();
        for e in bad {
            if let EtcdError::Parse { key, .. } = &e {
                if !self.malformed.contains(key) {
                    tracing::warn!(scope = %scope, error = %e, "skipping member key");
                }
                still.insert(key.clone());
            }
        }
        self.malformed = still;
        if let Some(key) = leader_key.as_mut().filter(|k| has_quorum && k.lease_id != 0) {
            // Lease time-to-live is served by the raft leader: it fails without quorum.
            match etcd_call(timeout, client.lease_time_to_live(key.lease_id, None)).await {
                Ok(ttl) if ttl.ttl() >= 0 => key.ttl_seconds = Some(ttl.ttl()),
                Ok(_) => {}
                Err(e) => tracing::debug!(scope = %scope, error = %e, "lease time-to-live failed"),
            }
        }
        (member_list, Some(PatroniKeys { members, leader_key, from_quorum: has_quorum }))
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
        assert_eq!(m.postgres.map(|p| p.to_string()).as_deref(), Some("127.0.0.22:15432"));
    }

    #[test]
    fn malformed_member_keys_are_errors() {
        for bad in [&b"{"[..], b"null", b"{\"conn_url\": 5}", b"{\"conn_url\":\"postgres://h:1/x\"}"] {
            let e = parse_member_key("x", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Parse);
        }
    }
}
