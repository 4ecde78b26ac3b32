//! An independent writer: a commit every 50 ms through HAProxy's primary port, on its own
//! connection that reconnects after any error, every attempt under a 500 ms deadline. It measures
//! outages with the exporter's definition (last success before a failure to the next success),
//! so the exporter's figures can be checked against it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(50);
// Short, as the exporter's probe in the test: an attempt stuck in HAProxy's connect retries to a
// dead server must not straddle the end of the outage for long.
const DEADLINE: Duration = Duration::from_millis(500);

pub struct Writer {
    stop: Arc<AtomicBool>,
    /// (when the attempt ended, whether it committed)
    log: Arc<Mutex<Vec<(Instant, bool)>>>,
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

async fn attempt(client: &mut Option<Session>, tls: Option<&rustls::ClientConfig>) -> bool {
    if client.is_none() {
        let Some(session) = connect(tls).await else { return false };
        *client = Some(session);
    }
    let (c, _) = client.as_ref().unwrap();
    let ok = matches!(
        tokio::time::timeout(DEADLINE, c.execute("INSERT INTO it_writes DEFAULT VALUES", &[])).await,
        Ok(Ok(_))
    );
    if !ok {
        if let Some((_, task)) = client.take() {
            task.abort();
        }
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
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut client = None;
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !s.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let ok = attempt(&mut client, tls.as_ref()).await;
                    l.lock().unwrap().push((Instant::now(), ok));
                }
            });
        });
        Writer { stop, log, thread: Some(thread) }
    }

    pub fn successes_since(&self, t: Instant) -> usize {
        self.log.lock().unwrap().iter().filter(|(at, ok)| *at >= t && *ok).count()
    }

    /// The first outage whose failures began after `t`: from the last success before it to the
    /// next success; `None` while it has not ended.
    pub fn outage_after(&self, t: Instant) -> Option<Duration> {
        let log = self.log.lock().unwrap();
        let first_failure = log.iter().position(|(at, ok)| *at >= t && !ok)?;
        let last_success = log[..first_failure].iter().rev().find(|(_, ok)| *ok)?.0;
        let recovered = log[first_failure..].iter().find(|(_, ok)| *ok)?.0;
        Some(recovered - last_success)
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
