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

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use serde::Deserialize;

use crate::config::tls::tls_failure;
use crate::config::{EtcdPlan, TlsPlan};
use crate::model::address::HostPort;
use crate::model::etcd::{EndpointStatus, EtcdRound, LeaderKey, PatroniKeys};
use crate::model::patroni::{api_base, FoundMember};
use crate::model::source::{ErrorKind, Reading, TargetError};
use crate::model::text::bounded;

/// Errors kept from one member's status, at most.
const MAX_STATUS_ERRORS: usize = 8;
use crate::state::ClusterState;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Rpc(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("permission denied: {0}")]
    Permission(String),
    #[error("malformed member key {key}: {message}")]
    Parse { key: String, message: String },
}

impl EtcdError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EtcdError::Timeout(_) => ErrorKind::Timeout,
            EtcdError::Connect(_) => ErrorKind::Connect,
            EtcdError::Rpc(_) => ErrorKind::Rpc,
            EtcdError::Tls(_) => ErrorKind::Tls,
            EtcdError::Auth(_) => ErrorKind::Auth,
            EtcdError::Permission(_) => ErrorKind::Permission,
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
        if let Some(why) = tls_failure(&e) {
            return EtcdError::Tls(why);
        }
        match e {
            etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => {
                EtcdError::Permission(s.message().to_string())
            }
            etcd_client::Error::GRpcStatus(s)
                if s.code() == tonic::Code::Unauthenticated
                    || (s.code() == tonic::Code::InvalidArgument && s.message().contains("authentication failed")) =>
            {
                EtcdError::Auth(s.message().to_string())
            }
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

/// Options for a client of one endpoint (request deadlines are ours, see [`etcd_call`]): its
/// credentials, and for an `https` endpoint the TLS setup (the system's roots without one).
pub fn connect_options(timeout: Duration, plan: &EtcdPlan, endpoint: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new().with_connect_timeout(timeout);
    if let Some(c) = &plan.credentials {
        options = options.with_user(c.username.clone(), c.password.expose().to_string());
    }
    if endpoint.starts_with("https://") {
        options = options.with_tls(tls_options(plan.tls.as_ref()));
    }
    options
}

fn tls_options(plan: Option<&TlsPlan>) -> TlsOptions {
    let Some(plan) = plan else { return TlsOptions::new().with_native_roots() };
    let mut options = match &plan.ca_pem {
        Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(ca)),
        None => TlsOptions::new().with_native_roots(),
    };
    if let Some(id) = &plan.identity {
        options = options.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    match &plan.server_name {
        Some(name) => options.domain_name(name.clone()),
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

/// How good a member is to read the member list and Patroni's keys from, after its status
/// call: the leader 3, a healthy follower 2, any other member that answered 1, and one whose
/// user may not call `Status` (some etcd releases refuse it to non-root users) 0, as the keys
/// may still be read there; a member that did not answer cannot be read from.
fn rank(status: &Result<EndpointStatus, EtcdError>) -> Option<u8> {
    match status {
        Ok(s) if s.is_leader() => Some(3),
        Ok(s) if s.healthy() => Some(2),
        Ok(_) => Some(1),
        Err(EtcdError::Permission(_)) => Some(0),
        Err(_) => None,
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
    /// Each endpoint's last TLS diagnosis (when, what it found), reused for a while: a
    /// diagnosis costs a handshake and a wait, and an endpoint that keeps failing should not
    /// slow every round.
    diagnosed: Vec<Option<(Instant, Option<String>)>>,
}

/// How long a TLS diagnosis stands.
const DIAGNOSIS_KEPT: Duration = Duration::from_secs(10);

impl EtcdPoller {
    pub fn new(state: Arc<ClusterState>, plan: EtcdPlan) -> Self {
        let prefix = state.plan.key_prefix.clone();
        let clients = plan.endpoints.iter().map(|_| None).collect();
        let diagnosed = plan.endpoints.iter().map(|_| None).collect();
        Self { state, plan, prefix, clients, malformed: Default::default(), diagnosed }
    }

    pub async fn run(mut self) {
        loop {
            let began = std::time::Instant::now();
            let round = self.round().await;
            self.state.apply_etcd(round);
            self.state.cadence.next_round(began, self.plan.polling.pace()).await;
        }
    }

    async fn client(&mut self, i: usize) -> Result<Client, EtcdError> {
        if let Some(c) = &self.clients[i] {
            return Ok(c.clone());
        }
        let timeout = self.plan.polling.timeout;
        let endpoint = self.plan.endpoints[i].clone();
        let options = connect_options(timeout, &self.plan, &endpoint);
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
            let (client, result) = match c {
                Ok(mut client) => {
                    let status = etcd_call(timeout, client.status()).await.map(|s| endpoint_status(&s));
                    (Some(client), status)
                }
                Err(e) => (None, Err(e)),
            };
            (started, Instant::now(), client, result)
        });
        let mut results = futures::future::join_all(calls).await;
        self.explain_tls_failures(&mut results).await;
        let mut best: Option<(u8, Client)> = None;
        let mut endpoints = Vec::new();
        for (i, (started, at, client, result)) in results.into_iter().enumerate() {
            if let (Some(rank), Some(client)) = (rank(&result), client) {
                if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                    best = Some((rank, client));
                }
            }
            // A client whose channel broke is rebuilt next round.
            if matches!(result, Err(EtcdError::Connect(_) | EtcdError::Tls(_))) {
                self.clients[i] = None;
            }
            let reading = Reading { at, duration: at - started, result: result.map_err(TargetError::from) };
            endpoints.push((self.plan.endpoints[i].clone(), reading));
        }
        let (member_list, keys) = match best {
            Some((rank, client)) => self.read_cluster(client, rank >= 2).await,
            None => (None, None),
        };
        EtcdRound { endpoints, member_list, keys }
    }

    /// A call to an https endpoint that failed on a connection closed without a reason may have
    /// been refused by TLS after the handshake: one handshake of our own tells.
    async fn explain_tls_failures<T>(
        &mut self,
        results: &mut [(Instant, Instant, T, Result<EndpointStatus, EtcdError>)],
    ) {
        let Some(plan) = &self.plan.tls else { return };
        let (timeout, now) = (self.plan.polling.timeout, Instant::now());
        let diagnosed = &self.diagnosed;
        let checks =
            results.iter().zip(&self.plan.endpoints).enumerate().map(|(i, ((_, _, _, result), endpoint))| async move {
                let unexplained = matches!(result, Err(EtcdError::Connect(_) | EtcdError::Rpc(_)));
                if !unexplained || !endpoint.starts_with("https://") {
                    return None;
                }
                match &diagnosed[i] {
                    Some((at, why)) if now.duration_since(*at) < DIAGNOSIS_KEPT => Some(why.clone()),
                    _ => Some(super::tls_check::diagnose(endpoint, plan, timeout).await),
                }
            });
        let found = futures::future::join_all(checks).await;
        for (i, diagnosis) in found.into_iter().enumerate() {
            let Some(why) = diagnosis else { continue };
            if self.diagnosed[i].as_ref().is_none_or(|(at, _)| now.duration_since(*at) >= DIAGNOSIS_KEPT) {
                self.diagnosed[i] = Some((now, why.clone()));
            }
            if let Some(why) = why {
                results[i].3 = Err(EtcdError::Tls(why));
            }
        }
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

    /// etcd 3.5.28 and 3.6.9 refuse `Status` to a user without the root role with this status
    /// (etcd-io/etcd#21666); the lab's 3.4 never does, so the refusal is built here.
    #[test]
    fn a_refused_status_call_is_kind_permission_and_its_member_can_still_be_read() {
        let refused = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied("etcdserver: permission denied"));
        let e = EtcdError::from(refused);
        assert_eq!(e.kind(), ErrorKind::Permission);
        assert_eq!(e.to_string(), "permission denied: etcdserver: permission denied");
        let status = |member_id, leader_id| EndpointStatus {
            member_id,
            leader_id,
            raft_term: 2,
            raft_index: 9,
            db_size_bytes: 1,
            version: "3.5.28".into(),
            errors: vec![],
        };
        let ranks = [
            rank(&Ok(status(1, 1))),
            rank(&Ok(status(2, 1))),
            rank(&Ok(status(2, 0))),
            rank(&Err(e)),
            rank(&Err(EtcdError::Connect("refused".into()))),
        ];
        assert_eq!(ranks, [Some(3), Some(2), Some(1), Some(0), None]);
        let login = etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        assert_eq!(EtcdError::from(login).kind(), ErrorKind::Auth);
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
