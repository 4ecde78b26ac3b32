//! Assembles failovers from the changes every source reports, and keeps the recent events.
//!
//! | step | source |
//! |---|---|
//! | last successful write through HAProxy | write probe |
//! | old leader lost (REST or PostgreSQL stops answering, or it leaves the primary role) | Patroni, direct probe |
//! | leader key released or expired | etcd watch |
//! | new leader key acquired | etcd watch |
//! | new primary writable | direct probe |
//! | HAProxy routes the primary port to it | HAProxy stats |
//! | first successful write through HAProxy | write probe |
//!
//! A step observed later than a step that implies it is set to that step's time: a write through
//! HAProxy proves HAProxy routed and the new primary was writable by then, whatever the slower
//! poll saw. A phase runs from the closest earlier step seen to its own step.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::event::{Change, Event};
use super::Clock;
use crate::model::haproxy::Route;
use crate::model::hist::{Hist, OUTAGE_BUCKETS};
use crate::model::label_enum;
use crate::model::patroni::Role;
use crate::model::probe::ProbeKind;

/// How many events each cluster keeps for `/api/v1/events`.
pub const EVENTS_KEPT: usize = 1000;
/// A failover that has not completed this long after its new leader is closed with the steps
/// it has.
const FAILOVER_COMPLETION: Duration = Duration::from_secs(60);
/// A leader lost that no new leader followed within this long is forgotten.
const LOST_LEADER_FORGET: Duration = Duration::from_secs(300);
/// A switchover request counts its failover as planned if the leader changes within this long.
const SWITCHOVER_WINDOW: Duration = Duration::from_secs(60);

label_enum! {
    /// The steps of a failover, in order.
    pub enum Step {
        LastWriteOk = "last_write_ok",
        OldLeaderLost = "old_leader_lost",
        LeaderKeyReleased = "leader_key_released",
        LeaderKeyAcquired = "leader_key_acquired",
        NewPrimaryWritable = "new_primary_writable",
        HaproxyRouted = "haproxy_routed",
        FirstWriteOk = "first_write_ok",
    }
}

label_enum! {
    /// The phases of a failover: the `phase` label. Each ends at its own step.
    pub enum Phase {
        Detection = "detection",
        KeyRelease = "key_release",
        Election = "election",
        Promotion = "promotion",
        Routing = "routing",
        Reconnect = "reconnect",
    }
}

impl Phase {
    pub fn end(self) -> Step {
        match self {
            Phase::Detection => Step::OldLeaderLost,
            Phase::KeyRelease => Step::LeaderKeyReleased,
            Phase::Election => Step::LeaderKeyAcquired,
            Phase::Promotion => Step::NewPrimaryWritable,
            Phase::Routing => Step::HaproxyRouted,
            Phase::Reconnect => Step::FirstWriteOk,
        }
    }
}

/// When each step was seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes([Option<Instant>; Step::COUNT]);

impl Index<Step> for StepTimes {
    type Output = Option<Instant>;
    fn index(&self, s: Step) -> &Option<Instant> {
        &self.0[s.index()]
    }
}

impl IndexMut<Step> for StepTimes {
    fn index_mut(&mut self, s: Step) -> &mut Option<Instant> {
        &mut self.0[s.index()]
    }
}

impl StepTimes {
    fn set_once(&mut self, step: Step, at: Instant) {
        self[step].get_or_insert(at);
    }

    /// The steps seen, in order.
    pub fn seen(&self) -> impl Iterator<Item = (Step, Instant)> + '_ {
        Step::ALL.iter().filter_map(|s| self[*s].map(|at| (*s, at)))
    }

    /// A later step proves the earlier one happened by then.
    fn bound(&mut self, earlier: Step, later: Step) {
        if let (Some(e), Some(l)) = (self[earlier], self[later]) {
            if e > l {
                self[earlier] = Some(l);
            }
        }
    }

    /// An earlier step proves the later one had not happened before it.
    fn lift(&mut self, later: Step, earlier: Step) {
        if let (Some(l), Some(e)) = (self[later], self[earlier]) {
            if l < e {
                self[later] = Some(e);
            }
        }
    }

    /// Seconds of each phase whose end was seen, from the closest earlier step seen.
    pub fn phases(&self) -> Vec<(Phase, f64)> {
        Phase::ALL
            .iter()
            .filter_map(|phase| {
                let end = phase.end();
                let start = Step::ALL[..end.index()].iter().rev().find_map(|s| self[*s])?;
                Some((*phase, self[end]?.saturating_duration_since(start).as_secs_f64()))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failover {
    pub old_leader: Option<String>,
    pub new_leader: String,
    pub planned: bool,
    /// Unix time of each step seen, in order.
    pub steps: Vec<(Step, f64)>,
    /// Seconds of each phase whose both ends were seen.
    pub phases: Vec<(Phase, f64)>,
    /// From the last write before to the first write after, through HAProxy.
    pub write_downtime_seconds: Option<f64>,
    pub lost_writes: Option<u64>,
    /// Unix time the new leader took the key (or claimed primary).
    pub time: f64,
    #[serde(skip, default)]
    pub step_at: StepTimes,
}

#[derive(Debug, Clone)]
struct Pending {
    old_leader: Option<String>,
    new_leader: Option<String>,
    steps: StepTimes,
    lost_writes: Option<u64>,
    opened: Instant,
}

impl Pending {
    fn new(old_leader: Option<String>, now: Instant) -> Self {
        Self { old_leader, new_leader: None, steps: StepTimes::default(), lost_writes: None, opened: now }
    }

    fn is_new_leader(&self, member: &str) -> bool {
        self.new_leader.as_deref() == Some(member)
    }
}

/// Which steps a cluster's sources can see: a step that no source can see is not waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sees {
    pub write_probe: bool,
    pub direct_probe: bool,
    pub haproxy: bool,
}

/// Assembles failovers from changes and keeps their statistics and the recent events.
#[derive(Debug)]
pub struct Tracker {
    scope: String,
    sees: Sees,
    /// The current leader as the leader key (or the members' own answers) says.
    pub leader: Option<String>,
    pending: Option<Pending>,
    switchover_requested: Option<Instant>,
    /// The write probe's ongoing outage: when its last success was.
    write_outage_since: Option<Instant>,
    last_write_ok: Option<Instant>,
    pub last: Option<Failover>,
    pub planned_total: u64,
    pub unplanned_total: u64,
    pub phase_hists: [Hist; Phase::COUNT],
    pub downtime_hist: Hist,
    pub events: VecDeque<Event>,
    pub haproxy_transitions: u64,
    /// Events listed since the last `apply` or `tick` returned.
    fresh: Vec<Event>,
}

impl Tracker {
    /// What the cluster's new settings let it see (after a reload).
    pub fn set_sees(&mut self, sees: Sees) {
        self.sees = sees;
    }

    pub fn new(scope: &str, sees: Sees) -> Self {
        Self {
            scope: scope.to_string(),
            sees,
            leader: None,
            pending: None,
            switchover_requested: None,
            write_outage_since: None,
            last_write_ok: None,
            last: None,
            planned_total: 0,
            unplanned_total: 0,
            phase_hists: std::array::from_fn(|_| Hist::new(OUTAGE_BUCKETS)),
            downtime_hist: Hist::new(OUTAGE_BUCKETS),
            events: VecDeque::new(),
            haproxy_transitions: 0,
            fresh: Vec::new(),
        }
    }

    /// Records a change seen at `at` and advances the failover being assembled. Returns the
    /// events it listed (the change's own, and a failover it closed), for the log.
    pub fn apply(&mut self, change: &Change, at: Instant) -> Vec<Event> {
        self.push(change, at);
        self.advance(change, at);
        self.maybe_close(at);
        std::mem::take(&mut self.fresh)
    }

    /// Closes a failover that timed out; call periodically. Returns the failover event, if any.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        self.maybe_close(now);
        std::mem::take(&mut self.fresh)
    }

    /// The write probe is in an outage (its last attempt failed after a success).
    pub fn in_write_outage(&self) -> bool {
        self.write_outage_since.is_some()
    }

    /// Events and the last failover saved before a restart, bounded as if they had been seen
    /// here; `interrupted_at`: the exporter stopped during a write outage then (Unix time),
    /// listed as such and never measured.
    pub fn restore(&mut self, events: Vec<Event>, last: Option<Failover>, interrupted_at: Option<f64>) {
        let skip = events.len().saturating_sub(EVENTS_KEPT);
        for mut event in events.into_iter().skip(skip) {
            event.scope = self.scope.clone();
            event.detail = crate::model::text::bounded_to(&event.detail, super::event::MAX_DETAIL);
            if let Some(seqs) = &mut event.lost_seqs {
                seqs.truncate(super::event::LOST_SEQS_LISTED);
            }
            self.events.push_back(event);
        }
        self.last = last;
        if let Some(time) = interrupted_at {
            if self.events.len() >= EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(Event {
                time,
                scope: self.scope.clone(),
                kind: super::event::EventKind::WriteOutageInterrupted,
                member: None,
                detail: "the exporter stopped during this write outage: its length is unknown".into(),
                lost_seqs: None,
                at: Instant::now(),
            });
        }
    }

    fn push(&mut self, change: &Change, at: Instant) {
        let Some(event) = Event::new(&self.scope, change, at) else { return };
        if self.events.len() >= EVENTS_KEPT {
            self.events.pop_front();
        }
        self.fresh.push(event.clone());
        self.events.push_back(event);
    }

    fn is_leader(&self, member: &str) -> bool {
        self.leader.as_deref() == Some(member)
    }

    /// The last write known to have succeeded before `at`.
    fn last_write_before(&self, at: Instant) -> Option<Instant> {
        self.write_outage_since.or(self.last_write_ok).filter(|w| *w <= at)
    }

    /// The failover being assembled, opened now (with `old` as the old leader) if none is.
    fn open(&mut self, old: Option<String>, at: Instant) -> &mut Pending {
        let last_write = self.last_write_before(at);
        let p = self.pending.get_or_insert_with(|| Pending::new(old, at));
        if let Some(w) = last_write {
            p.steps.set_once(Step::LastWriteOk, w);
        }
        p
    }

    fn advance(&mut self, change: &Change, at: Instant) {
        use Change as C;
        match change {
            C::LeaderKnown { holder } if self.leader.is_none() && self.pending.is_none() => {
                self.leader = holder.clone();
            }
            C::MemberUnreachable { member } | C::LeftPrimary { member, .. } | C::PostgresUnreachable { member, .. }
                if self.is_leader(member) =>
            {
                let old = self.leader.clone();
                self.open(old, at).steps.set_once(Step::OldLeaderLost, at);
            }
            C::LeaderKeyReleased { holder } => {
                let old = holder.clone().or_else(|| self.leader.clone());
                self.open(old, at).steps.set_once(Step::LeaderKeyReleased, at);
            }
            C::LeaderKeyAcquired { member, .. } => self.leader_acquired(member, at),
            C::PostgresWritable { member } => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.is_new_leader(member)) {
                    p.steps.set_once(Step::NewPrimaryWritable, at);
                }
                self.leader_recovered(member);
            }
            // Back as a replica (it demoted while silent) is no recovery of the leader.
            C::MemberReachable { member, role: Role::Primary } | C::BecamePrimary { member, .. } => {
                self.leader_recovered(member)
            }
            C::HaproxyServer { up, member, route, .. } => {
                self.haproxy_transitions += 1;
                if let (true, Route::Primary, Some(m)) = (up, route, member) {
                    if let Some(p) = self.pending.as_mut().filter(|p| p.is_new_leader(m)) {
                        p.steps.set_once(Step::HaproxyRouted, at);
                    }
                }
            }
            // The first request of a window counts: Patroni may rewrite the key while it acts.
            C::SwitchoverRequested { .. }
                if self.switchover_requested.is_none_or(|r| at.saturating_duration_since(r) > SWITCHOVER_WINDOW) =>
            {
                self.switchover_requested = Some(at)
            }
            C::WriteSucceeded => self.last_write_ok = Some(at),
            C::OutageStarted { probe: ProbeKind::Write, .. } => {
                self.write_outage_since = Some(at);
                // The probe's own outage start wins over a guess made when another source
                // noticed the loss first: the failover's write downtime is the probe's outage.
                if let Some(p) = self.pending.as_mut() {
                    p.steps[Step::LastWriteOk] = Some(at);
                }
            }
            C::OutageEnded { probe: ProbeKind::Write, lost, .. } => self.write_recovered(at, *lost),
            _ => {}
        }
    }

    fn leader_acquired(&mut self, new: &str, at: Instant) {
        if self.is_leader(new) {
            // The same member took the key again (e.g. after a DCS outage): no leader change.
            if self.pending.as_ref().is_some_and(|p| p.new_leader.is_none()) {
                self.pending = None;
            }
            return;
        }
        if self.leader.is_none() && self.pending.is_none() {
            // First sight of a leader: nothing failed over.
            self.leader = Some(new.to_string());
            return;
        }
        if self.pending.as_ref().is_some_and(|p| p.new_leader.is_some()) {
            // A second leader change before the first closed (A -> B -> C): two failovers.
            self.close_pending(at);
        }
        let old = self.leader.clone();
        let p = self.open(old, at);
        p.new_leader = Some(new.to_string());
        p.steps.set_once(Step::LeaderKeyAcquired, at);
        self.leader = Some(new.to_string());
    }

    /// The current leader works again before any other member took over (a short hang, a DCS
    /// outage it survived): what looked like the start of a failover was not one.
    fn leader_recovered(&mut self, member: &str) {
        if self.is_leader(member) && self.pending.as_ref().is_some_and(|p| p.new_leader.is_none()) {
            self.pending = None;
        }
    }

    fn write_recovered(&mut self, recovered: Instant, lost: Option<u64>) {
        let since = self.write_outage_since.take();
        self.last_write_ok = Some(recovered);
        if let Some(p) = self.pending.as_mut() {
            if let Some(s) = since {
                p.steps[Step::LastWriteOk] = Some(s);
            }
            if p.new_leader.is_some() {
                p.steps.set_once(Step::FirstWriteOk, recovered);
                p.lost_writes = lost;
            }
        }
    }

    fn maybe_close(&mut self, now: Instant) {
        let Some(p) = &self.pending else { return };
        let Some(acquired) = p.steps[Step::LeaderKeyAcquired] else {
            if now.saturating_duration_since(p.opened) > LOST_LEADER_FORGET {
                self.pending = None;
            }
            return;
        };
        let seen_all = (!self.sees.haproxy || p.steps[Step::HaproxyRouted].is_some())
            && (!self.sees.direct_probe || p.steps[Step::NewPrimaryWritable].is_some())
            && (!self.sees.write_probe || p.steps[Step::FirstWriteOk].is_some());
        if seen_all || now.saturating_duration_since(acquired) >= FAILOVER_COMPLETION {
            self.close_pending(now);
        }
    }

    fn close_pending(&mut self, now: Instant) {
        let Some(p) = self.pending.take() else { return };
        let failover = self.close(p);
        let change = Change::Failover {
            old_leader: failover.old_leader.clone(),
            new_leader: failover.new_leader.clone(),
            planned: failover.planned,
            write_downtime: failover.write_downtime_seconds,
        };
        self.push(&change, failover.step_at[Step::LeaderKeyAcquired].unwrap_or(now));
        self.last = Some(failover);
    }

    fn close(&mut self, p: Pending) -> Failover {
        let mut steps = p.steps;
        // A write the old leader acknowledged after a source saw it go (the direct probe's
        // session closed first while a commit through HAProxy was still being answered): the
        // leader was not lost before its last acknowledged write.
        steps.lift(Step::OldLeaderLost, Step::LastWriteOk);
        steps.bound(Step::HaproxyRouted, Step::FirstWriteOk);
        steps.bound(Step::NewPrimaryWritable, Step::FirstWriteOk);
        steps.bound(Step::NewPrimaryWritable, Step::HaproxyRouted);
        let acquired = steps[Step::LeaderKeyAcquired];
        let planned = match (self.switchover_requested, acquired) {
            (Some(req), Some(acq)) => acq >= req && acq.saturating_duration_since(req) <= SWITCHOVER_WINDOW,
            _ => false,
        };
        if planned {
            self.switchover_requested = None;
            self.planned_total += 1;
        } else {
            self.unplanned_total += 1;
        }
        let downtime = match (steps[Step::LastWriteOk], steps[Step::FirstWriteOk]) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64()),
            _ => None,
        };
        let phases = steps.phases();
        for (phase, secs) in &phases {
            self.phase_hists[phase.index()].observe(*secs);
        }
        if let Some(d) = downtime {
            self.downtime_hist.observe(d);
        }
        let clock = Clock::now();
        Failover {
            old_leader: p.old_leader,
            new_leader: p.new_leader.unwrap_or_default(),
            planned,
            steps: steps.seen().map(|(s, at)| (s, clock.unix(at))).collect(),
            phases,
            write_downtime_seconds: downtime,
            lost_writes: p.lost_writes,
            time: clock.unix(acquired.unwrap_or_else(Instant::now)),
            step_at: steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::probe::{FailureReason, Outage};
    use crate::timeline::{EventKind, LeaderSeenIn};

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn sees_all() -> Sees {
        Sees { write_probe: true, direct_probe: true, haproxy: true }
    }

    fn acquired(m: &str) -> Change {
        Change::LeaderKeyAcquired { member: m.into(), seen_in: LeaderSeenIn::Etcd }
    }

    fn released(m: &str) -> Change {
        Change::LeaderKeyReleased { holder: Some(m.into()) }
    }

    fn pg_down(m: &str) -> Change {
        Change::PostgresUnreachable { member: m.into(), reason: FailureReason::ConnectRefused }
    }

    fn writable(m: &str) -> Change {
        Change::PostgresWritable { member: m.into() }
    }

    fn routed(m: &str) -> Change {
        Change::HaproxyServer {
            up: true,
            haproxy: "h".into(),
            backend: "primary".into(),
            server: m.into(),
            member: Some(m.into()),
            route: Route::Primary,
            check: String::new(),
        }
    }

    fn outage_started() -> Change {
        Change::OutageStarted { probe: ProbeKind::Write, reason: FailureReason::ClosedConnection }
    }

    fn outage_ended(from: Instant, to: Instant, lost: Option<u64>) -> Change {
        Change::OutageEnded { probe: ProbeKind::Write, outage: Outage { last_success: from, recovered: to }, lost }
    }

    fn known(t: &mut Tracker, leader: &str) {
        t.apply(&Change::LeaderKnown { holder: Some(leader.into()) }, Instant::now());
    }

    #[test]
    fn graceful_failover_has_every_phase_in_order() {
        let t0 = Instant::now();
        let mut t = Tracker::new("demo", sees_all());
        t.apply(&acquired("node1"), at(t0, 0));
        assert_eq!(t.leader.as_deref(), Some("node1"));
        assert!(t.last.is_none(), "first sight of a leader is not a failover");
        t.apply(&Change::WriteSucceeded, at(t0, 1000));
        t.apply(&outage_started(), at(t0, 1000));
        t.apply(&pg_down("node1"), at(t0, 1040));
        t.apply(&released("node1"), at(t0, 2200));
        t.apply(&acquired("node2"), at(t0, 3400));
        t.apply(&writable("node2"), at(t0, 3600));
        t.apply(&routed("node2"), at(t0, 3900));
        assert!(t.last.is_none(), "waits for the first write");
        let listed = t.apply(&outage_ended(at(t0, 1000), at(t0, 4100), Some(0)), at(t0, 4100));
        let kinds: Vec<EventKind> = listed.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::WriteOutageEnded, EventKind::Failover]);
        let f = t.last.clone().expect("closed");
        assert_eq!((f.old_leader.as_deref(), f.new_leader.as_str(), f.planned), (Some("node1"), "node2", false));
        assert_eq!(f.steps.len(), 7);
        let phases: Vec<(Phase, u64)> = f.phases.iter().map(|(p, s)| (*p, (s * 1000.0).round() as u64)).collect();
        assert_eq!(
            phases,
            vec![
                (Phase::Detection, 40),
                (Phase::KeyRelease, 1160),
                (Phase::Election, 1200),
                (Phase::Promotion, 200),
                (Phase::Routing, 300),
                (Phase::Reconnect, 200)
            ]
        );
        assert_eq!(f.write_downtime_seconds, Some(3.1));
        assert_eq!(f.lost_writes, Some(0));
        assert_eq!((t.unplanned_total, t.planned_total), (1, 0));
        assert_eq!(t.leader.as_deref(), Some("node2"));
        assert_eq!(t.phase_hists[Phase::Election.index()].count, 1);
        let failover = t.events.iter().find(|e| e.kind == EventKind::Failover).unwrap();
        assert_eq!(failover.detail, "node1 -> node2, unplanned, write downtime 3.100s");
    }

    /// The graceful failover's changes, in order, with their times in ms.
    fn graceful(t0: Instant) -> Vec<(Change, Instant)> {
        vec![
            (acquired("node1"), at(t0, 0)),
            (Change::WriteSucceeded, at(t0, 1000)),
            (outage_started(), at(t0, 1000)),
            (pg_down("node1"), at(t0, 1040)),
            (Change::SwitchoverRequested { request: r#"{"leader":"node1"}"#.into() }, at(t0, 1100)),
            (released("node1"), at(t0, 2200)),
            (acquired("node2"), at(t0, 3400)),
            (writable("node2"), at(t0, 3600)),
            (routed("node2"), at(t0, 3900)),
            (outage_ended(at(t0, 1000), at(t0, 4100), Some(0)), at(t0, 4100)),
        ]
    }

    /// The same change with every free-text field emptied.
    fn blanked(c: Change) -> Change {
        match c {
            Change::HaproxyServer { up, member, route, .. } => Change::HaproxyServer {
                up,
                member,
                route,
                haproxy: String::new(),
                backend: String::new(),
                server: String::new(),
                check: String::new(),
            },
            Change::SwitchoverRequested { .. } => Change::SwitchoverRequested { request: String::new() },
            other => other,
        }
    }

    #[test]
    fn the_failover_does_not_depend_on_any_text() {
        let t0 = Instant::now();
        let run = |changes: Vec<(Change, Instant)>| {
            let mut t = Tracker::new("demo", sees_all());
            for (c, at) in changes {
                t.apply(&c, at);
            }
            let f = t.last.expect("closed");
            (f.old_leader, f.new_leader, f.planned, f.step_at, f.phases, f.write_downtime_seconds, f.lost_writes)
        };
        let blank = graceful(t0).into_iter().map(|(c, at)| (blanked(c), at)).collect();
        let (as_is, without_text) = (run(graceful(t0)), run(blank));
        assert_eq!(as_is, without_text);
        assert!(as_is.2, "planned: the switchover request counts, whatever it says");
    }

    #[test]
    fn a_step_seen_late_is_bounded_by_the_step_that_implies_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new("s", sees_all());
        known(&mut t, "a");
        t.apply(&outage_started(), at(t0, 0));
        t.apply(&released("a"), at(t0, 100));
        t.apply(&acquired("b"), at(t0, 200));
        t.apply(&outage_ended(at(t0, 0), at(t0, 300), Some(0)), at(t0, 300));
        // HAProxy's slower poll and the direct probe saw it after the write went through.
        t.apply(&writable("b"), at(t0, 350));
        t.apply(&routed("b"), at(t0, 400));
        let f = t.last.expect("closed");
        assert!(f.step_at[Step::HaproxyRouted].unwrap() <= f.step_at[Step::FirstWriteOk].unwrap());
        let order: Vec<Instant> = f.step_at.seen().map(|(_, at)| at).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "steps in time order");
    }

    #[test]
    fn the_old_leader_is_not_lost_before_its_last_acknowledged_write() {
        let t0 = Instant::now();
        let mut t = Tracker::new("s", sees_all());
        known(&mut t, "a");
        // The direct probe's session closed 8 ms before a commit through HAProxy was answered.
        t.apply(&pg_down("a"), at(t0, 0));
        t.apply(&outage_started(), at(t0, 8));
        t.apply(&released("a"), at(t0, 100));
        t.apply(&acquired("b"), at(t0, 200));
        t.apply(&writable("b"), at(t0, 250));
        t.apply(&routed("b"), at(t0, 280));
        t.apply(&outage_ended(at(t0, 8), at(t0, 300), Some(0)), at(t0, 300));
        let f = t.last.expect("closed");
        assert_eq!(f.step_at[Step::OldLeaderLost], Some(at(t0, 8)));
        let order: Vec<Instant> = f.step_at.seen().map(|(_, at)| at).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "steps in time order: {:?}", f.steps);
        assert_eq!(f.phases.first().map(|(p, s)| (*p, *s)), Some((Phase::Detection, 0.0)));
    }

    #[test]
    fn switchover_is_planned_and_same_leader_again_is_no_failover() {
        let t0 = Instant::now();
        let mut t = Tracker::new("s", Sees::default());
        known(&mut t, "a");
        t.apply(&Change::SwitchoverRequested { request: String::new() }, at(t0, 0));
        t.apply(&released("a"), at(t0, 500));
        t.apply(&acquired("b"), at(t0, 900));
        assert!(t.last.as_ref().unwrap().planned);
        assert_eq!((t.planned_total, t.unplanned_total), (1, 0));
        // DCS outage: b demotes itself, then takes the key again.
        t.apply(
            &Change::LeftPrimary {
                member: "b".into(),
                role: Role::Replica,
                state: crate::model::patroni::PgState::Running,
            },
            at(t0, 5000),
        );
        t.apply(&acquired("b"), at(t0, 9000));
        t.tick(at(t0, 400_000));
        assert_eq!((t.planned_total, t.unplanned_total), (1, 0));
    }

    #[test]
    fn a_leader_that_recovers_cancels_the_failover_it_seemed_to_start() {
        let t0 = Instant::now();
        let mut t = Tracker::new("s", sees_all());
        known(&mut t, "a");
        t.apply(&Change::MemberUnreachable { member: "a".into() }, at(t0, 0));
        t.apply(&Change::MemberReachable { member: "a".into(), role: Role::Primary }, at(t0, 3000));
        // A real failover later must not inherit the hang's detection time.
        t.apply(&pg_down("a"), at(t0, 10_000));
        t.apply(&acquired("b"), at(t0, 12_000));
        t.tick(at(t0, 80_000));
        let f = t.last.expect("closed");
        assert_eq!(f.step_at[Step::OldLeaderLost], Some(at(t0, 10_000)));
        assert_eq!(t.unplanned_total, 1);
    }

    #[test]
    fn completion_window_counts_from_the_new_leader_and_two_changes_are_two_failovers() {
        let t0 = Instant::now();
        let mut t = Tracker::new("s", sees_all());
        known(&mut t, "a");
        // The leader is lost long before anyone takes the key (a DCS outage).
        t.apply(&pg_down("a"), at(t0, 0));
        t.apply(&acquired("b"), at(t0, 100_000));
        assert!(t.last.is_none(), "still waiting for b's other steps");
        t.apply(&writable("b"), at(t0, 100_200));
        // Before b's failover closed, c takes over.
        t.apply(&acquired("c"), at(t0, 110_000));
        assert_eq!(t.last.as_ref().map(|f| f.new_leader.as_str()), Some("b"));
        t.tick(at(t0, 171_000));
        let f = t.last.clone().unwrap();
        assert_eq!((f.old_leader.as_deref(), f.new_leader.as_str()), (Some("b"), "c"));
        assert_eq!(t.unplanned_total, 2);
        // A leader back as a replica after a silence is no recovery.
        t.apply(&Change::MemberUnreachable { member: "c".into() }, at(t0, 200_000));
        t.apply(&Change::MemberReachable { member: "c".into(), role: Role::Replica }, at(t0, 201_000));
        t.apply(&acquired("d"), at(t0, 202_000));
        t.tick(at(t0, 263_000));
        assert_eq!(t.last.unwrap().step_at[Step::OldLeaderLost], Some(at(t0, 200_000)));
    }

    #[test]
    fn unseen_steps_close_after_the_completion_window() {
        let t0 = Instant::now();
        let mut t = Tracker::new("s", sees_all());
        known(&mut t, "a");
        t.apply(&acquired("b"), at(t0, 0));
        assert!(t.tick(at(t0, 30_000)).is_empty());
        let closed = t.tick(at(t0, 61_000));
        assert_eq!(closed.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Failover]);
        let f = t.last.expect("closed after the window");
        assert_eq!(f.write_downtime_seconds, None);
        assert_eq!(f.steps.len(), 1);
    }

    #[test]
    fn events_are_bounded_and_each_apply_returns_its_own() {
        let mut t = Tracker::new("s", Sees::default());
        for i in 0..(EVENTS_KEPT + 50) {
            let listed = t.apply(&Change::EtcdLeaderChanged { from: i.to_string(), to: "x".into() }, Instant::now());
            assert_eq!(listed.len(), 1);
        }
        assert_eq!(t.events.len(), EVENTS_KEPT);
        assert_eq!(t.events.front().unwrap().detail, "50 -> x");
        assert!(t.apply(&Change::WriteSucceeded, Instant::now()).is_empty(), "kept, not listed");
    }
}
