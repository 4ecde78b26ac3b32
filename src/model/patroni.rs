//! Patroni: a member's own status (`GET /patroni`), the DCS view (`GET /cluster`), and the
//! cluster as the members' own answers describe it.
//!
//! A member's own answer is the only truthful view during a DCS outage: `/cluster` keeps naming
//! the last leader even after it demoted itself. So roles, the leader and split brain are judged
//! from the members' own answers ([`summarize`]); the DCS view is kept apart. Patroni 3 says
//! `master`, Patroni 4 says `primary`; both are [`Role::Primary`].

use std::collections::BTreeMap;

use super::address::HostPort;

label_enum! {
    /// A member's role, as it says itself: the `role` label.
    pub enum Role {
        Primary = "primary",
        Replica = "replica",
        StandbyLeader = "standby_leader",
        Other = "other",
    }
}

impl Role {
    pub fn parse(s: &str) -> Role {
        match s {
            "master" | "primary" | "leader" => Role::Primary,
            "replica" | "sync_standby" | "quorum_standby" => Role::Replica,
            "standby_leader" | "standby-leader" => Role::StandbyLeader,
            _ => Role::Other,
        }
    }
}

label_enum! {
    /// PostgreSQL's state as Patroni reports it, folded into a fixed set: the `state` label.
    pub enum PgState {
        Running = "running",
        Streaming = "streaming",
        InArchiveRecovery = "in_archive_recovery",
        Starting = "starting",
        Stopping = "stopping",
        Stopped = "stopped",
        Crashed = "crashed",
        Restarting = "restarting",
        Other = "other",
    }
}

impl PgState {
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

impl MemberStatus {
    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary
    }

    /// A status with only a role, a state and a timeline, for tests.
    #[cfg(test)]
    pub fn bare(role: Role, state: PgState, timeline: u64) -> Self {
        MemberStatus {
            role,
            state,
            timeline: Some(timeline),
            wal_location: None,
            received_location: None,
            replayed_location: None,
            pending_restart: false,
            paused: false,
            cluster_unlocked: false,
            failsafe_active: false,
            patroni_version: None,
            replication: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    pub application_name: String,
    pub state: String,
    pub sync_state: String,
}

/// Patroni's DCS view from `GET /cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub members: Vec<ViewMember>,
    pub paused: bool,
}

impl ClusterView {
    /// The members it lists with a REST address, as discovery knows them.
    pub fn found_members(&self) -> Vec<FoundMember> {
        self.members
            .iter()
            .filter_map(|m| {
                Some(FoundMember { name: m.name.clone(), api_url: m.api_url.clone()?, postgres: m.postgres.clone() })
            })
            .collect()
    }
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
    pub postgres: Option<HostPort>,
    pub timeline: Option<u64>,
    /// `None` when Patroni says `"unknown"` or leaves it out.
    pub lag_bytes: Option<u64>,
}

/// A member found by one discovery answer (Patroni's keys in etcd, or `/cluster`).
#[derive(Debug, Clone, PartialEq)]
pub struct FoundMember {
    pub name: String,
    /// Base URL of its REST API, without a path.
    pub api_url: String,
    pub postgres: Option<HostPort>,
}

/// Patroni advertises `http://host:8008/patroni`; the base URL is what paths are added to.
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

/// Sums up every known member's latest own answer (`None`: it did not answer).
pub fn summarize<'a>(
    members: impl IntoIterator<Item = (&'a str, Option<&'a MemberStatus>)>,
    view: Option<&ClusterView>,
) -> Summary {
    let mut total = 0;
    let mut answered: Vec<(&str, &MemberStatus)> = Vec::new();
    for (name, status) in members {
        total += 1;
        if let Some(s) = status {
            answered.push((name, s));
        }
    }
    let primaries: Vec<String> = answered.iter().filter(|(_, s)| s.is_primary()).map(|(n, _)| n.to_string()).collect();
    let primary = match primaries.as_slice() {
        [one] => answered.iter().find(|(n, _)| n == one).map(|(_, s)| *s),
        _ => None,
    };
    let mut lag_bytes = BTreeMap::new();
    for (name, status) in answered.iter().filter(|(_, s)| s.role == Role::Replica) {
        let own = primary
            .and_then(|p| Some((p.wal_location?, status.replayed_location.or(status.received_location)?)))
            .map(|(primary_at, replica_at)| primary_at.saturating_sub(replica_at));
        let from_view = || view.and_then(|v| v.members.iter().find(|m| m.name == *name)).and_then(|m| m.lag_bytes);
        if let Some(lag) = own.or_else(from_view) {
            lag_bytes.insert(name.to_string(), lag);
        }
    }
    let sync_standbys = primary
        .map(|p| {
            p.replication
                .iter()
                .filter(|r| matches!(r.sync_state.as_str(), "sync" | "quorum"))
                .map(|r| r.application_name.clone())
                .collect()
        })
        .unwrap_or_default();
    Summary {
        members_total: total,
        members_running: answered.iter().filter(|(_, s)| s.state.is_running()).count(),
        max_timeline: answered.iter().filter_map(|(_, s)| s.timeline).max(),
        unlocked: answered.iter().any(|(_, s)| s.cluster_unlocked),
        failsafe_active: answered.iter().any(|(_, s)| s.failsafe_active),
        paused: answered.iter().any(|(_, s)| s.paused),
        primaries,
        lag_bytes,
        sync_standbys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(role: Role, state: PgState) -> MemberStatus {
        MemberStatus::bare(role, state, 2)
    }

    #[test]
    fn two_primaries_are_split_brain_with_no_single_leader() {
        let a = status(Role::Primary, PgState::Running);
        let s = summarize([("a", Some(&a)), ("b", Some(&a)), ("c", None)], None);
        assert_eq!(s.primaries.len(), 2);
        assert_eq!(s.leader(), None);
        assert_eq!((s.members_total, s.members_running), (3, 2));
    }

    #[test]
    fn lag_is_the_primarys_position_minus_the_replicas() {
        let mut p = status(Role::Primary, PgState::Running);
        p.wal_location = Some(100);
        p.replication =
            vec![Replication { application_name: "b".into(), state: "streaming".into(), sync_state: "quorum".into() }];
        let mut r = status(Role::Replica, PgState::Streaming);
        r.received_location = Some(90);
        r.replayed_location = Some(80);
        let s = summarize([("a", Some(&p)), ("b", Some(&r))], None);
        assert_eq!(s.leader(), Some("a"));
        assert_eq!(s.lag_bytes.get("b"), Some(&20));
        assert_eq!(s.sync_standbys, vec!["b".to_string()]);
    }

    #[test]
    fn roles_and_states_fold_patroni_3_and_4_words() {
        assert_eq!(Role::parse("master"), Role::Primary);
        assert_eq!(Role::parse("primary"), Role::Primary);
        assert_eq!(Role::parse("quorum_standby"), Role::Replica);
        assert_eq!(Role::parse("?"), Role::Other);
        assert_eq!(PgState::parse("in archive recovery"), PgState::InArchiveRecovery);
        assert!(!PgState::Stopped.is_running());
        assert_eq!(api_base("http://h:8008/patroni"), "http://h:8008");
        assert_eq!(api_base("http://h:8008/"), "http://h:8008");
    }
}
