//! Tasks: the ticker every loop uses, the supervisor every collection task runs under, and a
//! set of tasks kept in step with a set of keys (one task per Patroni member, one per
//! direct-probe target). A collection loop never returns; one that panics or returns is logged,
//! counted and started again, so the exporter never goes on answering with frozen data.
//!
//! [`Cadence`] is how fast a cluster's loops go. Most of the time nothing happens in a cluster,
//! and polling every source five times a second costs Patroni, PostgreSQL and etcd more than
//! the exporter itself: so each loop waits its calm interval while the cluster is calm, and its
//! fine interval for a while after any sign of change (an event, a target that fails or comes
//! back, a closed session). A sign wakes every sleeping loop at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinHandle};

/// The first restart waits this long, each next one twice as long, up to `BACKOFF_MAX`...
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// ...and a task that ran this long before it stopped starts again from `BACKOFF_FIRST`.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Why a task stopped, in words.
fn why(outcome: Result<(), JoinError>) -> String {
    match outcome {
        Ok(()) => "it returned".into(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            format!("it panicked: {}", text.chars().take(200).collect::<String>())
        }
        Err(e) => e.to_string(),
    }
}

/// Runs the task `start` makes, for ever: whenever it stops, logs why, calls `restarted` and,
/// after a backoff, starts a new one.
pub async fn supervise<F, Fut>(what: String, restarted: impl Fn(), start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = BACKOFF_FIRST;
    loop {
        let began = Instant::now();
        let mut running = AbortOnDrop(tokio::spawn(start()));
        let why = why((&mut running.0).await);
        tracing::error!(task = %what, why, "a collection task stopped; starting it again");
        restarted();
        if began.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A task that ends with the value holding it: a supervisor that is stopped (its cluster was
/// removed by a reload) stops what it supervises.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A ticker for a polling loop: the first tick is at once, and a slow round delays the next one
/// instead of bursting to catch up.
pub fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// How often a task set is kept in step with the state: during a burst every second (or every
/// `calm` of its loops, when shorter), every five seconds while calm (a member discovered,
/// moved or forgotten is a sign of change: it wakes the set at once).
pub fn reconcile_pace(calm: Duration) -> Pace {
    Pace { fine: calm.min(Duration::from_secs(1)), calm: Duration::from_secs(5) }
}

/// A loop's two intervals: `fine` during a burst, `calm` otherwise (at least `fine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub fine: Duration,
    pub calm: Duration,
}

/// A cluster's burst: every loop runs at its fine interval until `hold` has passed since the
/// last alarm.
#[derive(Debug)]
pub struct Cadence {
    hold: Duration,
    /// When the current burst ends; `None` before the first alarm.
    until: std::sync::Mutex<Option<Instant>>,
    /// Bumped by every alarm, so that loops asleep for their calm interval wake at once.
    alarms: tokio::sync::watch::Sender<u64>,
    /// Alarms raised, since the exporter started.
    raised: std::sync::atomic::AtomicU64,
}

impl Cadence {
    /// Starts in a burst: a freshly started exporter knows nothing yet.
    pub fn new(hold: Duration) -> Self {
        let until = std::sync::Mutex::new(Some(Instant::now() + hold));
        Self { hold, until, alarms: tokio::sync::watch::Sender::new(0), raised: Default::default() }
    }

    /// A sign of change: a burst starts (or goes on) now.
    pub fn alarm(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + self.hold);
        self.raised.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.alarms.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn bursting(&self, now: Instant) -> bool {
        self.until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|u| now < u)
    }

    pub fn alarms_raised(&self) -> u64 {
        self.raised.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The interval `pace` has now.
    pub fn interval(&self, pace: Pace, now: Instant) -> Duration {
        if self.bursting(now) {
            pace.fine
        } else {
            pace.calm
        }
    }

    /// Waits for the next round of a loop whose round began at `began`: one interval of
    /// `pace` later, and sooner when an alarm turns a calm wait into a burst.
    pub async fn next_round(&self, began: Instant, pace: Pace) {
        let mut alarms = self.alarms.subscribe();
        loop {
            let due = began + self.interval(pace, Instant::now());
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => return,
                changed = alarms.changed() => if changed.is_err() {
                    tokio::time::sleep_until(due.into()).await;
                    return;
                },
            }
        }
    }
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
    /// Returns how many had stopped by themselves (they are started again).
    pub fn reconcile<F>(&mut self, wanted: Vec<K>, mut start: impl FnMut(&K) -> F) -> usize
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut stopped = 0;
        self.tasks.retain(|k, task| {
            if task.is_finished() {
                tracing::error!(task = %self.what, key = ?k, "a task stopped; starting it again");
                stopped += 1;
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
        stopped
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
    async fn a_calm_loop_waits_its_calm_interval_and_an_alarm_wakes_it() {
        let cadence = Arc::new(Cadence::new(Duration::from_millis(150)));
        let pace = Pace { fine: Duration::from_millis(20), calm: Duration::from_secs(30) };
        let t0 = Instant::now();
        assert!(cadence.bursting(t0), "a new cadence starts in a burst");
        cadence.next_round(t0, pace).await;
        assert!(t0.elapsed() >= pace.fine && t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!cadence.bursting(Instant::now()), "the burst is over");
        assert_eq!(cadence.interval(pace, Instant::now()), pace.calm);
        let c = cadence.clone();
        let asleep = Instant::now();
        let waiting = tokio::spawn(async move { c.next_round(asleep, pace).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "calm: waits its calm interval");
        cadence.alarm();
        tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the alarm woke the wait").unwrap();
        assert!(asleep.elapsed() < pace.calm);
        assert!(cadence.bursting(Instant::now()));
        assert_eq!(cadence.interval(pace, Instant::now() + Duration::from_millis(200)), pace.calm, "the burst ends");
        assert_eq!(cadence.alarms_raised(), 1);
    }

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
        assert_eq!(set.reconcile(vec!["d"], ends), 1, "one had stopped");
        assert_eq!((set.len(), started.load(Ordering::SeqCst)), (1, 5), "an ended task is started again");
    }

    #[tokio::test]
    async fn a_panicking_task_is_counted_and_started_again_with_backoff() {
        let runs = Arc::new(AtomicUsize::new(0));
        let restarts = Arc::new(AtomicUsize::new(0));
        let (r, n) = (runs.clone(), restarts.clone());
        let supervisor = tokio::spawn(supervise(
            "test".into(),
            move || {
                n.fetch_add(1, Ordering::SeqCst);
            },
            move || {
                let run = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run < 3 {
                        panic!("run {run} fails");
                    }
                    std::future::pending::<()>().await
                }
            },
        ));
        // Backoffs of 100, 200 and 400 ms: the fourth run starts after about 700 ms.
        for _ in 0..100 {
            if runs.load(Ordering::SeqCst) == 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!((runs.load(Ordering::SeqCst), restarts.load(Ordering::SeqCst)), (4, 3));
        supervisor.abort();
        assert_eq!(why(Ok(())), "it returned");
    }

    #[tokio::test]
    async fn stopping_a_supervisor_stops_its_task() {
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let supervisor = tokio::spawn(supervise(
            "test".into(),
            || {},
            move || {
                let flag = Flag(d.clone());
                async move {
                    let _held = flag;
                    std::future::pending::<()>().await
                }
            },
        ));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "running");
        supervisor.abort();
        for _ in 0..50 {
            if dropped.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the supervised task was stopped with its supervisor");
    }
}
