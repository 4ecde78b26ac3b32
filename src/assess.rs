//! Cluster conditions and the one-word verdict, derived from the latest readings (never stored).
//!
//! Each condition is its own 0/1 gauge; the verdict is the first that holds, in this order:
//! entry point down, split brain, DCS quorum lost, read-only, no leader, no replica, degraded,
//! healthy; unknown when no Patroni member answers.

use crate::collect::patroni::{summarize, Role};
use crate::probe::FailureReason;
use crate::state::ClusterData;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions {
    /// A known member does not answer or its PostgreSQL is not running.
    pub replica_down: bool,
    /// A leader exists and no replica is running.
    pub no_replica: bool,
    /// No member claims the primary role.
    pub no_leader: bool,
    /// Writes through HAProxy fail while a leader exists: the server refuses them as read-only,
    /// or, with the DCS quorum lost, the last DCS leader is up but no longer primary (demoted).
    pub read_only: bool,
    pub dcs_quorum_lost: bool,
    /// HAProxy is unreachable or routes the primary port nowhere while a member takes writes.
    pub entry_point_down: bool,
    /// More than one member claims primary.
    pub split_brain: bool,
    /// The read probe fails.
    pub reads_failing: bool,
    /// No Patroni member answered: the exporter cannot tell.
    pub unknown: bool,
}

impl Conditions {
    pub fn list(&self) -> [(&'static str, bool); 7] {
        [
            ("replica_down", self.replica_down),
            ("no_replica", self.no_replica),
            ("no_leader", self.no_leader),
            ("read_only", self.read_only),
            ("dcs_quorum_lost", self.dcs_quorum_lost),
            ("entry_point_down", self.entry_point_down),
            ("split_brain", self.split_brain),
        ]
    }
}

pub const VERDICTS: [&str; 9] = [
    "entry_point_down",
    "split_brain",
    "dcs_quorum_lost",
    "read_only",
    "no_leader",
    "no_replica",
    "degraded",
    "healthy",
    "unknown",
];

pub fn verdict(c: &Conditions) -> &'static str {
    if c.unknown {
        "unknown"
    } else if c.entry_point_down {
        "entry_point_down"
    } else if c.split_brain {
        "split_brain"
    } else if c.dcs_quorum_lost {
        "dcs_quorum_lost"
    } else if c.read_only {
        "read_only"
    } else if c.no_leader {
        "no_leader"
    } else if c.no_replica {
        "no_replica"
    } else if c.replica_down || c.reads_failing {
        "degraded"
    } else {
        "healthy"
    }
}

pub fn assess(data: &ClusterData) -> Conditions {
    let summary = summarize(&data.patroni, data.dcs_view.as_ref());
    let own = |name: &str| data.patroni.get(name).and_then(|r| r.status.as_ref());
    let answered = data.patroni.values().any(|r| r.status.is_some());
    let primaries = summary.primaries.len();
    let running_replicas = data
        .patroni
        .values()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| s.role == Role::Replica && s.state.is_running())
        .count();

    let quorum_lost = data.etcd.as_ref().is_some_and(|e| !e.quorum().holds);

    // The DCS's leader: the leader key when it could be read, else Patroni's /cluster view.
    let dcs_leader = data.etcd.as_ref().and_then(|e| e.leader_key.as_ref().map(|k| k.holder.clone())).or_else(|| {
        data.dcs_view.as_ref().and_then(|v| v.members.iter().find(|m| m.role == Role::Primary)).map(|m| m.name.clone())
    });
    let dcs_leader_demoted =
        dcs_leader.as_deref().and_then(own).is_some_and(|s| s.state.is_running() && s.role != Role::Primary);
    let write = data.probes.write.as_ref();
    let writes_failing = write.is_some_and(|w| w.attempts > 0 && !w.up);
    // A DCS leader running as a replica is also what a promotion looks like for a moment; only
    // with the DCS lost is it a demotion.
    let read_only = writes_failing
        && (write.and_then(|w| w.last_failure) == Some(FailureReason::ReadOnly) || (quorum_lost && dcs_leader_demoted));

    let someone_takes_writes = if data.probes.direct_enabled {
        data.probes.direct.values().any(|d| d.writable)
    } else {
        data.patroni.values().filter_map(|r| r.status.as_ref()).any(|s| s.role == Role::Primary && s.state.is_running())
    };
    let routes_nowhere = !data.haproxy.is_empty()
        && data.haproxy.values().all(|h| match &h.stats {
            None => true,
            Some(stats) => !stats.servers.iter().any(|s| {
                h.route(&s.backend) == crate::collect::haproxy::Route::Primary
                    && s.status == crate::collect::haproxy::ServerStatus::Up
            }),
        });

    Conditions {
        replica_down: summary.members_running < summary.members_total,
        no_replica: primaries >= 1 && running_replicas == 0,
        no_leader: answered && primaries == 0,
        read_only,
        dcs_quorum_lost: quorum_lost,
        entry_point_down: routes_nowhere && someone_takes_writes,
        split_brain: primaries > 1,
        reads_failing: data.probes.read.as_ref().is_some_and(|r| r.attempts > 0 && !r.up),
        unknown: !answered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::haproxy::{parse_stats_csv, HaproxyReading};
    use crate::collect::patroni::parse_status;
    use crate::probe::ProbeStats;
    use crate::state::MemberReading;
    use std::time::{Duration, Instant};

    fn data(dir: &str) -> ClusterData {
        let mut d = ClusterData::default();
        for n in ["node1", "node2", "node3"] {
            let path = format!("{}/tests/fixtures/{dir}/patroni-{n}.json", env!("CARGO_MANIFEST_DIR"));
            let status = std::fs::read(path).ok().map(|b| parse_status(&b).unwrap());
            d.patroni.insert(n.into(), MemberReading { status });
        }
        if let Ok(csv) =
            std::fs::read_to_string(format!("{}/tests/fixtures/{dir}/haproxy.csv", env!("CARGO_MANIFEST_DIR")))
        {
            d.haproxy.insert(
                "h".into(),
                HaproxyReading {
                    stats: Some(parse_stats_csv(&csv).unwrap()),
                    primary_backend: "primary".into(),
                    replicas_backend: "replicas".into(),
                },
            );
        }
        d
    }

    fn probe(up: bool, reason: Option<FailureReason>) -> ProbeStats {
        let mut p = ProbeStats::default();
        let t = Instant::now();
        p.record(t, t, Ok(()));
        if !up {
            p.record(t, t + Duration::from_millis(1), Err(reason.unwrap()));
        }
        p
    }

    #[test]
    fn healthy_and_replica_stopped() {
        let d = data("healthy");
        assert_eq!(verdict(&assess(&d)), "healthy");
        let d = data("replica-stopped");
        let c = assess(&d);
        assert!(c.replica_down && !c.no_replica && !c.no_leader);
        assert_eq!(verdict(&c), "degraded");
    }

    #[test]
    fn quorum_loss_then_demotion_reads_as_quorum_lost_with_read_only_set() {
        let mut d = data("etcd-quorum-lost");
        let view = std::fs::read(format!(
            "{}/tests/fixtures/etcd-quorum-lost/cluster-from-node1.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        d.dcs_view = Some(crate::collect::patroni::parse_cluster(&view).unwrap());
        d.probes.write = Some(probe(false, Some(FailureReason::ClosedConnection)));
        let mut etcd = crate::collect::etcd::EtcdReading { member_count: 3, ..Default::default() };
        etcd.status.insert(
            "e3".into(),
            crate::collect::etcd::EndpointStatus {
                member_id: 3,
                leader_id: 0,
                raft_term: 3,
                raft_index: 9,
                db_size_bytes: 1,
                version: "3.4".into(),
                errors: vec!["etcdserver: no leader".into()],
            },
        );
        d.etcd = Some(etcd);
        let c = assess(&d);
        assert!(c.dcs_quorum_lost && c.no_leader);
        assert!(c.read_only, "the stale DCS leader is up, running, and no longer primary");
        assert!(!c.entry_point_down, "no member takes writes");
        assert_eq!(verdict(&c), "dcs_quorum_lost");
    }

    #[test]
    fn entry_point_down_needs_a_member_that_takes_writes() {
        let mut d = data("healthy");
        d.haproxy.get_mut("h").unwrap().stats = None;
        d.probes.write = Some(probe(false, Some(FailureReason::ConnectRefused)));
        let c = assess(&d);
        assert!(c.entry_point_down, "HAProxy unreachable while the leader runs");
        assert!(!c.read_only, "refused connections are not read-only");
        assert_eq!(verdict(&c), "entry_point_down");
        d.probes.direct_enabled = true;
        assert!(!assess(&d).entry_point_down, "with direct probes, only a direct write proves it");
        d.patroni.get_mut("node1").unwrap().status.as_mut().unwrap().role = Role::Replica;
        let mut etcd = crate::collect::etcd::EtcdReading {
            member_count: 3,
            leader_key: Some(crate::collect::etcd::LeaderKey {
                holder: "node1".into(),
                lease_id: 1,
                ttl_seconds: Some(9),
            }),
            keys_from_quorum: true,
            ..Default::default()
        };
        for id in 1..=3 {
            etcd.status.insert(
                format!("e{id}"),
                crate::collect::etcd::EndpointStatus {
                    member_id: id,
                    leader_id: 1,
                    raft_term: 2,
                    raft_index: 5,
                    db_size_bytes: 1,
                    version: "3.4".into(),
                    errors: vec![],
                },
            );
        }
        d.etcd = Some(etcd);
        assert!(!assess(&d).read_only, "a key holder not yet primary is a promotion, not read-only");
        d.patroni.get_mut("node1").unwrap().status.as_mut().unwrap().role = Role::Primary;
        d.probes.direct.insert(
            "node1".into(),
            crate::state::DirectStatus { up: true, in_recovery: Some(false), writable: true, ..Default::default() },
        );
        assert!(assess(&d).entry_point_down);
    }

    #[test]
    fn read_only_error_through_haproxy_and_other_verdicts() {
        let mut d = data("healthy");
        d.probes.write = Some(probe(false, Some(FailureReason::ReadOnly)));
        assert_eq!(verdict(&assess(&d)), "read_only");
        let mut d = data("leader-stopped");
        // node1 stopped and its key expired: one leader, one replica.
        let c = assess(&d);
        assert_eq!(verdict(&c), "degraded");
        d.patroni.get_mut("node3").unwrap().status = None;
        d.patroni.get_mut("node2").unwrap().status = None;
        let leader_alone = ["node2", "node3"]
            .iter()
            .find(|n| data("leader-stopped").patroni[**n].status.as_ref().unwrap().role == Role::Primary)
            .unwrap();
        d.patroni.insert(leader_alone.to_string(), data("leader-stopped").patroni[*leader_alone].clone());
        assert_eq!(verdict(&assess(&d)), "no_replica");
        let mut two = data("healthy");
        two.patroni.insert("node2".into(), two.patroni["node1"].clone());
        assert_eq!(verdict(&assess(&two)), "split_brain");
        assert_eq!(verdict(&assess(&ClusterData::default())), "unknown");
    }
}
