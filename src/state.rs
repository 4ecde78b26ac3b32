//! The state of one cluster: every target's latest reading and health, the members known, the
//! probes' counters and the failover timeline.
//!
//! Collectors and probes never lock it: they hand a whole reading to one of the `apply_*`
//! methods, which takes the lock once, updates the reading and the target's health together,
//! derives the typed changes and feeds them to the tracker, then logs after the lock is released
//! (a slow stderr must not hold up `/metrics`). Readers get a read guard: the data's fields are
//! public to read, and only this module can write them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::config::ClusterPlan;
use crate::model::address::HostPort;
use crate::model::etcd::{EtcdRound, EtcdView};
use crate::model::haproxy::{member_of, server_transitions, Routes, Stats};
use crate::model::patroni::{summarize, ClusterView, FoundMember, MemberStatus, Summary};
use crate::model::probe::{
    Attempt, DirectOutcome, DirectStatus, FailureReason, Outage, ProbeKind, ProbeStats, Transition,
};
use crate::model::source::{HealthChange, Reading, Source, TargetHealth};
use crate::model::verdict::Verdict;
use crate::model::vip::{Answer, VipRound, VipView, VIP_TARGET};
use crate::tasks::Cadence;
use crate::timeline::{Change, Event, LeaderSeenIn, Sees, Tracker};

/// A member as discovery knows it, with its latest own answer.
#[derive(Debug, Clone)]
pub struct Member {
    /// Base URL of its REST API, without a path.
    pub api_url: String,
    pub postgres: Option<HostPort>,
    /// Configured statically: never expires.
    pub fixed: bool,
    /// Listed by the latest discovery answer.
    pub present: bool,
    pub last_seen: Instant,
    pub health: TargetHealth,
    /// Its own `GET /patroni`; `None` when its last call failed.
    pub status: Option<MemberStatus>,
    /// The Patroni version it last told: kept while it is down, so the info series stays one.
    pub version: Option<String>,
}

/// One HAProxy instance.
#[derive(Debug, Clone)]
pub struct Haproxy {
    pub health: TargetHealth,
    pub routes: Routes,
    /// The last stats read successfully: transitions are found against it, so a change across a
    /// failed poll is not lost.
    last_good: Option<Stats>,
}

impl Haproxy {
    /// The stats of the last call, if it succeeded.
    pub fn stats(&self) -> Option<&Stats> {
        self.last_good.as_ref().filter(|_| self.health.up)
    }
}

/// The synthetic probes' state.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// This exporter instance's probe id (rows it writes carry it).
    pub probe_id: Option<String>,
    /// Through HAProxy's primary port.
    pub write: Option<ProbeStats>,
    /// Through HAProxy's replicas port.
    pub read: Option<ProbeStats>,
    /// How long the oldest acknowledged write the read probe did not see has been
    /// acknowledged, at its last success (zero when it saw them all).
    pub read_staleness_seconds: Option<f64>,
    /// Acknowledged writes missing after an outage, since the exporter started.
    pub lost_writes_total: u64,
    /// Acknowledged writes missing after the last write outage.
    pub last_outage_lost_writes: Option<u64>,
    /// Each member's own PostgreSQL.
    pub direct: BTreeMap<String, DirectStatus>,
}

#[derive(Debug)]
pub struct ClusterData {
    pub members: BTreeMap<String, Member>,
    /// Patroni discovery URLs (`patroni.discovery_urls`), each a target.
    pub discovery: BTreeMap<String, TargetHealth>,
    /// `/cluster` as one member sees it (Patroni's DCS view; stale during a DCS outage).
    pub dcs_view: Option<ClusterView>,
    /// Present when etcd is configured.
    pub etcd: Option<EtcdView>,
    pub haproxy: BTreeMap<String, Haproxy>,
    /// Present when the virtual IP in front of HAProxy is configured.
    pub vip: Option<VipView>,
    pub probes: Probes,
    /// Events and the failover timeline.
    pub timeline: Tracker,
    /// Members the latest discovery listed beyond `max_members`, not watched.
    pub members_dropped: usize,
    /// Without etcd: the sole primary last seen, which stands in for the leader key.
    sole_primary: Option<String>,
    verdict: Option<Verdict>,
}

impl ClusterData {
    /// The latest own answer of every member called so far (one not called yet is neither up
    /// nor down).
    pub fn statuses(&self) -> impl Iterator<Item = (&str, Option<&MemberStatus>)> {
        self.members.iter().filter(|(_, m)| m.health.attempted()).map(|(n, m)| (n.as_str(), m.status.as_ref()))
    }

    pub fn summary(&self) -> Summary {
        summarize(self.statuses(), self.dcs_view.as_ref())
    }

    /// Each member's PostgreSQL address, to match HAProxy servers to members.
    pub fn member_addresses(&self) -> BTreeMap<String, Option<HostPort>> {
        self.members.iter().map(|(n, m)| (n.clone(), m.postgres.clone())).collect()
    }

    /// Every target of `source` with its health.
    pub fn targets(&self, source: Source) -> Vec<(&str, &TargetHealth)> {
        match source {
            Source::Patroni => self
                .members
                .iter()
                .map(|(n, m)| (n.as_str(), &m.health))
                .chain(self.discovery.iter().map(|(u, h)| (u.as_str(), h)))
                .collect(),
            Source::Etcd => {
                self.etcd.iter().flat_map(|e| e.endpoints.iter().map(|(n, ep)| (n.as_str(), &ep.health))).collect()
            }
            Source::Haproxy => self.haproxy.iter().map(|(n, h)| (n.as_str(), &h.health)).collect(),
            Source::Vip => self
                .vip
                .iter()
                .flat_map(|v| {
                    let own = v.instances.iter().map(|(n, p)| (n.as_str(), &p.health));
                    std::iter::once((VIP_TARGET, &v.through_vip)).chain(own)
                })
                .collect(),
        }
    }

    /// Age of the stalest latest reading of `source`; `None` before any target answered a call.
    pub fn snapshot_age(&self, source: Source, now: Instant) -> Option<Duration> {
        let oldest = self.targets(source).into_iter().filter_map(|(_, h)| h.last_poll).min()?;
        Some(now.saturating_duration_since(oldest))
    }

    fn probe_stats(&mut self, probe: ProbeKind) -> &mut ProbeStats {
        match probe {
            ProbeKind::Write => self.probes.write.get_or_insert_with(ProbeStats::default),
            ProbeKind::Read => self.probes.read.get_or_insert_with(ProbeStats::default),
        }
    }

    /// The timeline's part of a probe attempt's transition.
    fn note_probe(&mut self, probe: ProbeKind, transition: Transition, attempt: &Attempt, logs: &mut Vec<Log>) {
        match transition {
            Transition::OutageStarted { last_success, reason } => {
                self.change(Change::OutageStarted { probe, reason }, last_success, logs)
            }
            Transition::OutageEnded(outage) if probe == ProbeKind::Read => {
                self.change(Change::OutageEnded { probe, outage, lost: None }, outage.recovered, logs)
            }
            Transition::None if probe == ProbeKind::Write && attempt.result.is_ok() => {
                self.change(Change::WriteSucceeded, attempt.finished, logs)
            }
            _ => {}
        }
    }

    fn change(&mut self, change: Change, at: Instant, logs: &mut Vec<Log>) {
        logs.extend(self.timeline.apply(&change, at).into_iter().map(Log::Event));
    }

    /// Folds one discovery answer into the known members: listed members are seen now; the
    /// others stay, marked absent, until `retention` has passed since they were last seen.
    fn observe(&mut self, found: Vec<FoundMember>, now: Instant, limits: (Duration, usize), logs: &mut Vec<Log>) {
        let (retention, max_members) = limits;
        for m in self.members.values_mut().filter(|m| !m.fixed) {
            m.present = false;
        }
        let (mut dropped, mut discovered) = (0, self.members.values().filter(|m| !m.fixed).count());
        for f in found {
            let known = self.members.contains_key(&f.name);
            if !known {
                if discovered >= max_members {
                    dropped += 1;
                    continue;
                }
                discovered += 1;
            }
            let entry = self.members.entry(f.name.clone()).or_insert_with(|| {
                logs.push(Log::Discovered { member: f.name.clone(), api_url: f.api_url.clone() });
                Member::new(f.api_url.clone(), None, false, now)
            });
            // What the configuration says of a static member stays.
            let mut moved = false;
            if !entry.fixed && entry.api_url != f.api_url {
                entry.api_url = f.api_url;
                moved = true;
            }
            if f.postgres.is_some() && !(entry.fixed && entry.postgres.is_some()) && entry.postgres != f.postgres {
                entry.postgres = f.postgres;
                moved = true;
            }
            // A known member at a new address: its tasks are started again at once.
            if known && moved {
                let (api_url, postgres) = (entry.api_url.clone(), entry.postgres.as_ref().map(|p| p.to_string()));
                logs.push(Log::Moved { member: f.name.clone(), api_url, postgres });
            }
            entry.present = true;
            entry.last_seen = now;
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.fixed && now.saturating_duration_since(m.last_seen) > retention)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.members.remove(&name);
            self.probes.direct.remove(&name);
            logs.push(Log::Forgotten { member: name });
        }
        if dropped > 0 && self.members_dropped == 0 {
            logs.push(Log::TooManyMembers { dropped, max_members });
        }
        self.members_dropped = dropped;
    }

    /// Without etcd, a new sole primary by the members' own answers stands in for the leader key.
    fn stand_in_for_leader_key(&mut self, at: Instant, logs: &mut Vec<Log>) {
        let Some(leader) = self.summary().leader().map(str::to_string) else { return };
        if self.sole_primary.as_ref() != Some(&leader) {
            self.sole_primary = Some(leader.clone());
            self.change(Change::LeaderKeyAcquired { member: leader, seen_in: LeaderSeenIn::OwnAnswers }, at, logs);
        }
    }
}

impl Member {
    fn new(api_url: String, postgres: Option<HostPort>, fixed: bool, now: Instant) -> Self {
        let health = TargetHealth::default();
        Self { api_url, postgres, fixed, present: true, last_seen: now, health, status: None, version: None }
    }
}

/// What a change of the virtual IP's holder (by the page read through it) is: `last` is the
/// last instance that answered, `failure` how the page failed when it fails now.
fn vip_change(
    before: Option<&str>,
    after: Option<&str>,
    last: Option<&str>,
    failure: Option<Answer>,
) -> Option<Change> {
    if before == after {
        return None;
    }
    Some(match after {
        None => Change::VipLost { holder: last.map(str::to_string), answer: failure.unwrap_or(Answer::BadAnswer) },
        Some(to) if last.is_some_and(|l| l != to) => {
            Change::VipMoved { from: last.unwrap_or_default().to_string(), to: to.to_string() }
        }
        Some(to) => Change::VipHeld { holder: to.to_string(), first: last.is_none() },
    })
}

/// What changed about a member between two of its own answers.
fn member_changes(name: &str, before: Option<&MemberStatus>, after: Option<&MemberStatus>) -> Vec<Change> {
    let member = name.to_string();
    match (before, after) {
        (Some(_), None) => vec![Change::MemberUnreachable { member }],
        (None, Some(a)) => vec![Change::MemberReachable { member, role: a.role }],
        (Some(b), Some(a)) if b.is_primary() && !a.is_primary() => {
            vec![Change::LeftPrimary { member, role: a.role, state: a.state }]
        }
        (Some(b), Some(a)) if !b.is_primary() && a.is_primary() => {
            vec![Change::BecamePrimary { member, timeline: a.timeline }]
        }
        _ => Vec::new(),
    }
}

/// A line to log once the lock is released.
#[derive(Debug)]
enum Log {
    Health { source: Source, target: String, change: HealthChange },
    Event(Event),
    Discovered { member: String, api_url: String },
    Forgotten { member: String },
    Moved { member: String, api_url: String, postgres: Option<String> },
    TooManyMembers { dropped: usize, max_members: usize },
}

impl Log {
    /// Whatever changed (an event, a target failing or back, a member found, moved or forgotten)
    /// starts a burst of fine-interval reading; only the warning about too many members does not.
    fn is_sign_of_change(&self) -> bool {
        !matches!(self, Log::TooManyMembers { .. })
    }
}

fn emit(scope: &str, logs: Vec<Log>) {
    for log in logs {
        match log {
            Log::Health { source, target, change: HealthChange::BackUp } => {
                tracing::info!(scope = %scope, source = source.as_str(), target, "target is back up")
            }
            Log::Health { source, target, change: HealthChange::Failing(e) } => {
                tracing::warn!(scope = %scope, source = source.as_str(), target, kind = e.kind.as_str(), error = %e.message, "target poll failed"
                )
            }
            Log::Event(e) => {
                tracing::info!(scope = %scope, event = e.kind.as_str(), member = e.member.as_deref().unwrap_or(""),
                detail = %e.detail, "event")
            }
            Log::Discovered { member, api_url } => tracing::info!(scope = %scope, member, api_url, "member discovered"),
            Log::Forgotten { member } => tracing::info!(scope = %scope, member, "member forgotten after retention"),
            Log::Moved { member, api_url, postgres } => {
                tracing::info!(scope = %scope, member, api_url, postgres = postgres.as_deref().unwrap_or(""), "member address changed")
            }
            Log::TooManyMembers { dropped, max_members } => {
                tracing::warn!(scope = %scope,
                    dropped,
                    max_members,
                    "discovery lists more members than max_members: not watched"
                )
            }
        }
    }
}

/// The write probe's account of its writes: the next sequence number and the acknowledged ones
/// the loss check still owes a look at. Kept here, not in the probe's task, so the state file
/// can save it and a restart resume it.
#[derive(Debug, Default, Clone)]
pub struct WriteLedger {
    /// The last sequence number used.
    pub seq: i64,
    /// Acknowledged sequence numbers with when, oldest first.
    pub acked: std::collections::VecDeque<(i64, Instant)>,
    /// A loss check is owed (an outage ended, or the exporter restarted, before it was made).
    pub check_owed: bool,
}

/// How far out of order hedged acknowledgements can come (at most 32 attempts wait at once).
const ACK_REORDER: i64 = 64;

impl WriteLedger {
    /// When the oldest acknowledged write newer than `visible` (the newest sequence number a
    /// reader sees) was acknowledged; `None` when the reader sees every acknowledged write.
    /// The acknowledgements are in the order they came, which hedged attempts can mix: the
    /// look back goes `ACK_REORDER` numbers below `visible`.
    pub fn unseen_since(&self, visible: Option<i64>) -> Option<Instant> {
        let visible = visible.unwrap_or(i64::MIN);
        let recent = |(seq, _): &&(i64, Instant)| *seq > visible.saturating_sub(ACK_REORDER);
        self.acked.iter().rev().take_while(recent).filter(|(seq, _)| *seq > visible).map(|(_, at)| *at).min()
    }
}

/// One cluster's plan and state.
#[derive(Debug)]
pub struct ClusterState {
    pub plan: ClusterPlan,
    data: RwLock<ClusterData>,
    /// Shared with the state a reload replaces: the old write probe may still finish an
    /// attempt while it is being stopped, and its sequence number and ack must land here too.
    ledger: Arc<Mutex<WriteLedger>>,
    /// Latched once every target has had its first call.
    ready: AtomicBool,
    /// Restarts of each collection task (by its name), since the exporter started.
    restarts: Mutex<BTreeMap<&'static str, u64>>,
    /// How fast the loops go: every event or health change noted here is an alarm.
    pub cadence: Cadence,
}

impl ClusterState {
    pub fn new(plan: ClusterPlan, probe_id: Option<String>) -> Self {
        let now = Instant::now();
        let sees = Sees {
            write_probe: plan.write_probe(),
            direct_probe: plan.direct_probes(),
            haproxy: !plan.haproxy.is_empty(),
        };
        let members = plan
            .patroni
            .members
            .iter()
            .map(|m| (m.name.clone(), Member::new(m.api_url.clone(), m.postgres.clone(), true, now)))
            .collect();
        let haproxy = plan
            .haproxy
            .iter()
            .map(|h| {
                (h.name.clone(), Haproxy { health: TargetHealth::default(), routes: h.routes.clone(), last_good: None })
            })
            .collect();
        let probes = Probes {
            probe_id,
            write: plan.write_probe().then(ProbeStats::default),
            read: plan.read_probe().then(ProbeStats::default),
            ..Probes::default()
        };
        let data = ClusterData {
            members,
            discovery: plan.patroni.discovery_urls.iter().map(|u| (u.clone(), TargetHealth::default())).collect(),
            dcs_view: None,
            etcd: plan.etcd.as_ref().map(|e| EtcdView::new(e.endpoints.iter().cloned())),
            haproxy,
            vip: plan.vip.as_ref().map(|v| VipView::new(v.instances.iter().map(|(n, _)| n.clone()))),
            probes,
            timeline: Tracker::new(&plan.scope, sees),
            members_dropped: 0,
            sole_primary: None,
            verdict: None,
        };
        let cadence = Cadence::new(plan.calm_after);
        Self {
            plan,
            data: RwLock::new(data),
            ledger: Arc::default(),
            ready: AtomicBool::new(false),
            restarts: Mutex::default(),
            cadence,
        }
    }

    pub fn scope(&self) -> &str {
        &self.plan.scope
    }

    /// The state of a cluster whose settings changed (a reload): what it saw so far is kept
    /// (events, failovers and their statistics, the probe id and the probes' counts, the task
    /// restarts, what each member, HAProxy instance and etcd endpoint that is still configured
    /// said last); what the new settings no longer name goes. `old`'s tasks must have stopped.
    pub fn succeed(plan: ClusterPlan, old: &ClusterState) -> Self {
        // Before the write lock: `ready()` reads the data.
        let was_ready = old.ready();
        let mut before = old.write();
        let mut next = ClusterState::new(plan, before.probes.probe_id.clone());
        if next.plan.write_probe() {
            next.ledger = old.ledger.clone();
        }
        next.ready.store(was_ready, Ordering::Relaxed);
        {
            let mut data = next.write();
            let sees = Sees {
                write_probe: next.plan.write_probe(),
                direct_probe: next.plan.direct_probes(),
                haproxy: !next.plan.haproxy.is_empty(),
            };
            let mut timeline = std::mem::replace(&mut before.timeline, Tracker::new(&next.plan.scope, sees));
            timeline.set_sees(sees);
            data.timeline = timeline;
            data.verdict = before.verdict.take();
            let probes = &mut data.probes;
            if probes.write.is_some() {
                probes.write = before.probes.write.take().or(probes.write.take());
            }
            if probes.read.is_some() {
                probes.read = before.probes.read.take().or(probes.read.take());
            }
            probes.lost_writes_total = before.probes.lost_writes_total;
            probes.last_outage_lost_writes = before.probes.last_outage_lost_writes;
            if next.plan.direct_probes() {
                probes.direct = std::mem::take(&mut before.probes.direct);
            }
            for (name, member) in std::mem::take(&mut before.members) {
                match data.members.get_mut(&name) {
                    Some(fixed) => {
                        (fixed.health, fixed.status, fixed.version) = (member.health, member.status, member.version)
                    }
                    None if !member.fixed => drop(data.members.insert(name, member)),
                    None => {}
                }
            }
            for (name, h) in std::mem::take(&mut before.haproxy) {
                if let Some(kept) = data.haproxy.get_mut(&name) {
                    // The routes last read too: without them the verdict would say for a round
                    // that HAProxy routes nowhere.
                    (kept.health, kept.last_good) = (h.health, h.last_good);
                }
            }
            if let (Some(new), Some(mut old)) = (data.vip.as_mut(), before.vip.take()) {
                for (name, page) in new.instances.iter_mut() {
                    *page = old.instances.remove(name).unwrap_or_default();
                }
                old.instances = std::mem::take(&mut new.instances);
                *new = old;
            }
            data.dcs_view = before.dcs_view.take();
            data.sole_primary = before.sole_primary.take();
            if let (Some(new), Some(old)) = (data.etcd.as_mut(), before.etcd.take()) {
                for (url, endpoint) in old.endpoints {
                    if let Some(kept) = new.endpoints.get_mut(&url) {
                        *kept = endpoint;
                    }
                }
                (new.member_names, new.leader_changes) = (old.member_names, old.leader_changes);
            }
        }
        *next.restarts.lock().unwrap_or_else(|p| p.into_inner()) =
            old.restarts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        next
    }

    /// What the state file kept from before a restart (before the tasks start).
    pub fn restore(
        &self,
        events: Vec<crate::timeline::Event>,
        last: Option<crate::timeline::Failover>,
        interrupted_at: Option<f64>,
        probe_id: Option<String>,
    ) {
        let mut data = self.write();
        data.timeline.restore(events, last, interrupted_at);
        if data.probes.probe_id.is_some() && probe_id.is_some() {
            data.probes.probe_id = probe_id;
        }
    }

    /// The write probe's ledger; held only for bookkeeping, never across a call.
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, WriteLedger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ClusterData> {
        // A panic while holding the lock cannot leave plain data half-written in a way that
        // matters more than losing all metrics: keep serving.
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ClusterData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` under the write lock, then logs what it noted.
    fn update<R>(&self, f: impl FnOnce(&mut ClusterData, &mut Vec<Log>) -> R) -> R {
        let mut logs = Vec::new();
        let result = f(&mut self.write(), &mut logs);
        if logs.iter().any(Log::is_sign_of_change) {
            self.cadence.alarm();
        }
        emit(self.scope(), logs);
        result
    }

    /// Ready once every target (members known, discovery URLs, etcd endpoints, HAProxy
    /// instances) has finished one call, answered or failed, so a freshly started exporter does
    /// not report empty data as "all down". It stays ready after that.
    pub fn ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let data = self.read();
        let all = Source::ALL.iter().all(|s| data.targets(*s).iter().all(|(_, h)| h.attempted()));
        if all {
            self.ready.store(true, Ordering::Relaxed);
        }
        all
    }

    /// A collection task of this cluster exists (its restart count starts at zero).
    pub fn register_task(&self, task: &'static str) {
        self.restarts.lock().unwrap_or_else(|p| p.into_inner()).entry(task).or_insert(0);
    }

    /// Counts tasks that stopped and are started again; that is a sign of change too (the
    /// task sets check again within a second, not at their calm interval).
    pub fn note_restarts(&self, task: &'static str, n: usize) {
        *self.restarts.lock().unwrap_or_else(|p| p.into_inner()).entry(task).or_insert(0) += n as u64;
        if n > 0 {
            self.cadence.alarm();
        }
    }

    pub fn task_restarts(&self) -> Vec<(&'static str, u64)> {
        self.restarts.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(t, n)| (*t, *n)).collect()
    }

    /// How old a source's stalest reading may grow while its loops run: two of its rounds (an
    /// etcd round is up to four calls: status, member list, keys, lease) and two seconds.
    pub fn staleness_bound(&self, source: Source) -> Duration {
        let round = match source {
            Source::Patroni => self.plan.patroni.polling.calm + self.plan.patroni.polling.timeout,
            Source::Etcd => self.plan.etcd.as_ref().map_or(Duration::ZERO, |e| e.polling.calm + 4 * e.polling.timeout),
            Source::Haproxy => {
                self.plan.haproxy.iter().map(|h| h.polling.calm + h.polling.timeout).max().unwrap_or_default()
            }
            Source::Vip => self.plan.vip.as_ref().map_or(Duration::ZERO, |v| v.polling.calm + v.polling.timeout),
        };
        2 * round + Duration::from_secs(2)
    }

    /// The sources whose stalest reading is older than their bound, with its age: their
    /// collection has stopped.
    pub fn stale_sources(&self, now: Instant) -> Vec<(Source, Duration)> {
        let data = self.read();
        self.plan
            .sources()
            .into_iter()
            .filter_map(|s| data.snapshot_age(s, now).filter(|age| *age > self.staleness_bound(s)).map(|age| (s, age)))
            .collect()
    }

    /// Members to poll: (name, REST base URL).
    pub fn member_targets(&self) -> Vec<(String, String)> {
        self.read().members.iter().map(|(n, m)| (n.clone(), m.api_url.clone())).collect()
    }

    /// Members to probe directly: (name, PostgreSQL address).
    pub fn postgres_targets(&self) -> Vec<(String, HostPort)> {
        self.read().members.iter().filter_map(|(n, m)| Some((n.clone(), m.postgres.clone()?))).collect()
    }

    /// When the write probe's last commit through HAProxy was acknowledged, while it is up and
    /// no member but `member` is found writable by the direct probes: that commit landed on
    /// `member`. `None` when the probe is down, has not committed, or another member is
    /// writable too (two primaries: each must be written on its own).
    pub fn routed_commit(&self, member: &str) -> Option<Instant> {
        let data = self.read();
        let alone = data.probes.direct.iter().all(|(m, d)| m == member || d.in_recovery != Some(false));
        data.probes.write.as_ref().filter(|w| w.up && alone).and_then(|w| w.last_success)
    }

    /// Whom to ask for `/cluster`: the primary when one answers, else any member that answers.
    pub fn view_source(&self) -> Option<String> {
        let data = self.read();
        let answering = || data.members.values().filter(|m| m.status.is_some());
        let primary = answering().find(|m| m.status.as_ref().is_some_and(|s| s.is_primary()));
        primary.or_else(|| answering().next()).map(|m| m.api_url.clone())
    }

    /// A member's own `GET /patroni`. Ignored when the member was forgotten (or moved) while
    /// the call was in flight.
    pub fn apply_member(&self, name: &str, api_url: &str, reading: Reading<MemberStatus>) {
        let has_etcd = self.plan.etcd.is_some();
        self.update(|d, logs| {
            let Some(m) = d.members.get_mut(name).filter(|m| m.api_url == api_url) else { return };
            let first = !m.health.attempted();
            if let Some(change) = m.health.record(&reading) {
                logs.push(Log::Health { source: Source::Patroni, target: name.to_string(), change });
            }
            let before = std::mem::replace(&mut m.status, reading.result.ok());
            if let Some(version) = m.status.as_ref().and_then(|s| s.patroni_version.clone()) {
                m.version = Some(version);
            }
            let changes = if first { Vec::new() } else { member_changes(name, before.as_ref(), m.status.as_ref()) };
            for change in changes {
                d.change(change, reading.at, logs);
            }
            if !has_etcd {
                d.stand_in_for_leader_key(reading.at, logs);
            }
        })
    }

    /// Members found by discovery, outside an etcd round (tests build states with it).
    #[cfg(test)]
    pub fn apply_discovery(&self, found: Vec<FoundMember>, at: Instant) {
        let limits = (self.plan.member_retention, self.plan.max_members);
        self.update(|d, logs| d.observe(found, at, limits, logs))
    }

    /// `/cluster` from a configured discovery URL: its health. Returns the view it gave, for the
    /// caller to choose the one applied with [`Self::apply_view`].
    pub fn apply_discovery_url(&self, url: &str, reading: Reading<ClusterView>) -> Option<ClusterView> {
        self.update(|d, logs| {
            let health = d.discovery.get_mut(url)?;
            if let Some(change) = health.record(&reading) {
                logs.push(Log::Health { source: Source::Patroni, target: url.to_string(), change });
            }
            reading.result.ok()
        })
    }

    /// Patroni's DCS view; without etcd, also the members' discovery.
    pub fn apply_view(&self, view: ClusterView, at: Instant) {
        let (limits, discover) = ((self.plan.member_retention, self.plan.max_members), self.plan.etcd.is_none());
        self.update(|d, logs| {
            if discover {
                d.observe(view.found_members(), at, limits, logs);
            }
            d.dcs_view = Some(view);
        })
    }

    /// One round of etcd calls. A raft leader change is stamped with the round's latest status.
    pub fn apply_etcd(&self, round: EtcdRound) {
        let limits = (self.plan.member_retention, self.plan.max_members);
        let now = round.endpoints.iter().map(|(_, r)| r.at).max().unwrap_or_else(Instant::now);
        self.update(|d, logs| {
            let Some(etcd) = d.etcd.as_mut() else { return };
            for (endpoint, reading) in round.endpoints {
                let ep = etcd.endpoints.entry(endpoint.clone()).or_default();
                if let Some(change) = ep.health.record(&reading) {
                    logs.push(Log::Health { source: Source::Etcd, target: endpoint, change });
                }
                ep.status = reading.result.ok();
            }
            if let Some(list) = round.member_list {
                etcd.member_count = list.len();
                etcd.member_names.extend(list);
            }
            let mut changes = Vec::new();
            let leader = etcd.leader_id();
            if let (Some(now_id), Some(before)) = (leader, etcd.last_leader) {
                if now_id != before {
                    etcd.leader_changes += 1;
                    changes.push(Change::EtcdLeaderChanged {
                        from: etcd.member_name(before),
                        to: etcd.member_name(now_id),
                    });
                }
            }
            etcd.last_leader = leader.or(etcd.last_leader);
            let found = match round.keys {
                Some(keys) => {
                    etcd.leader_key = keys.leader_key.filter(|_| keys.from_quorum);
                    etcd.keys_from_quorum = keys.from_quorum;
                    Some(keys.members)
                }
                None => {
                    (etcd.leader_key, etcd.keys_from_quorum) = (None, false);
                    None
                }
            };
            for change in changes {
                d.change(change, now, logs);
            }
            if let Some(found) = found {
                d.observe(found, now, limits, logs);
            }
        })
    }

    /// A change seen by a source that keeps no state here (the leader key's watch).
    pub fn apply_change(&self, change: Change, at: Instant) {
        self.update(|d, logs| d.change(change, at, logs))
    }

    /// One HAProxy instance's stats.
    pub fn apply_haproxy(&self, name: &str, reading: Reading<Stats>) {
        self.update(|d, logs| {
            let addresses = d.member_addresses();
            let Some(h) = d.haproxy.get_mut(name) else { return };
            if let Some(change) = h.health.record(&reading) {
                logs.push(Log::Health { source: Source::Haproxy, target: name.to_string(), change });
            }
            let Ok(new) = reading.result else { return };
            let changes: Vec<Change> = h
                .last_good
                .as_ref()
                .map(|old| {
                    server_transitions(old, &new)
                        .into_iter()
                        .map(|(s, up)| Change::HaproxyServer {
                            up,
                            haproxy: name.to_string(),
                            backend: s.backend.clone(),
                            server: s.name.clone(),
                            member: member_of(s, &addresses),
                            route: h.routes.of(&s.backend),
                            check: s.check_status.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            h.last_good = Some(new);
            for change in changes {
                d.change(change, reading.at, logs);
            }
        })
    }

    /// One round of the virtual IP's whoami pages. A change of the holder is an event, stamped
    /// with the end of the read through the virtual IP.
    pub fn apply_vip(&self, round: VipRound) {
        self.update(|d, logs| {
            let Some(vip) = d.vip.as_mut() else { return };
            for (name, reading) in round.instances {
                let Some(page) = vip.instances.get_mut(&name) else { continue };
                if let Some(change) = page.health.record(&reading) {
                    logs.push(Log::Health { source: Source::Vip, target: name, change });
                }
                page.whoami = reading.result.ok();
            }
            let reading = round.through_vip;
            let first = !vip.through_vip.attempted();
            if let Some(change) = vip.through_vip.record(&reading) {
                logs.push(Log::Health { source: Source::Vip, target: VIP_TARGET.to_string(), change });
            }
            let before = vip.holder().map(str::to_string);
            vip.answer = Some(reading.result.map_err(|_| round.failure.unwrap_or(Answer::BadAnswer)));
            let change = vip_change(before.as_deref(), vip.holder(), vip.last_holder.as_deref(), round.failure);
            if let Some(holder) = vip.holder() {
                vip.last_holder = Some(holder.to_string());
            }
            if matches!(change, Some(Change::VipMoved { .. })) {
                vip.moves += 1;
            }
            if let Some(change) = change.filter(|_| !first) {
                d.change(change, reading.at, logs);
            }
        })
    }

    /// One attempt of the write or read probe (`staleness`: what the read probe did not see).
    /// The end of a write outage is only recorded by [`Self::apply_write_recovered`], once the
    /// loss check has run.
    pub fn apply_probe(&self, probe: ProbeKind, attempt: Attempt, staleness: Option<f64>) -> Transition {
        self.update(|d, logs| {
            if probe == ProbeKind::Read && attempt.result.is_ok() {
                d.probes.read_staleness_seconds = staleness;
            }
            let transition = d.probe_stats(probe).record(&attempt);
            d.note_probe(probe, transition, &attempt, logs);
            transition
        })
    }

    /// A check that writes nothing found the probe's path serving at `at`.
    /// For the timeline the write path served then, as after a commit: a failover opened later
    /// dates its last good write from here.
    pub fn apply_probe_served(&self, probe: ProbeKind, at: Instant) {
        self.update(|d, logs| {
            if d.probe_stats(probe).record_served(at) && probe == ProbeKind::Write {
                d.change(Change::WriteSucceeded, at, logs);
            }
        })
    }

    /// The server closed the probe's idle session at `at`.
    pub fn apply_probe_close(&self, probe: ProbeKind, at: Instant) -> Transition {
        self.update(|d, logs| {
            let transition = d.probe_stats(probe).record_close(at);
            let attempt = Attempt { started: at, finished: at, result: Err(FailureReason::ClosedConnection) };
            d.note_probe(probe, transition, &attempt, logs);
            transition
        })
    }

    /// The probe's idle session was lost: closed at `since`, or a ping sent at `since` still
    /// unanswered at `at` (its `reason`, a timeout for a frozen server).
    pub fn apply_probe_lost(&self, probe: ProbeKind, since: Instant, reason: FailureReason, at: Instant) {
        if reason == FailureReason::ClosedConnection {
            self.apply_probe_close(probe, since);
        } else {
            self.apply_probe(probe, Attempt { started: since, finished: at, result: Err(reason) }, None);
        }
    }

    /// A write outage ended and the loss check gave `lost` (`None`: it could not run yet).
    pub fn apply_write_recovered(&self, outage: Outage, lost: Option<Vec<i64>>) {
        self.update(|d, logs| {
            let count = lost.as_ref().map(|l| l.len() as u64);
            if let Some(seqs) = lost {
                d.count_lost(seqs, logs);
            }
            d.change(Change::OutageEnded { probe: ProbeKind::Write, outage, lost: count }, outage.recovered, logs);
        })
    }

    /// A loss check owed since an outage ran late.
    pub fn apply_late_loss_check(&self, lost: Vec<i64>) {
        self.update(|d, logs| d.count_lost(lost, logs))
    }

    /// One direct probe of a member's PostgreSQL.
    /// Ignored when the member was forgotten, or moved to another address, while it ran.
    pub fn apply_direct(&self, member: &str, addr: &HostPort, outcome: DirectOutcome, at: Instant) {
        self.update(|d, logs| {
            if d.members.get(member).is_none_or(|m| m.postgres.as_ref() != Some(addr)) {
                return;
            }
            let t = d.probes.direct.entry(member.to_string()).or_default().record(&outcome);
            if let Some(reason) = t.unreachable {
                d.change(Change::PostgresUnreachable { member: member.to_string(), reason }, at, logs);
            }
            if t.writable {
                d.change(Change::PostgresWritable { member: member.to_string() }, at, logs);
            }
        })
    }

    /// The verdict assessed now: a change of it is an event. Also closes timed-out failovers.
    pub fn apply_verdict(&self, verdict: Verdict, now: Instant) {
        self.update(|d, logs| {
            logs.extend(d.timeline.tick(now).into_iter().map(Log::Event));
            if let Some(before) = d.verdict.filter(|v| *v != verdict) {
                d.change(Change::VerdictChanged { from: before, to: verdict }, now, logs);
            }
            d.verdict = Some(verdict);
        })
    }
}

impl ClusterData {
    fn count_lost(&mut self, seqs: Vec<i64>, logs: &mut Vec<Log>) {
        let n = seqs.len() as u64;
        self.probes.lost_writes_total += n;
        self.probes.last_outage_lost_writes = Some(n);
        if n > 0 {
            self.change(Change::LostWrites { seqs }, Instant::now(), logs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::patroni::{PgState, Role};
    use crate::model::source::{ErrorKind, TargetError};

    fn state(yaml: &str) -> ClusterState {
        let plan = crate::config::Config::parse(yaml).unwrap().clusters.remove(0);
        ClusterState::new(plan, None)
    }

    fn found(name: &str) -> FoundMember {
        FoundMember {
            name: name.into(),
            api_url: format!("http://{name}:8008"),
            postgres: HostPort::parse(&format!("{name}:5432")),
        }
    }

    fn answer(role: Role, at: Instant) -> Reading<MemberStatus> {
        Reading { at, duration: Duration::from_millis(1), result: Ok(MemberStatus::bare(role, PgState::Running, 1)) }
    }

    fn refused(at: Instant) -> Reading<MemberStatus> {
        Reading { at, duration: Duration::ZERO, result: Err(TargetError::new(ErrorKind::Connect, "refused")) }
    }

    const ETCD: &str =
        "clusters:\n  - scope: demo\n    member_retention: 60s\n    etcd: {endpoints: ['http://e:2379']}\n";

    #[test]
    fn a_reader_is_stale_since_the_oldest_acknowledged_write_it_does_not_see() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Hedged attempts may be acknowledged out of order: 12 before 11.
        let acked = [(10, at(0)), (12, at(50)), (11, at(70)), (13, at(100))].into_iter().collect();
        let ledger = WriteLedger { seq: 13, acked, check_owed: false };
        assert_eq!(ledger.unseen_since(Some(13)), None, "sees them all");
        assert_eq!(ledger.unseen_since(Some(12)), Some(at(100)));
        assert_eq!(ledger.unseen_since(Some(10)), Some(at(50)));
        assert_eq!(ledger.unseen_since(Some(11)), Some(at(50)), "12, acknowledged before 11, is unseen");
        assert_eq!(ledger.unseen_since(None), Some(at(0)), "sees none");
        assert_eq!(WriteLedger::default().unseen_since(None), None);
    }

    #[test]
    fn staleness_bounds_allow_two_calm_rounds() {
        let yaml = "clusters:\n  - scope: s\n    patroni: {members: [{name: m, api_url: 'http://m:1'}]}\n    haproxy: [{stats_url: 'http://h:1/'}]\n";
        let state = ClusterState::new(crate::config::Config::parse(yaml).unwrap().clusters.remove(0), None);
        // Patroni: calm 10 s + timeout 1 s, twice, and 2 s; HAProxy: calm 5 s.
        assert_eq!(state.staleness_bound(Source::Patroni), Duration::from_secs(24));
        assert_eq!(state.staleness_bound(Source::Haproxy), Duration::from_secs(14));
    }

    #[test]
    fn vanished_member_is_kept_absent_until_retention_then_forgotten() {
        let s = state(ETCD);
        let t0 = Instant::now();
        s.apply_discovery(vec![found("a"), found("b")], t0);
        s.apply_discovery(vec![found("a")], t0 + Duration::from_secs(30));
        assert!(s.read().members["a"].present);
        assert!(!s.read().members["b"].present, "b vanished from discovery");
        s.apply_discovery(vec![found("a")], t0 + Duration::from_secs(61));
        assert!(!s.read().members.contains_key("b"), "b forgotten after retention");
        assert!(s.read().members.contains_key("a"));
    }

    #[test]
    fn a_member_found_or_moved_raises_an_alarm_and_one_seen_again_at_its_address_does_not() {
        let s = state(ETCD);
        let t0 = Instant::now();
        let alarms = || s.cadence.alarms_raised();
        s.apply_discovery(vec![found("a")], t0);
        assert_eq!(alarms(), 1, "discovered");
        s.apply_discovery(vec![found("a")], t0);
        assert_eq!(alarms(), 1, "the same address again");
        let moved_pg = FoundMember { postgres: HostPort::parse("a:6432"), ..found("a") };
        s.apply_discovery(vec![moved_pg.clone()], t0);
        assert_eq!(alarms(), 2, "its PostgreSQL moved");
        assert_eq!(s.postgres_targets(), vec![("a".to_string(), HostPort::parse("a:6432").unwrap())]);
        s.apply_discovery(vec![FoundMember { api_url: "http://a2:8008".into(), ..moved_pg }], t0);
        assert_eq!(alarms(), 3, "its Patroni API moved");
        assert_eq!(s.member_targets(), vec![("a".to_string(), "http://a2:8008".to_string())]);
    }

    #[test]
    fn only_an_acknowledged_commit_of_the_write_probe_that_is_up_and_alone_is_a_routed_commit() {
        let s = state("clusters:\n  - scope: p\n    etcd: {endpoints: ['http://e:2379']}\n    probes: {user: u, primary: 'h:1'}\n");
        let t0 = Instant::now();
        let attempt = |ms: u64, result| Attempt { started: t0, finished: t0 + Duration::from_millis(ms), result };
        let direct = |in_recovery| DirectOutcome {
            up: true,
            in_recovery: Some(in_recovery),
            writable: !in_recovery,
            failure: None,
        };
        s.apply_discovery(vec![found("a"), found("b")], t0);
        let (a, b) = (HostPort::parse("a:5432").unwrap(), HostPort::parse("b:5432").unwrap());
        assert_eq!(s.routed_commit("a"), None, "no commit yet");
        s.apply_probe_served(ProbeKind::Write, t0);
        assert_eq!(s.routed_commit("a"), None, "a check that writes nothing is no commit");
        s.apply_probe(ProbeKind::Write, attempt(1, Ok(())), None);
        s.apply_direct("a", &a, direct(false), t0);
        s.apply_direct("b", &b, direct(true), t0);
        assert_eq!(s.routed_commit("a"), Some(t0 + Duration::from_millis(1)));
        s.apply_direct("b", &b, direct(false), t0);
        assert_eq!((s.routed_commit("a"), s.routed_commit("b")), (None, None), "two writable members");
        s.apply_direct("b", &b, direct(true), t0);
        s.apply_probe(ProbeKind::Write, attempt(2, Err(FailureReason::Timeout)), None);
        assert_eq!(s.routed_commit("a"), None, "failing since");
        assert_eq!(state(ETCD).routed_commit("a"), None, "no write probe");
    }

    #[test]
    fn a_task_started_again_raises_an_alarm_and_a_round_with_none_does_not() {
        let s = state(ETCD);
        s.note_restarts("direct_probe", 0);
        assert_eq!(s.cadence.alarms_raised(), 0);
        assert_eq!(s.task_restarts(), vec![("direct_probe", 0)], "counted from zero");
        s.note_restarts("direct_probe", 2);
        assert_eq!((s.cadence.alarms_raised(), s.task_restarts()), (1, vec![("direct_probe", 2)]));
    }

    #[test]
    fn discovery_adds_at_most_max_members_and_never_rewrites_a_static_members_address() {
        let s = state(
            "clusters:\n  - scope: d\n    max_members: 5\n    etcd: {endpoints: ['http://e:2379']}\n    \
             patroni: {members: [{name: s, api_url: 'http://s:8008', postgres: 's:6432'}]}\n",
        );
        let many: Vec<FoundMember> = (0..2000).map(|i| found(&format!("m{i}"))).chain([found("s")]).collect();
        s.apply_discovery(many, Instant::now());
        let data = s.read();
        assert_eq!((data.members.len(), data.members_dropped), (6, 1995), "five discovered and the static one");
        assert_eq!(data.members["s"].postgres.as_ref().map(|p| p.to_string()).as_deref(), Some("s:6432"));
        drop(data);
        s.apply_discovery(vec![found("m0")], Instant::now());
        assert_eq!(s.read().members_dropped, 0);
    }

    #[test]
    fn static_member_never_expires_and_a_forgotten_members_late_answer_is_ignored() {
        let s = state("clusters:\n  - scope: d\n    member_retention: 1s\n    patroni: {members: [{name: s, api_url: 'http://s:8008/'}]}\n");
        s.apply_discovery(vec![], Instant::now() + Duration::from_secs(3600));
        assert!(s.read().members["s"].present);
        assert_eq!(s.member_targets(), vec![("s".to_string(), "http://s:8008".to_string())]);
        s.apply_member("gone", "http://gone:8008", answer(Role::Primary, Instant::now()));
        s.apply_member("s", "http://elsewhere:8008", answer(Role::Primary, Instant::now()));
        assert!(!s.read().members.contains_key("gone"));
        assert!(s.read().members["s"].status.is_none(), "an answer from the old address is not this member's");
    }

    #[test]
    fn a_reading_updates_health_and_status_together_and_changes_are_stamped_with_it() {
        let s = state(ETCD);
        let t0 = Instant::now();
        s.apply_discovery(vec![found("a")], t0);
        assert!(!s.ready(), "a's first call has not finished");
        s.apply_member("a", "http://a:8008", answer(Role::Primary, t0));
        let later = t0 + Duration::from_millis(700);
        s.apply_member("a", "http://a:8008", refused(later));
        let data = s.read();
        let a = &data.members["a"];
        assert!(!a.health.up && a.status.is_none());
        assert_eq!(a.health.errors[ErrorKind::Connect.index()], 1);
        let last = data.timeline.events.back().unwrap();
        assert_eq!((last.kind.as_str(), last.at), ("member_unreachable", later));
    }

    #[test]
    fn ready_once_every_target_had_one_call_and_then_it_stays() {
        let s = state(ETCD);
        assert!(!s.ready(), "the etcd endpoint has not been called");
        let err = Reading {
            at: Instant::now(),
            duration: Duration::ZERO,
            result: Err(TargetError::new(ErrorKind::Timeout, "t")),
        };
        s.apply_etcd(EtcdRound { endpoints: vec![("http://e:2379".into(), err)], member_list: None, keys: None });
        assert!(s.ready(), "a failed call is a finished one");
        s.apply_discovery(vec![found("late")], Instant::now());
        assert!(s.ready(), "a member found later does not take readiness back");
    }

    #[test]
    fn without_etcd_the_sole_primary_stands_in_for_the_leader_key() {
        let s = state("clusters:\n  - scope: d\n    patroni: {members: [{name: a, api_url: 'http://a:1'}, {name: b, api_url: 'http://b:1'}]}\n");
        let t0 = Instant::now();
        s.apply_member("a", "http://a:1", answer(Role::Primary, t0));
        s.apply_member("b", "http://b:1", answer(Role::Replica, t0));
        s.apply_member("b", "http://b:1", answer(Role::Primary, t0 + Duration::from_secs(1)));
        assert_eq!(s.read().timeline.leader.as_deref(), Some("a"), "two primaries: no sole one");
        s.apply_member("a", "http://a:1", refused(t0 + Duration::from_secs(2)));
        assert_eq!(s.read().timeline.leader.as_deref(), Some("b"));
    }

    const VIP: &str = "clusters:\n  - scope: demo\n    etcd: {endpoints: ['http://e:2379']}\n    haproxy:\n      - {stats_url: 'http://h1:7000/;csv', whoami_url: 'http://h1:7001/'}\n      - {name: haproxy2, stats_url: 'http://h2:7000/;csv', whoami_url: 'http://h2:7001/'}\n    vip: {whoami_url: 'http://v:7001/'}\n";

    #[test]
    fn moves_of_the_virtual_ip_are_events_and_counted_once() {
        use crate::model::vip::test_round as vip_round;
        use crate::model::vip::VrrpState::{Backup, Master};
        let s = state(VIP);
        let kinds = |s: &ClusterState| -> Vec<String> {
            let data = s.read();
            data.timeline
                .events
                .iter()
                .filter(|e| e.kind.as_str().starts_with("vip_"))
                .map(|e| e.detail.clone())
                .collect()
        };
        let first = [("haproxy", Some(Master)), ("haproxy2", Some(Backup))];
        s.apply_vip(vip_round(Ok("haproxy"), &first));
        s.apply_vip(vip_round(Ok("haproxy"), &first));
        assert_eq!(kinds(&s), Vec::<String>::new(), "the first holder seen is no event");
        s.apply_vip(vip_round(Err(Answer::NoAnswer), &[("haproxy", None), ("haproxy2", Some(Backup))]));
        let moved = [("haproxy", None), ("haproxy2", Some(Master))];
        s.apply_vip(vip_round(Ok("haproxy2"), &moved));
        s.apply_vip(vip_round(Err(Answer::Refused), &moved));
        s.apply_vip(vip_round(Ok("haproxy2"), &moved));
        assert_eq!(
            kinds(&s),
            [
                "the virtual IP answers nothing (no answer: the holder's HAProxy is frozen); last held by haproxy",
                "the virtual IP moved: haproxy -> haproxy2",
                "the virtual IP answers nothing (refused: the holder's HAProxy is down); last held by haproxy2",
                "the virtual IP answers again, held by haproxy2",
            ]
        );
        let data = s.read();
        let vip = data.vip.as_ref().unwrap();
        assert_eq!((vip.moves, vip.holder(), vip.last_holder.as_deref()), (1, Some("haproxy2"), Some("haproxy2")));
        let targets: Vec<(&str, bool)> = data.targets(Source::Vip).into_iter().map(|(t, h)| (t, h.up)).collect();
        assert_eq!(targets, [("vip", true), ("haproxy", false), ("haproxy2", true)]);
    }

    #[test]
    fn a_vip_that_answers_nothing_at_start_is_held_later_without_a_move() {
        use crate::model::vip::test_round as vip_round;
        let s = state(VIP);
        s.apply_vip(vip_round(Err(Answer::Unreachable), &[]));
        s.apply_vip(vip_round(Ok("haproxy2"), &[]));
        let data = s.read();
        let last = data.timeline.events.back().unwrap();
        assert_eq!((last.kind.as_str(), last.detail.as_str()), ("vip_held", "the virtual IP is held by haproxy2"));
        assert_eq!(data.vip.as_ref().unwrap().moves, 0);
    }
}
