//! Tasks: the ticker every loop uses, and a set of tasks kept in step with a set of keys (one
//! task per Patroni member, one per direct-probe target).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A ticker for a polling loop: the first tick is at once, and a slow round delays the next one
/// instead of bursting to catch up.
pub fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// One task per key. Tasks of keys that went away are aborted, a task that ended (it panicked:
/// the loops never return) is logged and started again; dropping the set aborts all.
#[derive(Debug)]
pub struct TaskSet<K: Ord> {
    /// What the tasks are, for the log (e.g. `demo: Patroni member`).
    what: String,
    tasks: BTreeMap<K, JoinHandle<()>>,
}

impl<K: Ord + Clone + std::fmt::Debug> TaskSet<K> {
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), tasks: BTreeMap::new() }
    }

    /// Keeps exactly one running task per key of `wanted`, starting missing ones with `start`.
    pub fn reconcile<F>(&mut self, wanted: Vec<K>, mut start: impl FnMut(&K) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.retain(|k, task| {
            if task.is_finished() {
                tracing::error!(task = %self.what, key = ?k, "a task ended; starting it again");
                return false;
            }
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        for k in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.tasks.entry(k) {
                let task = tokio::spawn(start(slot.key()));
                slot.insert(task);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<K: Ord> Drop for TaskSet<K> {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn tasks_follow_the_keys() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut set = TaskSet::new("test");
        let start = |_: &&str| {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        };
        set.reconcile(vec!["a", "b"], start);
        set.reconcile(vec!["a", "b"], start);
        assert_eq!((set.len(), started.load(Ordering::SeqCst)), (2, 2), "no second task for a key");
        set.reconcile(vec!["b", "c"], start);
        assert_eq!((set.len(), started.load(Ordering::SeqCst)), (2, 3));
        set.reconcile(vec![], start);
        assert!(set.is_empty());
        let ends = |_: &&str| {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        };
        set.reconcile(vec!["d"], ends);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        set.reconcile(vec!["d"], ends);
        assert_eq!((set.len(), started.load(Ordering::SeqCst)), (1, 5), "an ended task is started again");
    }
}
