//! The shared state of one cluster: the latest reading of every source, the health of every
//! target, and the members discovered so far. Collection loops write it; `/metrics` reads it.
//! Locks are std locks held only to copy or swap plain data, never across an `await`.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::collect::etcd::EtcdReading;
use crate::collect::haproxy::HaproxyReading;
use crate::collect::patroni::{ClusterView, MemberStatus};
use crate::probe::{FailureReason, ProbeStats};
use crate::timeline::{EventKind, Tracker};

/// A source of readings: the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Patroni,
    Etcd,
    Haproxy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Patroni => "patroni",
            Source::Etcd => "etcd",
            Source::Haproxy => "haproxy",
        }
    }
}

/// Why a call to a target failed: the `kind` label of `pgha_source_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Connect,
    HttpStatus,
    TooLarge,
    Parse,
    Rpc,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::HttpStatus,
        ErrorKind::TooLarge,
        ErrorKind::Parse,
        ErrorKind::Rpc,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Parse => "parse",
            ErrorKind::Rpc => "rpc",
            ErrorKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// The health of one target (a Patroni member, an etcd endpoint, an HAProxy instance).
#[derive(Debug, Clone, Default)]
pub struct TargetHealth {
    pub up: bool,
    pub last_duration: Duration,
    pub last_poll: Option<Instant>,
    /// Counts by `ErrorKind::ALL` order; all kinds exist from the start so `increase()` sees the
    /// first error.
    pub errors: [u64; ErrorKind::ALL.len()],
    pub last_error: Option<String>,
}

impl TargetHealth {
    pub fn errors_by_kind(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL.iter().map(|k| (*k, self.errors[k.index()]))
    }
}

/// A member as discovery knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownMember {
    /// Base URL of its REST API, without a path.
    pub api_url: String,
    /// Its PostgreSQL `host:port`, when known.
    pub postgres: Option<String>,
    /// Configured statically: never expires.
    pub fixed: bool,
    /// Listed by the latest discovery answer.
    pub present: bool,
    pub last_seen: Instant,
}

/// A member found by one discovery answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundMember {
    pub name: String,
    pub api_url: String,
    pub postgres: Option<String>,
}

/// The reading of one member's own `GET /patroni`.
#[derive(Debug, Clone)]
pub struct MemberReading {
    /// `None` when the member did not answer (or answered garbage) in the last round.
    pub status: Option<MemberStatus>,
}

#[derive(Debug, Default)]
pub struct ClusterData {
    pub members: BTreeMap<String, KnownMember>,
    pub patroni: BTreeMap<String, MemberReading>,
    /// `/cluster` as one member sees it (Patroni's DCS view; stale during a DCS outage).
    pub dcs_view: Option<ClusterView>,
    pub etcd: Option<EtcdReading>,
    pub haproxy: BTreeMap<String, HaproxyReading>,
    pub health: BTreeMap<(Source, String), TargetHealth>,
    /// When each source last completed a round: the age of its snapshot.
    pub rounds: BTreeMap<Source, Instant>,
    pub probes: ProbeReadings,
    /// Events and the failover timeline.
    pub timeline: Tracker,
}

/// The synthetic probes' state.
#[derive(Debug, Default)]
pub struct ProbeReadings {
    /// This exporter instance's probe id (rows it writes carry it).
    pub probe_id: Option<String>,
    /// Through HAProxy's primary port.
    pub write: Option<ProbeStats>,
    /// Through HAProxy's replicas port.
    pub read: Option<ProbeStats>,
    /// Age of the newest heartbeat the read probe saw, at its last success.
    pub read_staleness_seconds: Option<f64>,
    /// Acknowledged writes missing after an outage, since the exporter started.
    pub lost_writes_total: u64,
    /// Acknowledged writes missing after the last write outage.
    pub last_outage_lost_writes: Option<u64>,
    pub direct_enabled: bool,
    /// Each member's own PostgreSQL.
    pub direct: BTreeMap<String, DirectStatus>,
}

/// The direct probe of one member's PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct DirectStatus {
    pub up: bool,
    pub in_recovery: Option<bool>,
    /// The last write to the probe table on this member succeeded (only tried when it is not
    /// in recovery).
    pub writable: bool,
    pub attempts: u64,
    pub failures: [u64; FailureReason::ALL.len()],
}

#[derive(Debug)]
pub struct ClusterState {
    pub scope: String,
    /// The sources this cluster is configured with; readiness waits for one round of each.
    pub sources: Vec<Source>,
    pub member_retention: Duration,
    pub data: RwLock<ClusterData>,
}

impl ClusterState {
    pub fn new(scope: String, sources: Vec<Source>, member_retention: Duration) -> Self {
        Self { scope, sources, member_retention, data: RwLock::new(ClusterData::default()) }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ClusterData> {
        // A panic while holding the lock cannot leave plain data half-written in a way that
        // matters more than losing all metrics: keep serving.
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClusterData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a target's series exist (all zero) before its first poll.
    pub fn register_target(&self, source: Source, target: &str) {
        self.write().health.entry((source, target.to_string())).or_default();
    }

    /// Records the outcome of one call to a target and logs only transitions, so a target that
    /// stays down does not flood the log.
    pub fn record_poll(
        &self,
        source: Source,
        target: &str,
        duration: Duration,
        outcome: Result<(), (ErrorKind, String)>,
    ) {
        // What to log is decided under the lock and logged after it: a slow stderr must not
        // hold up /metrics or the other loops.
        let log: Option<Result<(), (ErrorKind, String)>> = {
            let mut data = self.write();
            // A Patroni member forgotten by discovery while its poll was in flight stays gone.
            if source == Source::Patroni && !data.members.contains_key(target) {
                return;
            }
            let health = data.health.entry((source, target.to_string())).or_default();
            let was_up = health.up;
            let first = health.last_poll.is_none();
            health.last_duration = duration;
            health.last_poll = Some(Instant::now());
            match outcome {
                Ok(()) => {
                    health.up = true;
                    health.last_error = None;
                    (!was_up && !first).then_some(Ok(()))
                }
                Err((kind, message)) => {
                    health.up = false;
                    health.errors[kind.index()] += 1;
                    let changed = was_up || first || health.last_error.as_deref() != Some(message.as_str());
                    health.last_error = Some(message.clone());
                    changed.then_some(Err((kind, message)))
                }
            }
        };
        match log {
            Some(Ok(())) => tracing::info!(scope = %self.scope, source = source.as_str(), target, "target is back up"),
            Some(Err((kind, message))) => tracing::warn!(scope = %self.scope, source = source.as_str(), target,
                kind = kind.as_str(), error = %message, "target poll failed"),
            None => {}
        }
    }

    /// Records an event (and advances the failover timeline).
    pub fn event(&self, kind: EventKind, member: Option<&str>, detail: impl Into<String>, at: Instant) {
        let detail = detail.into();
        self.write().timeline.event(&self.scope, kind, member, detail.clone(), at);
        tracing::info!(scope = %self.scope, event = ?kind, member = member.unwrap_or(""), %detail, "event");
    }

    pub fn finish_round(&self, source: Source) {
        self.write().rounds.insert(source, Instant::now());
    }

    pub fn ready(&self) -> bool {
        let data = self.read();
        self.sources.iter().all(|s| data.rounds.contains_key(s))
    }

    /// Folds one discovery answer into the known members: listed members are seen now; the
    /// others stay, marked absent, until `member_retention` has passed since they were last seen.
    pub fn observe_members(&self, found: Vec<FoundMember>, now: Instant) {
        let mut data = self.write();
        for m in data.members.values_mut() {
            if !m.fixed {
                m.present = false;
            }
        }
        for f in found {
            let entry = data.members.entry(f.name.clone()).or_insert_with(|| {
                tracing::info!(scope = %self.scope, member = %f.name, api_url = %f.api_url, "member discovered");
                KnownMember { api_url: f.api_url.clone(), postgres: None, fixed: false, present: true, last_seen: now }
            });
            if !entry.fixed {
                entry.api_url = f.api_url;
            }
            if f.postgres.is_some() {
                entry.postgres = f.postgres;
            }
            entry.present = true;
            entry.last_seen = now;
        }
        let retention = self.member_retention;
        let expired: Vec<String> = data
            .members
            .iter()
            .filter(|(_, m)| !m.fixed && now.duration_since(m.last_seen) > retention)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            tracing::info!(scope = %self.scope, member = %name, "member forgotten after retention");
            data.members.remove(&name);
            data.patroni.remove(&name);
            data.health.remove(&(Source::Patroni, name));
        }
    }

    pub fn add_static_member(&self, name: &str, api_url: &str, postgres: Option<String>) {
        self.write().members.insert(
            name.to_string(),
            KnownMember {
                api_url: api_url.trim_end_matches('/').to_string(),
                postgres,
                fixed: true,
                present: true,
                last_seen: Instant::now(),
            },
        );
        self.register_target(Source::Patroni, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str) -> FoundMember {
        FoundMember {
            name: name.into(),
            api_url: format!("http://{name}:8008"),
            postgres: Some(format!("{name}:5432")),
        }
    }

    #[test]
    fn vanished_member_is_kept_absent_until_retention_then_forgotten() {
        let state = ClusterState::new("demo".into(), vec![Source::Patroni], Duration::from_secs(60));
        let t0 = Instant::now();
        state.observe_members(vec![found("a"), found("b")], t0);
        state.observe_members(vec![found("a")], t0 + Duration::from_secs(30));
        {
            let data = state.read();
            assert!(data.members["a"].present);
            assert!(!data.members["b"].present, "b vanished from discovery");
        }
        state.observe_members(vec![found("a")], t0 + Duration::from_secs(61));
        assert!(!state.read().members.contains_key("b"), "b forgotten after retention");
        assert!(state.read().members.contains_key("a"));
    }

    #[test]
    fn static_member_never_expires() {
        let state = ClusterState::new("demo".into(), vec![Source::Patroni], Duration::from_secs(1));
        state.add_static_member("s", "http://s:8008/", None);
        state.observe_members(vec![], Instant::now() + Duration::from_secs(3600));
        let data = state.read();
        assert!(data.members["s"].present);
        assert_eq!(data.members["s"].api_url, "http://s:8008");
    }

    #[test]
    fn errors_are_counted_by_kind_and_up_follows_the_last_poll() {
        let state = ClusterState::new("demo".into(), vec![Source::Etcd], Duration::from_secs(1));
        state.register_target(Source::Etcd, "e1");
        assert!(!state.ready());
        state.record_poll(Source::Etcd, "e1", Duration::ZERO, Err((ErrorKind::Timeout, "slow".into())));
        state.record_poll(Source::Etcd, "e1", Duration::ZERO, Err((ErrorKind::Timeout, "slow".into())));
        state.record_poll(Source::Etcd, "e1", Duration::ZERO, Ok(()));
        state.finish_round(Source::Etcd);
        let data = state.read();
        let h = &data.health[&(Source::Etcd, "e1".to_string())];
        assert!(h.up);
        let counts: Vec<(ErrorKind, u64)> = h.errors_by_kind().collect();
        assert_eq!(counts.len(), ErrorKind::ALL.len());
        assert!(counts.contains(&(ErrorKind::Timeout, 2)));
        assert!(counts.contains(&(ErrorKind::Parse, 0)));
        drop(data);
        assert!(state.ready());
    }
}
