//! The typed changes every source reports, and the events they become for `/api/v1/events`.
//! A change carries what it means (which member, which route, which role); its `detail` text is
//! rendered from those fields for people, and nothing decides on it.

use std::fmt;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::model::haproxy::Route;
use crate::model::label_enum;
use crate::model::patroni::{PgState, Role};
use crate::model::probe::{FailureReason, Outage, ProbeKind};
use crate::model::text::bounded_to;
use crate::model::verdict::Verdict;
use crate::model::vip::Answer;

/// Where the leader was seen to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderSeenIn {
    /// Patroni's leader key, watched in etcd.
    Etcd,
    /// Without etcd: the sole member claiming primary by the members' own answers.
    OwnAnswers,
}

/// A state change seen by a source: the one input of the [`super::Tracker`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    MemberUnreachable {
        member: String,
    },
    MemberReachable {
        member: String,
        role: Role,
    },
    BecamePrimary {
        member: String,
        timeline: Option<u64>,
    },
    LeftPrimary {
        member: String,
        role: Role,
        state: PgState,
    },
    /// The leader key's holder as first read when the exporter starts: not a failover.
    LeaderKnown {
        holder: Option<String>,
    },
    LeaderKeyReleased {
        holder: Option<String>,
    },
    LeaderKeyAcquired {
        member: String,
        seen_in: LeaderSeenIn,
    },
    /// Patroni's `failover` key asks for a switchover or failover (its value, as written).
    SwitchoverRequested {
        request: String,
    },
    EtcdLeaderChanged {
        from: String,
        to: String,
    },
    HaproxyServer {
        up: bool,
        haproxy: String,
        backend: String,
        server: String,
        member: Option<String>,
        route: Route,
        check: String,
    },
    PostgresUnreachable {
        member: String,
        reason: FailureReason,
    },
    PostgresWritable {
        member: String,
    },
    /// A write probe success outside an outage (kept by the tracker, not listed as an event).
    WriteSucceeded,
    /// A probe's outage began; the change is stamped with its last success.
    OutageStarted {
        probe: ProbeKind,
        reason: FailureReason,
    },
    /// A probe's outage ended; for the write probe, `lost` acknowledged writes were missing after it
    /// (`None`: not checked).
    OutageEnded {
        probe: ProbeKind,
        outage: Outage,
        lost: Option<u64>,
    },
    LostWrites {
        seqs: Vec<i64>,
    },
    Failover {
        old_leader: Option<String>,
        new_leader: String,
        planned: bool,
        write_downtime: Option<f64>,
    },
    VerdictChanged {
        from: Verdict,
        to: Verdict,
    },
    /// The whoami page through the virtual IP stopped answering: `holder` answered last.
    VipLost {
        holder: Option<String>,
        answer: Answer,
    },
    /// The page through the virtual IP names a holder other than the one that answered last.
    VipMoved {
        from: String,
        to: String,
    },
    /// The page through the virtual IP answers again, naming the instance that answered last
    /// (`first`: the first holder seen since the exporter started).
    VipHeld {
        holder: String,
        first: bool,
    },
}

label_enum! {
    /// The `kind` of an event in `/api/v1/events`.
    pub enum EventKind {
        MemberUnreachable = "member_unreachable",
        MemberReachable = "member_reachable",
        BecamePrimary = "became_primary",
        LeftPrimary = "left_primary",
        LeaderKeyReleased = "leader_key_released",
        LeaderKeyAcquired = "leader_key_acquired",
        SwitchoverRequested = "switchover_requested",
        EtcdLeaderChanged = "etcd_leader_changed",
        HaproxyServerUp = "haproxy_server_up",
        HaproxyServerDown = "haproxy_server_down",
        PostgresUnreachable = "postgres_unreachable",
        PostgresWritable = "postgres_writable",
        WriteOutageStarted = "write_outage_started",
        WriteOutageEnded = "write_outage_ended",
        /// The exporter stopped during a write outage: its length is unknown, so it is no
        /// outage figure (listed on the restart after, from the state file).
        WriteOutageInterrupted = "write_outage_interrupted",
        ReadOutageStarted = "read_outage_started",
        ReadOutageEnded = "read_outage_ended",
        LostWrites = "lost_writes",
        Failover = "failover",
        VerdictChanged = "verdict_changed",
        VipLost = "vip_lost",
        VipMoved = "vip_moved",
        VipHeld = "vip_held",
    }
}

/// Lost writes named in one event, at most.
const LOST_SEQS_SHOWN: usize = 50;

impl Change {
    /// The event kind it is listed as; `None` for changes only the tracker keeps.
    pub fn kind(&self) -> Option<EventKind> {
        use Change as C;
        use EventKind as K;
        Some(match self {
            C::MemberUnreachable { .. } => K::MemberUnreachable,
            C::MemberReachable { .. } => K::MemberReachable,
            C::BecamePrimary { .. } => K::BecamePrimary,
            C::LeftPrimary { .. } => K::LeftPrimary,
            C::LeaderKnown { .. } | C::WriteSucceeded => return None,
            C::LeaderKeyReleased { .. } => K::LeaderKeyReleased,
            C::LeaderKeyAcquired { .. } => K::LeaderKeyAcquired,
            C::SwitchoverRequested { .. } => K::SwitchoverRequested,
            C::EtcdLeaderChanged { .. } => K::EtcdLeaderChanged,
            C::HaproxyServer { up: true, .. } => K::HaproxyServerUp,
            C::HaproxyServer { up: false, .. } => K::HaproxyServerDown,
            C::PostgresUnreachable { .. } => K::PostgresUnreachable,
            C::PostgresWritable { .. } => K::PostgresWritable,
            C::OutageStarted { probe: ProbeKind::Write, .. } => K::WriteOutageStarted,
            C::OutageStarted { probe: ProbeKind::Read, .. } => K::ReadOutageStarted,
            C::OutageEnded { probe: ProbeKind::Write, .. } => K::WriteOutageEnded,
            C::OutageEnded { probe: ProbeKind::Read, .. } => K::ReadOutageEnded,
            C::LostWrites { .. } => K::LostWrites,
            C::Failover { .. } => K::Failover,
            C::VerdictChanged { .. } => K::VerdictChanged,
            C::VipLost { .. } => K::VipLost,
            C::VipMoved { .. } => K::VipMoved,
            C::VipHeld { .. } => K::VipHeld,
        })
    }

    /// The member the change is about, if any.
    pub fn member(&self) -> Option<&str> {
        use Change as C;
        match self {
            C::MemberUnreachable { member }
            | C::MemberReachable { member, .. }
            | C::BecamePrimary { member, .. }
            | C::LeftPrimary { member, .. }
            | C::LeaderKeyAcquired { member, .. }
            | C::PostgresUnreachable { member, .. }
            | C::PostgresWritable { member } => Some(member),
            C::LeaderKeyReleased { holder } => holder.as_deref(),
            C::EtcdLeaderChanged { to, .. } => Some(to),
            C::HaproxyServer { member, .. } => member.as_deref(),
            C::Failover { new_leader, .. } => Some(new_leader),
            _ => None,
        }
    }
}

/// The `detail` of an event: for people, never parsed.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Change as C;
        match self {
            C::MemberUnreachable { .. } => write!(f, "REST API stopped answering"),
            C::MemberReachable { role, .. } => write!(f, "REST API answers again as {role}"),
            C::BecamePrimary { timeline, .. } => write!(f, "timeline {}", timeline.unwrap_or(0)),
            C::LeftPrimary { role, state, .. } => write!(f, "now {role} ({state})"),
            C::LeaderKnown { holder } => write!(f, "leader {}", holder.as_deref().unwrap_or("none")),
            C::LeaderKeyReleased { .. } => write!(f, "leader key deleted or expired in etcd"),
            C::LeaderKeyAcquired { seen_in: LeaderSeenIn::Etcd, .. } => write!(f, "leader key set in etcd"),
            C::LeaderKeyAcquired { seen_in: LeaderSeenIn::OwnAnswers, .. } => {
                write!(f, "sole primary by the members' own answers")
            }
            C::SwitchoverRequested { request } => write!(f, "{request}"),
            C::EtcdLeaderChanged { from, to } => write!(f, "{from} -> {to}"),
            C::HaproxyServer { haproxy, backend, server, route, check, .. } => {
                write!(f, "route={route} haproxy={haproxy} backend={backend} server={server} check={check}")
            }
            C::PostgresUnreachable { reason, .. } => write!(f, "{reason}"),
            C::PostgresWritable { .. } => write!(f, "a direct write succeeded"),
            C::WriteSucceeded => write!(f, "write succeeded"),
            C::OutageStarted { reason, .. } => write!(f, "through HAProxy: {reason}"),
            C::OutageEnded { probe: ProbeKind::Write, outage, lost } => write!(
                f,
                "write downtime {:.3}s, lost acknowledged writes: {}",
                outage.duration().as_secs_f64(),
                lost.map(|n| n.to_string()).unwrap_or_else(|| "not checked".into())
            ),
            C::OutageEnded { probe: ProbeKind::Read, outage, .. } => {
                write!(f, "read downtime {:.3}s", outage.duration().as_secs_f64())
            }
            C::LostWrites { seqs } => {
                let shown: Vec<String> = seqs.iter().take(LOST_SEQS_SHOWN).map(|s| s.to_string()).collect();
                write!(f, "{} acknowledged writes missing on the primary: seq {}", seqs.len(), shown.join(","))
            }
            C::Failover { old_leader, new_leader, planned, write_downtime } => write!(
                f,
                "{} -> {new_leader}, {}, write downtime {}",
                old_leader.as_deref().unwrap_or("?"),
                if *planned { "planned" } else { "unplanned" },
                write_downtime.map(|d| format!("{d:.3}s")).unwrap_or_else(|| "unknown".into())
            ),
            C::VerdictChanged { from, to } => write!(f, "{from} -> {to}"),
            C::VipLost { holder, answer } => {
                let why = match answer {
                    Answer::Unreachable => "answers nothing (no connection: nobody holds the address)",
                    Answer::Refused => "answers nothing (refused: the holder's HAProxy is down)",
                    Answer::NoAnswer => "answers nothing (no answer: the holder's HAProxy is frozen)",
                    Answer::BadAnswer | Answer::Held => "answers, but not with a whoami page",
                };
                write!(f, "the virtual IP {why}; last held by {}", holder.as_deref().unwrap_or("?"))
            }
            C::VipMoved { from, to } => write!(f, "the virtual IP moved: {from} -> {to}"),
            C::VipHeld { holder, first: true } => write!(f, "the virtual IP is held by {holder}"),
            C::VipHeld { holder, first: false } => write!(f, "the virtual IP answers again, held by {holder}"),
        }
    }
}

/// An event as `/api/v1/events` serves it (and the state file keeps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in seconds.
    pub time: f64,
    pub scope: String,
    pub kind: EventKind,
    pub member: Option<String>,
    /// For people; never parsed, by the exporter or its tests.
    pub detail: String,
    /// `lost_writes` events: the sequence numbers missing (at most [`LOST_SEQS_LISTED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_seqs: Option<Vec<i64>>,
    /// Not kept across a restart: a restored event's `at` is its load time.
    #[serde(skip, default = "Instant::now")]
    pub at: Instant,
}

/// Lost writes listed in one event's `lost_seqs`, at most...
pub const LOST_SEQS_LISTED: usize = 200;
/// ...and the longest `detail`, in bytes: with at most [`super::EVENTS_KEPT`] events per
/// cluster, their memory is bounded too (about 3 KiB each).
pub const MAX_DETAIL: usize = 1024;

impl Event {
    pub fn new(scope: &str, change: &Change, at: Instant) -> Option<Event> {
        let lost_seqs = match change {
            Change::LostWrites { seqs } => Some(seqs.iter().take(LOST_SEQS_LISTED).copied().collect()),
            _ => None,
        };
        Some(Event {
            time: super::unix(at),
            scope: scope.to_string(),
            kind: change.kind()?,
            member: change.member().map(str::to_string),
            detail: bounded_to(&change.to_string(), MAX_DETAIL),
            lost_seqs,
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_members_and_details() {
        let c = Change::HaproxyServer {
            up: true,
            haproxy: "h".into(),
            backend: "primary".into(),
            server: "pg1".into(),
            member: Some("node1".into()),
            route: Route::Primary,
            check: "L7OK".into(),
        };
        assert_eq!((c.kind(), c.member()), (Some(EventKind::HaproxyServerUp), Some("node1")));
        assert_eq!(c.to_string(), "route=primary haproxy=h backend=primary server=pg1 check=L7OK");
        let lost = Change::LostWrites { seqs: (1..=60).collect() };
        assert!(lost.to_string().starts_with("60 acknowledged writes missing on the primary: seq 1,2,"));
        assert!(lost.to_string().ends_with(",50"));
        assert_eq!(Change::WriteSucceeded.kind(), None);
        let v = Change::VerdictChanged { from: Verdict::Healthy, to: Verdict::Degraded };
        assert_eq!((v.to_string().as_str(), v.member()), ("healthy -> degraded", None));
    }
}
