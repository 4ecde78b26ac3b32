//! Cluster events and the failover timeline.
//!
//! Every source reports the state changes it sees as events, timed by that source (the leader
//! key watched in etcd, each member's REST API, HAProxy's stats, the probes). A failover is
//! assembled from them, step by step:
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
//! poll saw. Phases are the times between consecutive steps present.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::probe::{Hist, OUTAGE_BUCKETS};

/// How many events each cluster keeps for `/api/v1/events`.
pub const EVENTS_KEPT: usize = 1000;
/// A failover that has not completed this long after its new leader is closed with the steps
/// it has.
const FAILOVER_COMPLETION: Duration = Duration::from_secs(60);
/// A leader lost that no new leader followed within this long is forgotten.
const LOST_LEADER_FORGET: Duration = Duration::from_secs(300);
/// A switchover request counts its failover as planned if the leader changes within this long.
const SWITCHOVER_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    MemberUnreachable,
    MemberReachable,
    BecamePrimary,
    LeftPrimary,
    LeaderKeyReleased,
    LeaderKeyAcquired,
    SwitchoverRequested,
    EtcdLeaderChanged,
    HaproxyServerUp,
    HaproxyServerDown,
    PostgresUnreachable,
    PostgresWritable,
    WriteOutageStarted,
    WriteOutageEnded,
    ReadOutageStarted,
    ReadOutageEnded,
    LostWrites,
    Failover,
    VerdictChanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix time in seconds.
    pub time: f64,
    pub scope: String,
    pub kind: EventKind,
    pub member: Option<String>,
    pub detail: String,
    #[serde(skip)]
    pub at: Instant,
}

pub fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at <= now {
        SystemTime::now() - (now - at)
    } else {
        SystemTime::now() + (at - now)
    }
}

pub fn unix(at: Instant) -> f64 {
    wall(at).duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The steps of a failover, in order; `Phase` i runs from step i to step i + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    LastWriteOk,
    OldLeaderLost,
    LeaderKeyReleased,
    LeaderKeyAcquired,
    NewPrimaryWritable,
    HaproxyRouted,
    FirstWriteOk,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::LastWriteOk,
        Step::OldLeaderLost,
        Step::LeaderKeyReleased,
        Step::LeaderKeyAcquired,
        Step::NewPrimaryWritable,
        Step::HaproxyRouted,
        Step::FirstWriteOk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::LastWriteOk => "last_write_ok",
            Step::OldLeaderLost => "old_leader_lost",
            Step::LeaderKeyReleased => "leader_key_released",
            Step::LeaderKeyAcquired => "leader_key_acquired",
            Step::NewPrimaryWritable => "new_primary_writable",
            Step::HaproxyRouted => "haproxy_routed",
            Step::FirstWriteOk => "first_write_ok",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// The phase ending at each step after the first: the `phase` label.
pub const PHASES: [(&str, Step); 6] = [
    ("detection", Step::OldLeaderLost),
    ("key_release", Step::LeaderKeyReleased),
    ("election", Step::LeaderKeyAcquired),
    ("promotion", Step::NewPrimaryWritable),
    ("routing", Step::HaproxyRouted),
    ("reconnect", Step::FirstWriteOk),
];

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    pub old_leader: Option<String>,
    pub new_leader: String,
    pub planned: bool,
    /// Unix time of each step seen, in `Step::ALL` order.
    pub steps: Vec<(String, f64)>,
    /// Seconds of each phase whose both ends were seen.
    pub phases: Vec<(String, f64)>,
    /// From the last write before to the first write after, through HAProxy.
    pub write_downtime_seconds: Option<f64>,
    pub lost_writes: Option<u64>,
    /// Unix time the new leader took the key (or claimed primary).
    pub time: f64,
    #[serde(skip)]
    pub step_at: [Option<Instant>; 7],
}

impl Failover {
    pub fn phase_seconds(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        for (name, end) in PHASES {
            let i = end.index();
            // A phase runs from the closest earlier step seen.
            let start = self.step_at[..i].iter().rev().flatten().next();
            if let (Some(s), Some(e)) = (start, self.step_at[i]) {
                out.push((name, e.saturating_duration_since(*s).as_secs_f64()));
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Pending {
    old_leader: Option<String>,
    new_leader: Option<String>,
    steps: [Option<Instant>; 7],
    lost_writes: Option<u64>,
    opened: Instant,
}

impl Pending {
    fn new(old_leader: Option<String>, now: Instant) -> Self {
        Self { old_leader, new_leader: None, steps: [None; 7], lost_writes: None, opened: now }
    }

    fn set_once(&mut self, step: Step, at: Instant) {
        let slot = &mut self.steps[step.index()];
        if slot.is_none() {
            *slot = Some(at);
        }
    }
}

/// What the tracker knows of the sources a cluster has: a step that no source can see is not
/// waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sees {
    pub write_probe: bool,
    pub direct_probe: bool,
    pub haproxy: bool,
}

/// Assembles failovers from events and keeps their statistics.
#[derive(Debug)]
pub struct Tracker {
    pub sees: Sees,
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
    pub phase_hists: Vec<(&'static str, Hist)>,
    pub downtime_hist: Hist,
    pub events: VecDeque<Event>,
    pub haproxy_transitions: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new(Sees::default())
    }
}

impl Tracker {
    pub fn new(sees: Sees) -> Self {
        Self {
            sees,
            leader: None,
            pending: None,
            switchover_requested: None,
            write_outage_since: None,
            last_write_ok: None,
            last: None,
            planned_total: 0,
            unplanned_total: 0,
            phase_hists: PHASES.iter().map(|(n, _)| (*n, Hist::new(OUTAGE_BUCKETS))).collect(),
            downtime_hist: Hist::new(OUTAGE_BUCKETS),
            events: VecDeque::new(),
            haproxy_transitions: 0,
        }
    }

    fn push(&mut self, scope: &str, kind: EventKind, member: Option<&str>, detail: String, at: Instant) {
        if self.events.len() >= EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            time: unix(at),
            scope: scope.to_string(),
            kind,
            member: member.map(str::to_string),
            detail,
            at,
        });
    }

    /// The leader known when the exporter starts (or when the key is first read): not a failover.
    pub fn set_initial_leader(&mut self, leader: Option<String>) {
        if self.leader.is_none() && self.pending.is_none() {
            self.leader = leader;
        }
    }

    /// The write probe succeeded at `at` outside an outage.
    pub fn write_ok(&mut self, at: Instant) {
        self.last_write_ok = Some(at);
    }

    /// Records an event and advances the failover being assembled.
    pub fn event(&mut self, scope: &str, kind: EventKind, member: Option<&str>, detail: String, at: Instant) {
        self.push(scope, kind, member, detail.clone(), at);
        let is_leader = |m: Option<&str>, l: &Option<String>| m.is_some() && m == l.as_deref();
        match kind {
            EventKind::MemberUnreachable | EventKind::LeftPrimary | EventKind::PostgresUnreachable
                if is_leader(member, &self.leader) =>
            {
                let last_write = self.write_outage_since.or(self.last_write_ok);
                let p = self.pending.get_or_insert_with(|| Pending::new(self.leader.clone(), at));
                p.set_once(Step::OldLeaderLost, at);
                if let Some(w) = last_write.filter(|w| *w <= at) {
                    p.set_once(Step::LastWriteOk, w);
                }
            }
            EventKind::LeaderKeyReleased => {
                let holder = member.map(str::to_string).or_else(|| self.leader.clone());
                let last_write = self.write_outage_since.or(self.last_write_ok);
                let p = self.pending.get_or_insert_with(|| Pending::new(holder, at));
                p.set_once(Step::LeaderKeyReleased, at);
                if let Some(w) = last_write.filter(|w| *w <= at) {
                    p.set_once(Step::LastWriteOk, w);
                }
            }
            EventKind::LeaderKeyAcquired => {
                let new = member.unwrap_or_default().to_string();
                if self.leader.as_deref() == Some(new.as_str()) {
                    // The same member took the key again (e.g. after a DCS outage): no leader
                    // change, no failover.
                    if self.pending.as_ref().is_some_and(|p| p.new_leader.is_none()) {
                        self.pending = None;
                    }
                    return;
                }
                if self.leader.is_none() && self.pending.is_none() {
                    // First sight of a leader: nothing failed over.
                    self.leader = Some(new);
                    return;
                }
                if self.pending.as_ref().is_some_and(|p| p.new_leader.is_some()) {
                    // A second leader change before the first closed (A -> B -> C): two failovers.
                    self.close_pending(scope, at);
                }
                let last_write = self.write_outage_since.or(self.last_write_ok);
                let old = self.leader.clone();
                let p = self.pending.get_or_insert_with(|| Pending::new(old, at));
                if let Some(w) = last_write.filter(|w| *w <= at) {
                    p.set_once(Step::LastWriteOk, w);
                }
                p.new_leader = Some(new.clone());
                p.set_once(Step::LeaderKeyAcquired, at);
                self.leader = Some(new);
            }
            EventKind::PostgresWritable => {
                if let Some(p) =
                    self.pending.as_mut().filter(|p| p.new_leader.is_some() && p.new_leader.as_deref() == member)
                {
                    p.set_once(Step::NewPrimaryWritable, at);
                }
                self.leader_recovered(member);
            }
            // Back as a replica (it demoted while silent) is no recovery of the leader.
            EventKind::MemberReachable if detail.contains("as primary") => self.leader_recovered(member),
            EventKind::BecamePrimary => self.leader_recovered(member),
            EventKind::HaproxyServerUp | EventKind::HaproxyServerDown => {
                self.haproxy_transitions += 1;
                if kind == EventKind::HaproxyServerUp && detail.starts_with("route=primary") {
                    if let Some(p) =
                        self.pending.as_mut().filter(|p| p.new_leader.is_some() && p.new_leader.as_deref() == member)
                    {
                        p.set_once(Step::HaproxyRouted, at);
                    }
                }
            }
            // The first request of a window counts: Patroni may rewrite the key while it acts.
            EventKind::SwitchoverRequested
                if self.switchover_requested.is_none_or(|r| at.saturating_duration_since(r) > SWITCHOVER_WINDOW) =>
            {
                self.switchover_requested = Some(at)
            }
            _ => {}
        }
        self.maybe_close(scope, at);
    }

    /// The current leader works again before any other member took over (a short hang, a DCS
    /// outage it survived): what looked like the start of a failover was not one.
    fn leader_recovered(&mut self, member: Option<&str>) {
        if member.is_some()
            && member == self.leader.as_deref()
            && self.pending.as_ref().is_some_and(|p| p.new_leader.is_none())
        {
            self.pending = None;
        }
    }

    /// The write probe's outage began (at its last success).
    pub fn write_outage_started(&mut self, last_success: Instant) {
        self.write_outage_since = Some(last_success);
        if let Some(p) = self.pending.as_mut() {
            // The probe's own outage start wins over a guess made when another source noticed
            // the loss first: the failover's write downtime is the probe's outage.
            p.steps[Step::LastWriteOk.index()] = Some(last_success);
        }
    }

    /// The write probe's outage ended; `lost` acknowledged writes were missing after it.
    pub fn write_outage_ended(&mut self, scope: &str, recovered: Instant, lost: Option<u64>) {
        let since = self.write_outage_since.take();
        self.last_write_ok = Some(recovered);
        if let Some(p) = self.pending.as_mut() {
            if let Some(s) = since {
                p.steps[Step::LastWriteOk.index()] = Some(s);
            }
            if p.new_leader.is_some() {
                p.set_once(Step::FirstWriteOk, recovered);
                p.lost_writes = lost;
            }
        }
        self.maybe_close(scope, recovered);
    }

    /// Closes timed-out failovers; call periodically.
    pub fn tick(&mut self, scope: &str, now: Instant) {
        self.maybe_close(scope, now);
    }

    fn maybe_close(&mut self, scope: &str, now: Instant) {
        let Some(p) = &self.pending else { return };
        let Some(acquired) = p.steps[Step::LeaderKeyAcquired.index()] else {
            if now.saturating_duration_since(p.opened) > LOST_LEADER_FORGET {
                self.pending = None;
            }
            return;
        };
        let seen_all = (!self.sees.haproxy || p.steps[Step::HaproxyRouted.index()].is_some())
            && (!self.sees.direct_probe || p.steps[Step::NewPrimaryWritable.index()].is_some())
            && (!self.sees.write_probe || p.steps[Step::FirstWriteOk.index()].is_some());
        if seen_all || now.saturating_duration_since(acquired) >= FAILOVER_COMPLETION {
            self.close_pending(scope, now);
        }
    }

    fn close_pending(&mut self, scope: &str, now: Instant) {
        let Some(p) = self.pending.take() else { return };
        let failover = self.close(p);
        let detail = format!(
            "{} -> {}, {}, write downtime {}",
            failover.old_leader.as_deref().unwrap_or("?"),
            failover.new_leader,
            if failover.planned { "planned" } else { "unplanned" },
            failover.write_downtime_seconds.map(|d| format!("{d:.3}s")).unwrap_or_else(|| "unknown".into())
        );
        let new_leader = failover.new_leader.clone();
        let at = failover.step_at[Step::LeaderKeyAcquired.index()].unwrap_or(now);
        self.push(scope, EventKind::Failover, Some(&new_leader), detail, at);
        self.last = Some(failover);
    }

    fn close(&mut self, p: Pending) -> Failover {
        let mut steps = p.steps;
        // Causal bounds: a later step proves the earlier ones happened by then.
        let bound = |steps: &mut [Option<Instant>; 7], earlier: Step, later: Step| {
            if let (Some(e), Some(l)) = (steps[earlier.index()], steps[later.index()]) {
                if e > l {
                    steps[earlier.index()] = Some(l);
                }
            }
        };
        bound(&mut steps, Step::HaproxyRouted, Step::FirstWriteOk);
        bound(&mut steps, Step::NewPrimaryWritable, Step::FirstWriteOk);
        bound(&mut steps, Step::NewPrimaryWritable, Step::HaproxyRouted);
        let acquired = steps[Step::LeaderKeyAcquired.index()];
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
        let downtime = match (steps[Step::LastWriteOk.index()], steps[Step::FirstWriteOk.index()]) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64()),
            _ => None,
        };
        let mut failover = Failover {
            old_leader: p.old_leader,
            new_leader: p.new_leader.unwrap_or_default(),
            planned,
            steps: Step::ALL
                .iter()
                .zip(steps.iter())
                .filter_map(|(s, at)| at.map(|a| (s.as_str().to_string(), unix(a))))
                .collect(),
            phases: Vec::new(),
            write_downtime_seconds: downtime,
            lost_writes: p.lost_writes,
            time: acquired.map(unix).unwrap_or_else(|| unix(Instant::now())),
            step_at: steps,
        };
        let phases = failover.phase_seconds();
        for (name, secs) in &phases {
            if let Some((_, h)) = self.phase_hists.iter_mut().find(|(n, _)| n == name) {
                h.observe(*secs);
            }
        }
        if let Some(d) = downtime {
            self.downtime_hist.observe(d);
        }
        failover.phases = phases.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
        failover
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn sees_all() -> Sees {
        Sees { write_probe: true, direct_probe: true, haproxy: true }
    }

    #[test]
    fn graceful_failover_has_every_phase_in_order() {
        let t0 = Instant::now();
        let mut t = Tracker::new(sees_all());
        t.event("demo", EventKind::LeaderKeyAcquired, Some("node1"), String::new(), at(t0, 0));
        assert_eq!(t.leader.as_deref(), Some("node1"));
        assert!(t.last.is_none(), "first sight of a leader is not a failover");
        t.write_ok(at(t0, 1000));
        t.write_outage_started(at(t0, 1000));
        t.event("demo", EventKind::PostgresUnreachable, Some("node1"), String::new(), at(t0, 1040));
        t.event("demo", EventKind::LeaderKeyReleased, Some("node1"), String::new(), at(t0, 2200));
        t.event("demo", EventKind::LeaderKeyAcquired, Some("node2"), String::new(), at(t0, 3400));
        t.event("demo", EventKind::PostgresWritable, Some("node2"), String::new(), at(t0, 3600));
        t.event("demo", EventKind::HaproxyServerUp, Some("node2"), "route=primary".into(), at(t0, 3900));
        assert!(t.last.is_none(), "waits for the first write");
        t.write_outage_ended("demo", at(t0, 4100), Some(0));
        let f = t.last.clone().expect("closed");
        assert_eq!((f.old_leader.as_deref(), f.new_leader.as_str(), f.planned), (Some("node1"), "node2", false));
        assert_eq!(f.steps.len(), 7);
        let phases: Vec<(&str, u64)> =
            f.phase_seconds().iter().map(|(n, s)| (*n, (s * 1000.0).round() as u64)).collect();
        assert_eq!(
            phases,
            vec![
                ("detection", 40),
                ("key_release", 1160),
                ("election", 1200),
                ("promotion", 200),
                ("routing", 300),
                ("reconnect", 200)
            ]
        );
        assert_eq!(f.write_downtime_seconds, Some(3.1));
        assert_eq!(f.lost_writes, Some(0));
        assert_eq!((t.unplanned_total, t.planned_total), (1, 0));
        assert_eq!(t.leader.as_deref(), Some("node2"));
        assert!(t.events.iter().any(|e| e.kind == EventKind::Failover));
    }

    #[test]
    fn a_step_seen_late_is_bounded_by_the_step_that_implies_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(sees_all());
        t.set_initial_leader(Some("a".into()));
        t.write_outage_started(at(t0, 0));
        t.event("s", EventKind::LeaderKeyReleased, Some("a"), String::new(), at(t0, 100));
        t.event("s", EventKind::LeaderKeyAcquired, Some("b"), String::new(), at(t0, 200));
        t.write_outage_ended("s", at(t0, 300), Some(0));
        // HAProxy's slower poll and the direct probe saw it after the write went through.
        t.event("s", EventKind::PostgresWritable, Some("b"), String::new(), at(t0, 350));
        t.event("s", EventKind::HaproxyServerUp, Some("b"), "route=primary".into(), at(t0, 400));
        let f = t.last.expect("closed");
        let routed = f.step_at[Step::HaproxyRouted.index()].unwrap();
        let first = f.step_at[Step::FirstWriteOk.index()].unwrap();
        assert!(routed <= first);
        let order: Vec<Instant> = f.step_at.iter().flatten().copied().collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "steps in time order");
    }

    #[test]
    fn switchover_is_planned_and_same_leader_again_is_no_failover() {
        let t0 = Instant::now();
        let mut t = Tracker::new(Sees::default());
        t.set_initial_leader(Some("a".into()));
        t.event("s", EventKind::SwitchoverRequested, None, String::new(), at(t0, 0));
        t.event("s", EventKind::LeaderKeyReleased, Some("a"), String::new(), at(t0, 500));
        t.event("s", EventKind::LeaderKeyAcquired, Some("b"), String::new(), at(t0, 900));
        assert!(t.last.as_ref().unwrap().planned);
        assert_eq!((t.planned_total, t.unplanned_total), (1, 0));
        // DCS outage: b demotes itself, then takes the key again.
        t.event("s", EventKind::LeftPrimary, Some("b"), String::new(), at(t0, 5000));
        t.event("s", EventKind::LeaderKeyAcquired, Some("b"), String::new(), at(t0, 9000));
        t.tick("s", at(t0, 400_000));
        assert_eq!((t.planned_total, t.unplanned_total), (1, 0));
    }

    #[test]
    fn a_leader_that_recovers_cancels_the_failover_it_seemed_to_start() {
        let t0 = Instant::now();
        let mut t = Tracker::new(sees_all());
        t.set_initial_leader(Some("a".into()));
        t.event("s", EventKind::MemberUnreachable, Some("a"), String::new(), at(t0, 0));
        t.event("s", EventKind::MemberReachable, Some("a"), "REST API answers again as primary".into(), at(t0, 3000));
        // A real failover later must not inherit the hang's detection time.
        t.event("s", EventKind::PostgresUnreachable, Some("a"), String::new(), at(t0, 10_000));
        t.event("s", EventKind::LeaderKeyAcquired, Some("b"), String::new(), at(t0, 12_000));
        t.tick("s", at(t0, 80_000));
        let f = t.last.expect("closed");
        assert_eq!(f.step_at[Step::OldLeaderLost.index()], Some(at(t0, 10_000)));
        assert_eq!(t.unplanned_total, 1);
    }

    #[test]
    fn completion_window_counts_from_the_new_leader_and_two_changes_are_two_failovers() {
        let t0 = Instant::now();
        let mut t = Tracker::new(sees_all());
        t.set_initial_leader(Some("a".into()));
        // The leader is lost long before anyone takes the key (a DCS outage).
        t.event("s", EventKind::PostgresUnreachable, Some("a"), String::new(), at(t0, 0));
        t.event("s", EventKind::LeaderKeyAcquired, Some("b"), String::new(), at(t0, 100_000));
        assert!(t.last.is_none(), "still waiting for b's other steps");
        t.event("s", EventKind::PostgresWritable, Some("b"), String::new(), at(t0, 100_200));
        // Before b's failover closed, c takes over.
        t.event("s", EventKind::LeaderKeyAcquired, Some("c"), String::new(), at(t0, 110_000));
        assert_eq!(t.last.as_ref().map(|f| f.new_leader.as_str()), Some("b"));
        t.tick("s", at(t0, 171_000));
        let f = t.last.clone().unwrap();
        assert_eq!((f.old_leader.as_deref(), f.new_leader.as_str()), (Some("b"), "c"));
        assert_eq!(t.unplanned_total, 2);
        // A leader back as a replica after a silence is no recovery.
        t.event("s", EventKind::MemberUnreachable, Some("c"), String::new(), at(t0, 200_000));
        t.event(
            "s",
            EventKind::MemberReachable,
            Some("c"),
            "REST API answers again as replica".into(),
            at(t0, 201_000),
        );
        t.event("s", EventKind::LeaderKeyAcquired, Some("d"), String::new(), at(t0, 202_000));
        t.tick("s", at(t0, 263_000));
        assert_eq!(t.last.unwrap().step_at[Step::OldLeaderLost.index()], Some(at(t0, 200_000)));
    }

    #[test]
    fn unseen_steps_close_after_the_completion_window() {
        let t0 = Instant::now();
        let mut t = Tracker::new(sees_all());
        t.set_initial_leader(Some("a".into()));
        t.event("s", EventKind::LeaderKeyAcquired, Some("b"), String::new(), at(t0, 0));
        t.tick("s", at(t0, 30_000));
        assert!(t.last.is_none());
        t.tick("s", at(t0, 61_000));
        let f = t.last.expect("closed after the window");
        assert_eq!(f.write_downtime_seconds, None);
        assert_eq!(f.steps.len(), 1);
    }

    #[test]
    fn events_are_bounded() {
        let mut t = Tracker::new(Sees::default());
        for i in 0..(EVENTS_KEPT + 50) {
            t.event("s", EventKind::EtcdLeaderChanged, None, i.to_string(), Instant::now());
        }
        assert_eq!(t.events.len(), EVENTS_KEPT);
        assert_eq!(t.events.front().unwrap().detail, "50");
    }
}
