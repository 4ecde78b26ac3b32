//! The state file (`--state.file`): what a restart must not forget. Each cluster's recent
//! events and last failover, its probe id, and the write probe's ledger (the next sequence
//! number and the acknowledged writes the loss check still owes a look at), so a failover seen
//! before a restart is still on the timeline after it, and an acknowledged write lost while the
//! exporter was down is still found. Written atomically (a temporary file, fsync, rename) every
//! second when something changed, and at shutdown; a file that cannot be read is logged and
//! ignored, never fatal.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, WriteLedger};
use crate::timeline::{unix, Event, Failover};

const VERSION: u32 = 1;
/// Acknowledged writes restored at most (the write probe keeps as many).
const ACKED_RESTORED: usize = 100_000;
/// Sequence numbers skipped at a restart.
const SEQ_SKIP: i64 = 100_000;
/// The largest state file read back.
const MAX_FILE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// Unix time of the save.
    saved_at: f64,
    clusters: BTreeMap<String, SavedCluster>,
}

/// One cluster as saved.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SavedCluster {
    events: Vec<Event>,
    last_failover: Option<Failover>,
    probe_id: Option<String>,
    writes: Option<SavedWrites>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedWrites {
    seq: i64,
    /// Acknowledged writes as runs of consecutive sequence numbers.
    acked: Vec<AckRun>,
    check_owed: bool,
    /// The exporter was in a write outage when this was saved.
    in_outage: bool,
}

/// Sequence numbers `from..=to`, acknowledged from `first` to `last` (Unix times).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct AckRun {
    from: i64,
    to: i64,
    first: f64,
    last: f64,
}

fn runs(acked: &VecDeque<(i64, Instant)>, now: Instant, now_unix: f64) -> Vec<AckRun> {
    // To the millisecond: a save a second later writes the same numbers for the same writes.
    let at = |t: Instant| ((now_unix - now.saturating_duration_since(t).as_secs_f64()) * 1000.0).round() / 1000.0;
    let mut out: Vec<AckRun> = Vec::new();
    for &(seq, t) in acked {
        match out.last_mut() {
            Some(run) if run.to + 1 == seq => (run.to, run.last) = (seq, at(t)),
            _ => out.push(AckRun { from: seq, to: seq, first: at(t), last: at(t) }),
        }
    }
    out
}

/// The acknowledged writes back, each run's times spread evenly between its ends; times in the
/// future (a clock set back) become now.
/// A tampered or damaged file costs nothing: impossible runs and times are dropped, and no more
/// than [`ACKED_RESTORED`] writes come back (the newest).
fn unruns(runs: &[AckRun], now: Instant, now_unix: f64) -> VecDeque<(i64, Instant)> {
    let instant = |u: f64| {
        let ago = Duration::try_from_secs_f64(now_unix - u).unwrap_or(Duration::ZERO);
        now.checked_sub(ago).unwrap_or(now)
    };
    let sane = |r: &&AckRun| {
        r.from <= r.to
            && r.to.checked_sub(r.from).is_some_and(|n| n < ACKED_RESTORED as i64)
            && r.first.is_finite()
            && r.last.is_finite()
    };
    let mut out = VecDeque::new();
    for run in runs.iter().filter(sane) {
        let n = (run.to - run.from) as f64;
        for (i, seq) in (run.from..=run.to).enumerate() {
            let u = if n == 0.0 { run.last } else { run.first + (run.last - run.first) * i as f64 / n };
            out.push_back((seq, instant(u)));
            if out.len() > ACKED_RESTORED {
                out.pop_front();
            }
        }
    }
    out
}

impl SavedCluster {
    fn of(state: &ClusterState, now: Instant, now_unix: f64) -> Self {
        let data = state.read();
        let writes = state.plan.write_probe().then(|| {
            let ledger = state.ledger();
            SavedWrites {
                seq: ledger.seq,
                acked: runs(&ledger.acked, now, now_unix),
                check_owed: ledger.check_owed,
                in_outage: data.timeline.in_write_outage(),
            }
        });
        SavedCluster {
            events: data.timeline.events.iter().cloned().collect(),
            last_failover: data.timeline.last.clone(),
            probe_id: data.probes.probe_id.clone(),
            writes,
        }
    }

    /// Puts what was saved back into a cluster's state, before its tasks start. An outage the
    /// exporter was in when it stopped is listed as interrupted; the acknowledged writes are
    /// checked at the write probe's first success.
    pub fn restore_into(self, state: &ClusterState, saved_at: f64) {
        let now = Instant::now();
        let now_unix = unix(now);
        let interrupted = self.writes.as_ref().filter(|w| w.in_outage).map(|_| saved_at);
        state.restore(self.events, self.last_failover, interrupted, self.probe_id);
        if let (Some(w), true) = (self.writes, state.plan.write_probe()) {
            let acked = unruns(&w.acked, now, now_unix);
            let check_owed = w.check_owed || !acked.is_empty();
            // The exporter that saved this may have used sequence numbers after its last save
            // (up to a second of attempts; committed or not): resume well past them.
            *state.ledger() = WriteLedger { seq: w.seq.max(0).saturating_add(SEQ_SKIP), acked, check_owed };
        }
    }
}

/// The saved clusters by scope and when they were saved; nothing when there is no file yet.
pub fn load(path: &Path) -> Result<(BTreeMap<String, SavedCluster>, f64), PersistError> {
    let failed = |message: String| PersistError::Read { path: path.into(), message };
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0.0)),
        Err(e) => return Err(failed(e.to_string())),
        Ok(f) => f,
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE), &mut text)
        .map_err(|e| failed(e.to_string()))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
    if saved.version != VERSION {
        return Err(failed(format!("version {} (this exporter writes {VERSION})", saved.version)));
    }
    Ok((saved.clusters, saved.saved_at))
}

/// [`save`], unless the clusters' state has the digest `last` (updated on a write).
pub fn save_if_changed(
    path: &Path,
    clusters: &[std::sync::Arc<ClusterState>],
    last: &mut Option<[u8; 32]>,
) -> Result<(), PersistError> {
    use sha2::{Digest, Sha256};
    let now = Instant::now();
    let snapshot = snapshot(clusters, now, unix(now));
    let digest: [u8; 32] = Sha256::digest(serde_json::to_vec(&snapshot).unwrap_or_default()).into();
    if *last == Some(digest) {
        return Ok(());
    }
    write(path, snapshot, unix(now))?;
    *last = Some(digest);
    Ok(())
}

/// Writes every cluster's state to `path` atomically.
pub fn save(path: &Path, clusters: &[std::sync::Arc<ClusterState>]) -> Result<(), PersistError> {
    let now = Instant::now();
    write(path, snapshot(clusters, now, unix(now)), unix(now))
}

fn snapshot(clusters: &[std::sync::Arc<ClusterState>], now: Instant, now_unix: f64) -> BTreeMap<String, SavedCluster> {
    clusters.iter().map(|c| (c.scope().to_string(), SavedCluster::of(c, now, now_unix))).collect()
}

fn write(path: &Path, clusters: BTreeMap<String, SavedCluster>, saved_at: f64) -> Result<(), PersistError> {
    let bytes =
        serde_json::to_vec(&Saved { version: VERSION, saved_at, clusters }).expect("the saved state serializes");
    write_atomically(path, &bytes).map_err(|source| PersistError::Write { path: path.into(), source })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_writes_are_kept_as_runs_and_come_back() {
        let now = Instant::now();
        let acked: VecDeque<(i64, Instant)> = [(1, 10.0), (2, 9.0), (3, 8.0), (7, 4.0), (8, 3.0)]
            .into_iter()
            .map(|(s, ago)| (s, now - Duration::from_secs_f64(ago)))
            .collect();
        let r = runs(&acked, now, 1000.0);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].from, r[0].to, r[1].from, r[1].to), (1, 3, 7, 8));
        assert!((r[0].first - 990.0).abs() < 1e-6 && (r[1].last - 997.0).abs() < 1e-6, "{r:?}");
        let back = unruns(&r, now, 1000.0);
        assert_eq!(back.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3, 7, 8]);
        let ago = |i: usize| now.duration_since(back[i].1).as_secs_f64();
        assert!((ago(0) - 10.0).abs() < 0.01 && (ago(1) - 9.0).abs() < 0.01 && (ago(4) - 3.0).abs() < 0.01);
        let nonsense =
            [AckRun { from: 5, to: 1, first: 0.0, last: 0.0 }, AckRun { from: 0, to: i64::MAX, first: 0.0, last: 0.0 }];
        assert!(unruns(&nonsense, now, 1000.0).is_empty(), "a tampered file costs nothing");
        let future = [AckRun { from: 1, to: 1, first: 1e300, last: 1e300 }];
        assert_eq!(unruns(&future, now, 1000.0)[0].1, now, "a time in the future is now");
    }

    #[test]
    fn a_missing_file_is_a_first_start_and_a_broken_one_an_error() {
        let dir = std::env::temp_dir().join(format!("pgha-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().0.is_empty());
        std::fs::write(&path, "{\"version\": 1, \"saved_at\": 5").unwrap();
        assert!(load(&path).unwrap_err().to_string().starts_with(&format!("cannot read {}", path.display())));
        std::fs::write(&path, "{\"version\": 9, \"saved_at\": 5, \"clusters\": {}}").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 9"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn state() -> ClusterState {
        let yaml = "clusters:\n  - scope: s\n    patroni: {members: [{name: m, api_url: 'http://m:1'}]}\n    \
                    probes: {user: u, primary: 'h:1', direct: false}\n";
        let plan = crate::config::Config::parse(yaml).unwrap().clusters.remove(0);
        ClusterState::new(plan, Some("probe-before".into()))
    }

    #[test]
    fn a_restart_gets_the_events_the_probe_id_and_the_ledger_back() {
        let dir = std::env::temp_dir().join(format!("pgha-persist-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let before = std::sync::Arc::new(state());
        let change = crate::timeline::Change::EtcdLeaderChanged { from: "etcd1".into(), to: "etcd2".into() };
        before.apply_change(change, Instant::now());
        {
            let mut ledger = before.ledger();
            ledger.seq = 42;
            ledger.acked = (35..=40).map(|s| (s, Instant::now())).collect();
        }
        let mut last = None;
        save_if_changed(&path, std::slice::from_ref(&before), &mut last).unwrap();
        let written = std::fs::read(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        save_if_changed(&path, std::slice::from_ref(&before), &mut last).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), written, "nothing changed: no write (its save time would differ)");

        let (mut saved, saved_at) = load(&path).unwrap();
        let mut kept = saved.remove("s").unwrap();
        kept.writes.as_mut().unwrap().in_outage = true;
        let after = state();
        kept.restore_into(&after, saved_at);
        let data = after.read();
        assert_eq!(data.probes.probe_id.as_deref(), Some("probe-before"), "the rows written before are ours");
        let kinds: Vec<&str> = data.timeline.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["etcd_leader_changed", "write_outage_interrupted"]);
        let ledger = after.ledger();
        assert_eq!(
            (ledger.seq, ledger.acked.len(), ledger.check_owed),
            (42 + SEQ_SKIP, 6, true),
            "the loss check is owed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
