//! Cluster conditions, derived from the latest readings each time they are needed (never
//! stored): the verdict is the first that holds, by [`Verdict`]'s precedence.

use crate::model::patroni::Role;
use crate::model::probe::FailureReason;
use crate::model::verdict::{Condition, Conditions, Verdict};
use crate::model::vip::Answer;
use crate::state::ClusterData;

pub fn verdict(data: &ClusterData, direct_probes: bool) -> Verdict {
    Verdict::of(&assess(data, direct_probes))
}

/// `direct_probes`: the cluster's direct probes are on, so only a direct write proves that a
/// member takes writes.
pub fn assess(data: &ClusterData, direct_probes: bool) -> Conditions {
    let summary = data.summary();
    let statuses = || data.members.values().filter_map(|m| m.status.as_ref());
    let own = |name: &str| data.members.get(name).and_then(|m| m.status.as_ref());
    let answered = statuses().next().is_some();
    let primaries = summary.primaries.len();
    let running_replicas = statuses().filter(|s| s.role == Role::Replica && s.state.is_running()).count();
    let quorum_lost = data.etcd.as_ref().is_some_and(|e| e.polled() && !e.quorum().holds);

    // The DCS's leader: the leader key when it could be read, else Patroni's /cluster view.
    let dcs_leader = data.etcd.as_ref().and_then(|e| e.leader_key.as_ref().map(|k| k.holder.clone())).or_else(|| {
        data.dcs_view.as_ref().and_then(|v| v.members.iter().find(|m| m.role == Role::Primary)).map(|m| m.name.clone())
    });
    let dcs_leader_demoted =
        dcs_leader.as_deref().and_then(own).is_some_and(|s| s.state.is_running() && !s.is_primary());
    let write = data.probes.write.as_ref();
    let writes_failing = write.is_some_and(|w| w.failing());
    // A DCS leader running as a replica is also what a promotion looks like for a moment; only
    // with the DCS lost is it a demotion.
    let read_only = writes_failing
        && (write.and_then(|w| w.last_failure) == Some(FailureReason::ReadOnly) || (quorum_lost && dcs_leader_demoted));

    let someone_takes_writes = if direct_probes {
        data.probes.direct.values().any(|d| d.writable)
    } else {
        statuses().any(|s| s.is_primary() && s.state.is_running())
    };
    let routes_nowhere = entry_routes_nowhere(data);

    let mut c = Conditions::default();
    c.set(Condition::ReplicaDown, summary.members_running < summary.members_total);
    c.set(Condition::NoReplica, primaries >= 1 && running_replicas == 0);
    c.set(Condition::NoLeader, answered && primaries == 0);
    c.set(Condition::ReadOnly, read_only);
    c.set(Condition::DcsQuorumLost, quorum_lost);
    c.set(Condition::EntryPointDown, routes_nowhere && someone_takes_writes);
    c.set(Condition::SplitBrain, primaries > 1);
    if let Some(vip) = data.vip.as_ref().filter(|v| v.answer.is_some()) {
        let answer = vip.answer_kind();
        c.set(Condition::VipNoHolder, answer == Some(Answer::Unreachable));
        c.set(Condition::VipHolderDown, matches!(answer, Some(Answer::Refused | Answer::NoAnswer)));
        c.set(Condition::VipSplitBrain, vip.masters() > 1);
        c.set(Condition::EntryNoStandby, vip_standbys(data) == Some(0));
    }
    c.reads_failing = data.probes.read.as_ref().is_some_and(|r| r.failing());
    c.unknown = !answered;
    c
}

/// Instances ready to take the virtual IP over (see [`crate::model::vip::VipView::standbys`]);
/// `None` without a virtual IP, before its first read, or when no instance's own page is
/// configured (nothing tells a standby then).
pub fn vip_standbys(data: &ClusterData) -> Option<usize> {
    let vip = data.vip.as_ref().filter(|v| v.answer.is_some() && !v.instances.is_empty())?;
    Some(vip.standbys(|name| routes_primary(data, name) == Some(true)))
}

/// Whether HAProxy instance `name` routes the primary port somewhere; `None` when it is not
/// configured or not called yet.
fn routes_primary(data: &ClusterData, name: &str) -> Option<bool> {
    let h = data.haproxy.get(name).filter(|h| h.health.attempted())?;
    Some(h.stats().is_some_and(|stats| stats.routes_primary(&h.routes)))
}

/// No path to the primary through the entry point: with a virtual IP, through its holder (none
/// when nothing answers there); else through any HAProxy instance called so far.
fn entry_routes_nowhere(data: &ClusterData) -> bool {
    let vip = data.vip.as_ref().and_then(|v| v.answer.as_ref());
    match vip {
        Some(Ok(holder)) if data.haproxy.contains_key(&holder.name) => {
            routes_primary(data, &holder.name) == Some(false)
        }
        Some(Err(Answer::Unreachable | Answer::Refused | Answer::NoAnswer)) => true,
        _ => {
            let mut called = data.haproxy.keys().filter_map(|name| routes_primary(data, name)).peekable();
            called.peek().is_some() && called.all(|routes| !routes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::patroni::{parse_cluster, parse_status};
    use crate::model::etcd::{EndpointStatus, EtcdRound, LeaderKey, PatroniKeys};
    use crate::model::probe::{Attempt, DirectOutcome, ProbeKind};
    use crate::model::source::{ErrorKind, Reading, TargetError};
    use crate::state::ClusterState;
    use crate::testing::{answered, fixture, lab_state, refused};
    use std::time::{Duration, Instant};

    const ETCD: &str = "    etcd: {endpoints: ['http://e1:2379', 'http://e2:2379', 'http://e3:2379']}\n";
    const PROBES: &str = "    probes: {user: u, primary: 'h:5000'}\n";

    fn verdict_of(s: &ClusterState) -> Verdict {
        verdict(&s.read(), false)
    }

    fn conditions(s: &ClusterState, direct: bool) -> Conditions {
        assess(&s.read(), direct)
    }

    /// The write probe succeeded once, then failed with `reason`.
    fn writes_fail(s: &ClusterState, reason: FailureReason) {
        let t = Instant::now();
        s.apply_probe(ProbeKind::Write, Attempt { started: t, finished: t, result: Ok(()) }, None);
        let later = t + Duration::from_millis(1);
        s.apply_probe(ProbeKind::Write, Attempt { started: later, finished: later, result: Err(reason) }, None);
    }

    fn etcd_status(id: u64, leader: u64, errors: &[&str]) -> EndpointStatus {
        EndpointStatus {
            member_id: id,
            leader_id: leader,
            raft_term: 2,
            raft_index: 5,
            db_size_bytes: 1,
            version: "3.4".into(),
            errors: errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn etcd_round(statuses: Vec<Option<EndpointStatus>>, leader_key: Option<&str>) -> EtcdRound {
        let endpoints = statuses
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let result = s.ok_or_else(|| TargetError::new(ErrorKind::Connect, "refused"));
                (format!("http://e{}:2379", i + 1), Reading { at: Instant::now(), duration: Duration::ZERO, result })
            })
            .collect();
        let key = leader_key.map(|h| LeaderKey { holder: h.into(), lease_id: 1, ttl_seconds: Some(9) });
        EtcdRound {
            endpoints,
            member_list: Some((1..=3).map(|i| (i, format!("etcd{i}"))).collect()),
            keys: Some(PatroniKeys { members: Vec::new(), leader_key: key, from_quorum: true }),
        }
    }

    fn member_says(s: &ClusterState, state: &str, member: &str, role: Role) {
        let i = &member[4..];
        let mut status = parse_status(&fixture(state, &format!("patroni-{member}.json")).unwrap()).unwrap();
        status.role = role;
        s.apply_member(member, &format!("http://127.0.0.2{i}:18008"), answered(status));
    }

    #[test]
    fn targets_not_called_yet_count_neither_up_nor_down() {
        let s = ClusterState::new(crate::testing::plan(ETCD), None);
        let c = conditions(&s, false);
        assert!(c.unknown, "no member answered");
        for condition in [Condition::DcsQuorumLost, Condition::EntryPointDown, Condition::ReplicaDown] {
            assert!(!c.holds(condition), "{condition} before any call");
        }
        member_says(&s, "healthy", "node1", Role::Primary);
        member_says(&s, "healthy", "node2", Role::Replica);
        let c = conditions(&s, false);
        assert!(!c.holds(Condition::ReplicaDown), "node3 has not been called yet");
        assert!(!c.holds(Condition::DcsQuorumLost) && !c.holds(Condition::EntryPointDown));
        assert_eq!(s.read().summary().members_total, 2);
        s.apply_etcd(EtcdRound { keys: None, member_list: None, ..etcd_round(vec![None, None, None], None) });
        assert!(conditions(&s, false).holds(Condition::DcsQuorumLost), "called and none answered");
    }

    #[test]
    fn healthy_and_replica_stopped() {
        assert_eq!(verdict_of(&lab_state("healthy", "")), Verdict::Healthy);
        let s = lab_state("replica-stopped", "");
        let c = conditions(&s, false);
        assert!(c.holds(Condition::ReplicaDown) && !c.holds(Condition::NoReplica) && !c.holds(Condition::NoLeader));
        assert_eq!(Verdict::of(&c), Verdict::Degraded);
    }

    #[test]
    fn quorum_loss_then_demotion_reads_as_quorum_lost_with_read_only_set() {
        let s = lab_state("etcd-quorum-lost", &format!("{ETCD}{PROBES}"));
        let view = fixture("etcd-quorum-lost", "cluster-from-node1.json").unwrap();
        s.apply_view(parse_cluster(&view).unwrap(), Instant::now());
        writes_fail(&s, FailureReason::ClosedConnection);
        let survivor = etcd_status(3, 0, &["etcdserver: no leader"]);
        s.apply_etcd(EtcdRound { keys: None, ..etcd_round(vec![None, None, Some(survivor)], None) });
        let c = conditions(&s, false);
        assert!(c.holds(Condition::DcsQuorumLost) && c.holds(Condition::NoLeader));
        assert!(c.holds(Condition::ReadOnly), "the stale DCS leader is up, running, and no longer primary");
        assert!(!c.holds(Condition::EntryPointDown), "no member takes writes");
        assert_eq!(Verdict::of(&c), Verdict::DcsQuorumLost);
    }

    #[test]
    fn entry_point_down_needs_a_member_that_takes_writes() {
        let s = lab_state("healthy", &format!("{ETCD}{PROBES}"));
        s.apply_haproxy("haproxy", refused());
        writes_fail(&s, FailureReason::ConnectRefused);
        let c = conditions(&s, false);
        assert!(c.holds(Condition::EntryPointDown), "HAProxy unreachable while the leader runs");
        assert!(!c.holds(Condition::ReadOnly), "refused connections are not read-only");
        assert_eq!(Verdict::of(&c), Verdict::EntryPointDown);
        assert!(
            !conditions(&s, true).holds(Condition::EntryPointDown),
            "with direct probes, only a direct write proves it"
        );
        member_says(&s, "healthy", "node1", Role::Replica);
        let healthy = || Some(etcd_status(1, 1, &[]));
        s.apply_etcd(etcd_round(vec![healthy(), healthy(), healthy()], Some("node1")));
        assert!(!conditions(&s, false).holds(Condition::ReadOnly), "a key holder not yet primary is a promotion");
        member_says(&s, "healthy", "node1", Role::Primary);
        let writable = DirectOutcome { up: true, in_recovery: Some(false), writable: true, failure: None };
        let node1 = crate::model::address::HostPort::parse("127.0.0.21:15432").unwrap();
        s.apply_direct("node1", &node1, writable, Instant::now());
        assert!(conditions(&s, true).holds(Condition::EntryPointDown));
    }

    #[test]
    fn read_only_error_through_haproxy_and_other_verdicts() {
        let s = lab_state("healthy", PROBES);
        writes_fail(&s, FailureReason::ReadOnly);
        assert_eq!(verdict_of(&s), Verdict::ReadOnly);
        // node1 stopped and its key expired: one leader, one replica.
        let s = lab_state("leader-stopped", "");
        assert_eq!(verdict_of(&s), Verdict::Degraded);
        let leader = s.read().summary().leader().unwrap().to_string();
        let replica = ["node2", "node3"].into_iter().find(|n| *n != leader).unwrap();
        s.apply_member(replica, &format!("http://127.0.0.2{}:18008", &replica[4..]), refused());
        assert_eq!(verdict_of(&s), Verdict::NoReplica);
        let two = lab_state("healthy", "");
        member_says(&two, "healthy", "node2", Role::Primary);
        assert_eq!(verdict_of(&two), Verdict::SplitBrain);
        let none = lab_state("haproxy-stopped", "");
        for (i, n) in crate::testing::MEMBERS.iter().enumerate() {
            none.apply_member(n, &format!("http://127.0.0.2{}:18008", i + 1), refused());
        }
        assert_eq!(verdict_of(&none), Verdict::Unknown);
    }

    #[test]
    fn conditions_of_the_virtual_ip_and_the_path_through_it() {
        use crate::model::vip::test_round as vip_round;
        use crate::model::vip::VrrpState::{Backup, Master};
        use crate::testing::{lab_state_of, plan_behind, VIP_HAPROXY};
        let s = lab_state_of("healthy", plan_behind(VIP_HAPROXY, PROBES));
        let holds = |s: &ClusterState| -> Vec<Condition> {
            conditions(s, false).each().filter(|(_, on)| *on).map(|(c, _)| c).collect()
        };
        assert_eq!(holds(&s), [], "not read yet: nothing holds");
        s.apply_vip(vip_round(Ok("haproxy"), &[("haproxy", Some(Master)), ("haproxy2", Some(Backup))]));
        assert_eq!((holds(&s), verdict_of(&s)), (vec![], Verdict::Healthy));
        assert_eq!(vip_standbys(&s.read()), Some(1));

        s.apply_vip(vip_round(Ok("haproxy"), &[("haproxy", Some(Master)), ("haproxy2", Some(Master))]));
        assert_eq!(holds(&s), [Condition::VipSplitBrain, Condition::EntryNoStandby]);
        assert_eq!(verdict_of(&s), Verdict::Degraded);
        s.apply_vip(vip_round(Ok("haproxy"), &[("haproxy", Some(Master)), ("haproxy2", None)]));
        assert_eq!(holds(&s), [Condition::EntryNoStandby], "the other instance does not answer");

        let pages = [("haproxy", None), ("haproxy2", Some(Backup))];
        s.apply_vip(vip_round(Err(Answer::Unreachable), &pages));
        assert_eq!(holds(&s), [Condition::EntryPointDown, Condition::VipNoHolder]);
        assert_eq!(verdict_of(&s), Verdict::EntryPointDown, "haproxy2 routes, but not through the VIP");
        for failed in [Answer::Refused, Answer::NoAnswer] {
            s.apply_vip(vip_round(Err(failed), &pages));
            assert_eq!(holds(&s), [Condition::EntryPointDown, Condition::VipHolderDown], "{failed}");
        }
        s.apply_vip(vip_round(Err(Answer::BadAnswer), &pages));
        assert_eq!(holds(&s), [], "an odd answer is the source's error; both instances route");

        // The holder routes nowhere while the other instance would: no path through the VIP.
        let stats = crate::testing::fixture("etcd-quorum-lost", "haproxy.csv").unwrap();
        let stats = crate::collect::haproxy::parse_stats_csv(&String::from_utf8(stats).unwrap()).unwrap();
        s.apply_haproxy("haproxy2", answered(stats));
        s.apply_vip(vip_round(Ok("haproxy2"), &[("haproxy", Some(Backup)), ("haproxy2", Some(Master))]));
        assert_eq!(holds(&s), [Condition::EntryPointDown]);
        s.apply_vip(vip_round(Ok("haproxy"), &[("haproxy", Some(Master)), ("haproxy2", Some(Backup))]));
        assert_eq!(holds(&s), [Condition::EntryNoStandby], "haproxy2 is a backup that routes nowhere");

        // Without the instances' own pages nothing tells a standby: no figure, no condition.
        let vip_only =
            "      - {stats_url: 'http://127.0.0.31:17000/;csv'}\n    vip: {whoami_url: 'http://127.0.0.30:17001/'}\n";
        let s = lab_state_of("healthy", plan_behind(vip_only, PROBES));
        assert_eq!(vip_standbys(&s.read()), None, "not read yet");
        s.apply_vip(vip_round(Ok("haproxy"), &[]));
        assert_eq!((vip_standbys(&s.read()), holds(&s)), (None, vec![]));
    }
}
