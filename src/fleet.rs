//! The clusters being watched, and reloading them (SIGHUP, `POST /-/reload`). A reload never
//! costs what was seen: a cluster whose settings did not change (same fingerprint: settings,
//! secrets and certificate files alike) keeps running untouched; one whose settings changed is
//! restarted with its history, probe id and counters; added clusters start; removed ones stop,
//! and their series go with them. A configuration that does not validate changes nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::config::{Config, ValidatedConfig};
use crate::state::ClusterState;
use crate::tasks::AbortOnDrop;

/// One cluster and the tasks filling its state (stopped when dropped).
struct Running {
    state: Arc<ClusterState>,
    _tasks: Vec<AbortOnDrop>,
}

/// How the last reload went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReloadStatus {
    pub successful: bool,
    /// The last successful load (the start counts as one).
    pub last_success: SystemTime,
}

/// What a reload did, by scope.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub kept: Vec<String>,
    pub changed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

pub struct Fleet {
    running: RwLock<Vec<Running>>,
    /// Where the configuration is read again from; `None`: it cannot be reloaded.
    config_path: Option<PathBuf>,
    client: reqwest::Client,
    reload: Mutex<ReloadStatus>,
    /// `--state.file`, and the digest of what was last written to it.
    state_file: Option<PathBuf>,
    last_saved: Mutex<Option<[u8; 32]>>,
}

/// How often the state file is written (when something changed).
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Fleet {
    /// Starts every cluster of `config` on the current tokio runtime.
    /// Starts every cluster of `config` on the current tokio runtime, each with what the state
    /// file kept of it (when there is one), and the task that keeps that file.
    pub fn start(config: &ValidatedConfig, config_path: Option<PathBuf>, state_file: Option<PathBuf>) -> Arc<Fleet> {
        crate::config::tls::install_default_provider();
        let mut saved = match state_file.as_deref().map(crate::persist::load).transpose() {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "the state file is ignored: events and failovers start empty");
                Default::default()
            }
        };
        let fleet = Arc::new(Fleet {
            running: RwLock::new(Vec::new()),
            config_path,
            client: crate::collect::http::http_client(None),
            reload: Mutex::new(ReloadStatus { successful: true, last_success: SystemTime::now() }),
            state_file,
            last_saved: Mutex::new(None),
        });
        fleet.apply_restoring(config, &mut saved);
        let weak = Arc::downgrade(&fleet);
        tokio::spawn(crate::tasks::supervise("down summary".into(), || {}, move || crate::down_summary(weak.clone())));
        if fleet.state_file.is_some() {
            let weak = Arc::downgrade(&fleet);
            tokio::spawn(crate::tasks::supervise("state file".into(), || {}, move || keep_saving(weak.clone())));
        }
        fleet
    }

    /// Writes the state file now, unless nothing changed since the last write.
    pub fn save_state(&self) {
        let Some(path) = &self.state_file else { return };
        let clusters = self.clusters();
        match crate::persist::save_if_changed(
            path,
            &clusters,
            &mut self.last_saved.lock().unwrap_or_else(|p| p.into_inner()),
        ) {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "writing the state file failed; retried in a second"),
        }
    }

    /// Clusters whose states are filled by someone else (tests): nothing runs, nothing reloads.
    pub fn fixed(clusters: Vec<Arc<ClusterState>>) -> Arc<Fleet> {
        let running = clusters.into_iter().map(|state| Running { state, _tasks: Vec::new() }).collect();
        Arc::new(Fleet {
            running: RwLock::new(running),
            config_path: None,
            client: crate::collect::http::http_client(None),
            reload: Mutex::new(ReloadStatus { successful: true, last_success: SystemTime::now() }),
            state_file: None,
            last_saved: Mutex::new(None),
        })
    }

    /// The clusters now, in the configuration's order.
    pub fn clusters(&self) -> Vec<Arc<ClusterState>> {
        self.running.read().unwrap_or_else(|p| p.into_inner()).iter().map(|r| r.state.clone()).collect()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        *self.reload.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the configuration file again and applies it; an invalid one is refused (logged,
    /// counted in `pgha_config_last_reload_successful`) and the running one kept.
    pub fn reload(&self) -> Result<Changes, String> {
        let Some(path) = &self.config_path else { return Err("no configuration file to read again".into()) };
        // Held from reading to applying: two reloads at once apply in the order they read.
        let mut status = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        match Config::load(path).map_err(|e| e.to_string()) {
            Ok(config) => {
                let changes = self.apply(&config);
                *status = ReloadStatus { successful: true, last_success: SystemTime::now() };
                tracing::info!(kept = ?changes.kept, changed = ?changes.changed, added = ?changes.added,
                    removed = ?changes.removed, "configuration reloaded");
                Ok(changes)
            }
            Err(why) => {
                status.successful = false;
                tracing::error!(error = %why, "the new configuration is refused; the running one stays");
                Err(why)
            }
        }
    }

    /// Makes the running clusters those of `config`.
    fn apply(&self, config: &ValidatedConfig) -> Changes {
        self.apply_restoring(config, &mut (Default::default(), 0.0))
    }

    /// [`Fleet::apply`], an added cluster getting what `saved` (from the state file) kept of it.
    fn apply_restoring(
        &self,
        config: &ValidatedConfig,
        saved: &mut (std::collections::BTreeMap<String, crate::persist::SavedCluster>, f64),
    ) -> Changes {
        let mut running = self.running.write().unwrap_or_else(|p| p.into_inner());
        let mut before: Vec<Running> = std::mem::take(&mut *running);
        let mut changes = Changes::default();
        for plan in &config.clusters {
            let scope = plan.scope.clone();
            let old = before.iter().position(|r| r.state.scope() == scope).map(|i| before.remove(i));
            let next = match old {
                Some(r) if r.state.plan.fingerprint == plan.fingerprint => {
                    changes.kept.push(scope);
                    r
                }
                Some(Running { state, _tasks }) => {
                    drop(_tasks);
                    changes.changed.push(scope);
                    self.run(Arc::new(ClusterState::succeed(plan.clone(), &state)), config.max_body_bytes)
                }
                None => {
                    let probe_id = plan.probes.as_ref().map(|_| crate::probe::new_probe_id());
                    let state = ClusterState::new(plan.clone(), probe_id);
                    if let Some(kept) = saved.0.remove(&scope) {
                        tracing::info!(scope = %scope, "restored from the state file");
                        kept.restore_into(&state, saved.1);
                    }
                    changes.added.push(scope);
                    self.run(Arc::new(state), config.max_body_bytes)
                }
            };
            running.push(next);
        }
        changes.removed = before.iter().map(|r| r.state.scope().to_string()).collect();
        changes
    }

    fn run(&self, state: Arc<ClusterState>, max_body_bytes: usize) -> Running {
        let tasks = crate::run_cluster(&state, &self.client, max_body_bytes);
        Running { state, _tasks: tasks }
    }
}

async fn keep_saving(fleet: std::sync::Weak<Fleet>) {
    let mut tick = crate::tasks::ticker(SAVE_EVERY);
    loop {
        tick.tick().await;
        let Some(fleet) = fleet.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || fleet.save_state()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Change;

    fn config(path: &std::path::Path, clusters: &[(&str, &str)]) -> ValidatedConfig {
        let mut yaml = String::from("clusters:\n");
        for (scope, interval) in clusters {
            yaml.push_str(&format!(
                "  - scope: {scope}\n    patroni: {{members: [{{name: m, api_url: 'http://127.0.0.1:1'}}], interval: {interval}}}\n    \
                 probes: {{user: u, primary: '127.0.0.1:1', direct: false}}\n"
            ));
        }
        std::fs::write(path, &yaml).unwrap();
        Config::load(path).unwrap()
    }

    #[tokio::test]
    async fn a_reload_keeps_what_did_not_change_and_the_history_of_what_did() {
        let path = std::env::temp_dir().join(format!("pgha-fleet-{}.yml", std::process::id()));
        let first = config(&path, &[("a", "1s"), ("b", "1s"), ("c", "1s")]);
        let fleet = Fleet::start(&first, Some(path.clone()), None);
        let before: Vec<Arc<ClusterState>> = fleet.clusters();
        let change = Change::EtcdLeaderChanged { from: "etcd1".into(), to: "etcd2".into() };
        before[1].apply_change(change, std::time::Instant::now());
        let probe_id = before[1].read().probes.probe_id.clone();
        before[1].ledger().seq = 1_000;

        // a: unchanged; b: a new interval; c: removed; d: added.
        config(&path, &[("a", "1s"), ("b", "500ms"), ("d", "1s")]);
        let changes = fleet.reload().unwrap();
        let scopes = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let expected =
            Changes { kept: scopes(&["a"]), changed: scopes(&["b"]), added: scopes(&["d"]), removed: scopes(&["c"]) };
        assert_eq!(changes, expected);
        let after = fleet.clusters();
        assert!(Arc::ptr_eq(&after[0], &before[0]), "an unchanged cluster is the same, untouched");
        assert_eq!(after[1].plan.patroni.polling.interval, std::time::Duration::from_millis(500));
        {
            let b = after[1].read();
            assert_eq!(b.probes.probe_id, probe_id, "the probe id is kept");
            assert!(after[1].ledger().seq >= 1_000, "the write ledger is kept: {}", after[1].ledger().seq);
            assert!(b.timeline.events.iter().any(|e| e.detail == "etcd1 -> etcd2"), "the history is kept");
        }
        assert_eq!(after.iter().map(|c| c.scope()).collect::<Vec<_>>(), ["a", "b", "d"]);
        // The removed cluster's and the replaced state's tasks stopped: nothing holds them.
        let (removed, replaced) = (Arc::downgrade(&before[2]), Arc::downgrade(&before[1]));
        drop(before);
        for _ in 0..100 {
            if removed.upgrade().is_none() && replaced.upgrade().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(removed.upgrade().is_none() && replaced.upgrade().is_none(), "their tasks still run");

        std::fs::write(&path, "clusters: []\n").unwrap();
        let err = fleet.reload().unwrap_err();
        assert!(err.contains("at least one cluster"), "{err}");
        assert!(!fleet.reload_status().successful);
        assert_eq!(fleet.clusters().len(), 3, "a refused configuration changes nothing");
        std::fs::remove_file(&path).unwrap();
    }
}
