//! etcd, the DCS: each member's own status, the quorum, and Patroni's leader key.
//!
//! The member count for quorum comes from the member list and is remembered, so a stopped
//! member still counts against the quorum instead of silently shrinking the cluster.

use std::collections::BTreeMap;

use super::patroni::FoundMember;
use super::source::{Reading, TargetHealth};

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

/// What one round of etcd calls gave, applied whole.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdRound {
    /// Each endpoint's `status`, in configuration order.
    pub endpoints: Vec<(String, Reading<EndpointStatus>)>,
    /// The member list (id, name), when it answered.
    pub member_list: Option<Vec<(u64, String)>>,
    /// Patroni's keys, when some member answered for them.
    pub keys: Option<PatroniKeys>,
}

/// Patroni's keys under `<namespace>/<scope>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatroniKeys {
    pub members: Vec<FoundMember>,
    /// Only trusted when read from a member that is part of the quorum.
    pub leader_key: Option<LeaderKey>,
    pub from_quorum: bool,
}

/// One endpoint: its health and its latest status (`None` when its last call failed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    pub health: TargetHealth,
    pub status: Option<EndpointStatus>,
}

/// etcd as the exporter knows it from the rounds so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdView {
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Member id to name, from the member list (remembered).
    pub member_names: BTreeMap<u64, String>,
    /// Members in the cluster, from the latest member list that answered.
    pub member_count: usize,
    pub leader_key: Option<LeaderKey>,
    /// The keys were read from a member with a quorum (otherwise they may be stale).
    pub keys_from_quorum: bool,
    /// Raft leader changes seen (the leader id differing between rounds).
    pub leader_changes: u64,
    /// The raft leader last seen, to count changes.
    pub last_leader: Option<u64>,
}

/// Quorum as the exporter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub healthy: usize,
    pub members: usize,
    pub holds: bool,
}

impl EtcdView {
    pub fn new(endpoints: impl IntoIterator<Item = String>) -> Self {
        Self { endpoints: endpoints.into_iter().map(|e| (e, Endpoint::default())).collect(), ..Self::default() }
    }

    /// Some endpoint has been called: before that nothing is known, not even a lost quorum.
    pub fn polled(&self) -> bool {
        self.endpoints.values().any(|e| e.health.attempted())
    }

    fn statuses(&self) -> impl Iterator<Item = &EndpointStatus> {
        self.endpoints.values().filter_map(|e| e.status.as_ref())
    }

    pub fn quorum(&self) -> Quorum {
        let healthy = self.statuses().filter(|s| s.healthy()).count();
        let members = self.member_count.max(self.statuses().count());
        Quorum { healthy, members, holds: members > 0 && healthy > members / 2 }
    }

    pub fn leader_id(&self) -> Option<u64> {
        self.statuses().find(|s| s.is_leader()).map(|s| s.member_id)
    }

    /// A member's name from the member list, else its id in hex.
    pub fn member_name(&self, id: u64) -> String {
        self.member_names.get(&id).cloned().unwrap_or_else(|| format!("{id:x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn with(view: &mut EtcdView, endpoint: &str, s: Option<EndpointStatus>) {
        view.endpoints.entry(endpoint.into()).or_default().status = s;
    }

    #[test]
    fn quorum_counts_remembered_members_not_just_answers() {
        let mut v = EtcdView { member_count: 3, ..Default::default() };
        with(&mut v, "a", Some(status(1, 3, &[])));
        with(&mut v, "c", Some(status(3, 3, &[])));
        assert_eq!(v.quorum(), Quorum { healthy: 2, members: 3, holds: true });
        assert_eq!(v.leader_id(), Some(3));
        with(&mut v, "c", None);
        assert_eq!(v.quorum(), Quorum { healthy: 1, members: 3, holds: false });
        with(&mut v, "a", Some(status(1, 0, &["etcdserver: no leader"])));
        assert_eq!(v.quorum().healthy, 0);
        assert_eq!(v.leader_id(), None);
        assert_eq!(v.member_name(0x2a), "2a");
    }
}
