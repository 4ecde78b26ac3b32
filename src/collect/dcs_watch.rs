//! Watches Patroni's leader and failover keys in etcd, so the failover timeline gets the leader
//! key's release and acquisition (and a switchover request) at the moment etcd applies them,
//! not at the next poll, and a calm cluster costs no polling for them.
//!
//! The client requires a leader: a watch on a member that lost quorum fails instead of waiting
//! silently, and the watcher moves on to the next endpoint, resuming after the last revision it
//! saw. A watch silent for a while is asked for progress; one that does not answer even that is
//! stuck (a frozen member) and is dropped too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};

use super::etcd::connect_options;
use crate::config::EtcdPlan;
use crate::model::text::bounded;
use crate::state::ClusterState;
use crate::timeline::{Change, LeaderSeenIn};

/// A watch with no event for this long is asked for progress; with no answer after as long
/// again, it is stuck.
const SILENCE: Duration = Duration::from_secs(5);
/// Pause between attempts when no endpoint would take a watch.
const RETRY: Duration = Duration::from_millis(200);

pub struct DcsWatch {
    state: Arc<ClusterState>,
    plan: EtcdPlan,
    /// `<namespace>/<scope>/`
    prefix: String,
    /// The leader key's holder as last seen, to tell a real change from a rewrite.
    holder: Option<String>,
    /// The last revision seen: a new watch resumes after it, so nothing in between is lost.
    revision: Option<i64>,
}

impl DcsWatch {
    pub fn new(state: Arc<ClusterState>, plan: EtcdPlan) -> Self {
        let prefix = state.plan.key_prefix.clone();
        Self { state, plan, prefix, holder: None, revision: None }
    }

    pub async fn run(mut self) {
        let mut next = 0;
        let mut first = true;
        loop {
            let endpoint = self.plan.endpoints[next % self.plan.endpoints.len()].clone();
            next += 1;
            if let Err(e) = self.watch(&endpoint, first).await {
                tracing::debug!(scope = %self.state.scope(), endpoint, error = %e, "leader key watch ended");
            }
            first = false;
            tokio::time::sleep(RETRY).await;
        }
    }

    fn leader_key(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// Compares the holder read now with the last one seen and reports a change.
    fn holder_is(&mut self, holder: Option<String>, at: Instant, initial: bool) {
        if holder == self.holder {
            return;
        }
        let change = match (&holder, initial) {
            (_, true) => Change::LeaderKnown { holder: holder.clone() },
            (Some(h), false) => Change::LeaderKeyAcquired { member: h.clone(), seen_in: LeaderSeenIn::Etcd },
            (None, false) => Change::LeaderKeyReleased { holder: self.holder.clone() },
        };
        self.state.apply_change(change, at);
        self.holder = holder;
    }

    async fn watch(&mut self, endpoint: &str, initial: bool) -> Result<(), String> {
        let timeout = self.plan.polling.timeout;
        let options = connect_options(timeout, &self.plan, endpoint).with_require_leader(true);
        let mut client = tokio::time::timeout(timeout, Client::connect([endpoint], Some(options)))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let start = match self.revision {
            // Resume: the events missed while reconnecting come first, in order.
            Some(r) => r + 1,
            None => {
                // Linearizable: only a member with quorum answers, so the holder read is current.
                let got = tokio::time::timeout(timeout, client.get(self.leader_key(), None::<GetOptions>))
                    .await
                    .map_err(|_| "get timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let revision = got.header().map(|h| h.revision()).unwrap_or(0);
                let holder = got.kvs().first().map(|kv| bounded(&String::from_utf8_lossy(kv.value())));
                self.holder_is(holder, Instant::now(), initial);
                self.revision = Some(revision);
                revision + 1
            }
        };
        // From `failover` to `leader` (`history` and `initialize` lie between): not the member
        // keys, which Patroni rewrites at every loop while the WAL moves.
        let (from, to) = (format!("{}failover", self.prefix), format!("{}leader\0", self.prefix));
        let options = WatchOptions::new().with_range(to).with_start_revision(start);
        let mut stream = tokio::time::timeout(timeout, client.watch(from, Some(options)))
            .await
            .map_err(|_| "watch timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut progress_asked = false;
        loop {
            let message = match tokio::time::timeout(SILENCE, stream.message()).await {
                // A quiet cluster is fine; a member that cannot even answer a progress request
                // is stuck.
                Err(_) if !progress_asked => {
                    progress_asked = true;
                    tokio::time::timeout(timeout, stream.request_progress())
                        .await
                        .map_err(|_| "progress request timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                Err(_) => return Err(format!("no answer for {SILENCE:?} after a progress request")),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(None)) => return Err("watch closed".into()),
                Ok(Ok(Some(m))) => m,
            };
            progress_asked = false;
            if message.canceled() {
                // Compacted past our revision: start over from a fresh read.
                if message.compact_revision() > 0 {
                    self.revision = None;
                }
                return Err(format!("watch canceled: {}", message.cancel_reason()));
            }
            if let Some(r) = message.header().map(|h| h.revision()).filter(|r| *r > 0) {
                self.revision = Some(self.revision.map_or(r, |old| old.max(r)));
            }
            let at = Instant::now();
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(name) = kv.key().strip_prefix(self.prefix.as_bytes()) else { continue };
                match (name, event.event_type()) {
                    (b"leader", EventType::Put) => {
                        self.holder_is(Some(bounded(&String::from_utf8_lossy(kv.value()))), at, false)
                    }
                    (b"leader", EventType::Delete) => self.holder_is(None, at, false),
                    // Patroni empties the key (`{}`) once the switchover is done.
                    (b"failover", EventType::Put) if is_request(kv.value()) => {
                        let request = bounded(&String::from_utf8_lossy(kv.value()));
                        self.state.apply_change(Change::SwitchoverRequested { request }, at)
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A `failover` key value that asks for something (a leader, a candidate or a time), as
/// `patronictl switchover` and `failover` write it.
pub fn is_request(value: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(fields)) => ["leader", "member", "candidate", "scheduled_at"]
            .iter()
            .any(|k| fields.get(*k).is_some_and(|v| !v.is_null() && v.as_str() != Some(""))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_real_switchover_requests_count() {
        assert!(super::is_request(br#"{"leader":"node3","member":"node2"}"#));
        assert!(super::is_request(br#"{"scheduled_at":"2026-11-25T19:00:00+00:00"}"#));
        assert!(!super::is_request(b"{}"));
        assert!(!super::is_request(b""));
        assert!(!super::is_request(b"garbage"));
    }
}
