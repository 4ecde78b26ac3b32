//! An independent, hedged writer: a new commit attempt every 50 ms through HAProxy's primary
//! port, whatever earlier attempts still wait on, each under a 500 ms deadline. An attempt
//! takes an idle session or opens a new one, and gives it back when it committed; so when
//! writes work, one session does all, and during an outage no attempt held by a dead server or
//! HAProxy's retries holds the others up. Its outage runs from the last acknowledged commit
//! before a failure to the next one, so the exporter's figures can be checked against it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_millis(500);

/// One attempt: when it started, when it ended, whether it committed.
#[derive(Debug, Clone, Copy)]
struct Try {
    started: Instant,
    finished: Instant,
    ok: bool,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Try>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const CONNECT: &str =
    "host=127.0.0.31 port=15000 user=app password=app dbname=app connect_timeout=1 application_name=it-writer";

type Session = (tokio_postgres::Client, tokio::task::JoinHandle<()>);

/// A session through HAProxy's primary port, over TLS when `tls` is given (the TLS lab).
async fn connect(tls: Option<&rustls::ClientConfig>) -> Option<Session> {
    let (c, task) = match tls {
        None => {
            let connect = tokio_postgres::connect(CONNECT, tokio_postgres::NoTls);
            let (c, conn) = tokio::time::timeout(DEADLINE, connect).await.ok()?.ok()?;
            (c, tokio::spawn(async move { drop(conn.await) }))
        }
        Some(config) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config.clone());
            let params = format!("{CONNECT} sslmode=require");
            let connect = tokio_postgres::connect(&params, tls);
            let (c, conn) = tokio::time::timeout(DEADLINE, connect).await.ok()?.ok()?;
            (c, tokio::spawn(async move { drop(conn.await) }))
        }
    };
    let create = c
        .batch_execute("CREATE TABLE IF NOT EXISTS it_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())");
    if !matches!(tokio::time::timeout(DEADLINE, create).await, Ok(Ok(()))) {
        task.abort();
        return None;
    }
    Some((c, task))
}

type Idle = Arc<Mutex<Vec<Session>>>;

async fn attempt(idle: Idle, tls: Option<Arc<rustls::ClientConfig>>) -> bool {
    let taken = idle.lock().unwrap().pop();
    let session = match taken {
        Some(s) => s,
        None => match connect(tls.as_deref()).await {
            Some(s) => s,
            None => return false,
        },
    };
    let insert = session.0.execute("INSERT INTO it_writes DEFAULT VALUES", &[]);
    let ok = matches!(tokio::time::timeout(DEADLINE, insert).await, Ok(Ok(_)));
    if ok {
        idle.lock().unwrap().push(session);
    } else {
        session.1.abort();
    }
    ok
}

impl Writer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A writer over TLS when `tls` is given.
    pub fn start_with(tls: Option<rustls::ClientConfig>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let tls = tls.map(Arc::new);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let idle: Idle = Arc::default();
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut running = tokio::task::JoinSet::new();
                while !s.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (idle, tls, l) = (idle.clone(), tls.clone(), l.clone());
                    running.spawn(async move {
                        let started = Instant::now();
                        let ok = attempt(idle, tls).await;
                        l.lock().unwrap().push(Try { started, finished: Instant::now(), ok });
                    });
                    while running.try_join_next().is_some() {}
                }
            });
        });
        Writer { stop, log, thread: Some(thread) }
    }

    pub fn successes_since(&self, t: Instant) -> usize {
        self.log.lock().unwrap().iter().filter(|a| a.finished >= t && a.ok).count()
    }

    /// The outage after `t`: the longest gap between two consecutive acknowledged commits
    /// (by when they were acknowledged) in which an attempt started after `t` failed; `None`
    /// while an attempt that failed started after the last acknowledgement (not ended yet).
    /// The longest, not the first: a commit begun before the fault may be acknowledged just
    /// after an early failure, and the real outage follows it.
    pub fn outage_after(&self, t: Instant) -> Option<Duration> {
        let log = self.log.lock().unwrap();
        let failed: Vec<Instant> = log.iter().filter(|a| a.started >= t && !a.ok).map(|a| a.started).collect();
        let mut acked: Vec<Instant> = log.iter().filter(|a| a.ok).map(|a| a.finished).collect();
        acked.sort();
        if failed.iter().any(|f| acked.last().is_none_or(|last| f >= last)) {
            return None;
        }
        acked.windows(2).filter(|w| failed.iter().any(|f| (w[0]..w[1]).contains(f))).map(|w| w[1] - w[0]).max()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
