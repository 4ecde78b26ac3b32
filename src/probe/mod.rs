//! Synthetic probes: what an application behind HAProxy actually experiences.
//!
//! - `write`: a commit every interval through HAProxy's primary port, with the acknowledged-write
//!   loss check after every outage;
//! - `read`: the newest heartbeat row visible through the replicas port (staleness);
//! - `direct`: every member's own PostgreSQL, so "HAProxy is down but the primary takes writes"
//!   is told apart from "the database is down", and the moment a new primary became writable is
//!   timed.
//!
//! Every attempt runs under a client-side deadline (a server-side statement timeout does nothing
//! against a frozen server); on expiry or any connection-level error the connection is dropped
//! and the next attempt reconnects.

pub mod direct;
pub mod read;
pub mod write;

use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::error::SqlState;

use crate::config::ProbeConfig;

/// Why a probe attempt failed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    ConnectRefused,
    ClosedConnection,
    ReadOnly,
    Timeout,
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 5] = [
        FailureReason::ConnectRefused,
        FailureReason::ClosedConnection,
        FailureReason::ReadOnly,
        FailureReason::Timeout,
        FailureReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ConnectRefused => "connect_refused",
            FailureReason::ClosedConnection => "closed_connection",
            FailureReason::ReadOnly => "read_only",
            FailureReason::Timeout => "timeout",
            FailureReason::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Classifies a PostgreSQL client error.
pub fn classify(e: &tokio_postgres::Error) -> FailureReason {
    if let Some(code) = e.code() {
        if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            return FailureReason::ReadOnly;
        }
        // The server is shutting down or restarting: the connection is going away.
        if [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code) {
            return FailureReason::ClosedConnection;
        }
    }
    if e.is_closed() {
        return FailureReason::ClosedConnection;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => FailureReason::ConnectRefused,
                std::io::ErrorKind::TimedOut => FailureReason::Timeout,
                _ => FailureReason::ClosedConnection,
            };
        }
        cause = c.source();
    }
    // HAProxy accepts the TCP connection and closes it when no server is up: tokio-postgres
    // reports that as an unexpected end of the startup exchange.
    let text = e.to_string();
    if text.contains("connection closed") || text.contains("unexpected EOF") || text.contains("unexpected message") {
        return FailureReason::ClosedConnection;
    }
    FailureReason::Other
}

/// A fixed-bucket histogram, encoded at scrape time.
#[derive(Debug, Clone)]
pub struct Hist {
    pub bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); one more than `bounds` for +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Probe latencies: 1 ms to 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Outages and failover phases: 100 ms to 10 min.
pub const OUTAGE_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0];

impl Hist {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// (upper bound, per-bucket count), ending with +Inf, as prometheus-client encodes them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds.iter().copied().chain([f64::INFINITY]).zip(self.counts.iter().copied()).collect()
    }
}

/// The end of an outage: from the last success before a failure to the next success.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub last_success: Instant,
    pub recovered: Instant,
}

impl Outage {
    pub fn duration(&self) -> Duration {
        self.recovered.saturating_duration_since(self.last_success)
    }
}

/// What one attempt changed about the probe's outage state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    None,
    /// The first failure after a success; the outage began at that success.
    OutageStarted {
        last_success: Instant,
        reason: FailureReason,
    },
    OutageEnded(Outage),
}

/// Counters and outage state of one probe. Counters reset when the exporter restarts.
#[derive(Debug, Clone)]
pub struct ProbeStats {
    pub attempts: u64,
    pub failures: [u64; FailureReason::ALL.len()],
    pub latency: Hist,
    pub up: bool,
    pub last_success: Option<Instant>,
    pub last_success_wall: Option<SystemTime>,
    pub last_failure: Option<FailureReason>,
    /// When the current outage began (the last success before it); `None` when there is none.
    pub outage_since: Option<Instant>,
    pub outages: u64,
    pub last_outage: Option<Duration>,
    pub outage_durations: Hist,
}

impl Default for ProbeStats {
    fn default() -> Self {
        Self {
            attempts: 0,
            failures: [0; FailureReason::ALL.len()],
            latency: Hist::new(LATENCY_BUCKETS),
            up: false,
            last_success: None,
            last_success_wall: None,
            last_failure: None,
            outage_since: None,
            outages: 0,
            last_outage: None,
            outage_durations: Hist::new(OUTAGE_BUCKETS),
        }
    }
}

impl ProbeStats {
    pub fn failures_by_reason(&self) -> impl Iterator<Item = (FailureReason, u64)> + '_ {
        FailureReason::ALL.iter().map(|r| (*r, self.failures[r.index()]))
    }

    /// Records one attempt that started at `started` and ended at `finished`.
    pub fn record(&mut self, started: Instant, finished: Instant, result: Result<(), FailureReason>) -> Transition {
        self.attempts += 1;
        self.latency.observe(finished.saturating_duration_since(started).as_secs_f64());
        match result {
            Ok(()) => {
                self.up = true;
                self.last_success = Some(finished);
                self.last_success_wall = Some(SystemTime::now() - Instant::now().saturating_duration_since(finished));
                match self.outage_since.take() {
                    Some(since) => {
                        let outage = Outage { last_success: since, recovered: finished };
                        self.outages += 1;
                        self.last_outage = Some(outage.duration());
                        self.outage_durations.observe(outage.duration().as_secs_f64());
                        Transition::OutageEnded(outage)
                    }
                    None => Transition::None,
                }
            }
            Err(reason) => {
                self.up = false;
                self.failures[reason.index()] += 1;
                self.last_failure = Some(reason);
                // Before a first success there is no known start: no outage is counted.
                match (self.outage_since, self.last_success) {
                    (None, Some(last)) => {
                        self.outage_since = Some(last);
                        Transition::OutageStarted { last_success: last, reason }
                    }
                    _ => Transition::None,
                }
            }
        }
    }

    /// Seconds into the current outage (0 when there is none).
    pub fn current_outage(&self, now: Instant) -> Duration {
        self.outage_since.map(|s| now.saturating_duration_since(s)).unwrap_or_default()
    }
}

/// Connects to PostgreSQL under `deadline`, the connection driven by a task that is aborted
/// when the returned handle is dropped (a frozen server must not keep it alive).
pub struct Connection {
    pub client: tokio_postgres::Client,
    /// The probe table was found or created on this connection's server.
    pub table_ready: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn connect(
    config: &ProbeConfig,
    host: &str,
    port: u16,
    deadline: Duration,
) -> Result<Connection, FailureReason> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(host)
        .port(port)
        .user(&config.user)
        .dbname(&config.database)
        .application_name("pgha-exporter")
        .connect_timeout(deadline);
    if let Some(p) = &config.resolved_password {
        pg.password(p.expose());
    }
    match tokio::time::timeout(deadline, pg.connect(tokio_postgres::NoTls)).await {
        Err(_) => Err(FailureReason::Timeout),
        Ok(Err(e)) => Err(classify(&e)),
        Ok(Ok((client, connection))) => {
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Connection { client, table_ready: false, task })
        }
    }
}

/// Runs a query future under `deadline`; a timeout is a failure like any other.
pub async fn within<T>(
    deadline: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, FailureReason> {
    match tokio::time::timeout(deadline, f).await {
        Err(_) => Err(FailureReason::Timeout),
        Ok(Err(e)) => Err(classify(&e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Splits `host:port`.
pub fn host_port(addr: &str) -> Option<(String, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().ok()?))
}

/// The SQL that creates the probe's own schema and table; shown to the user when the
/// configured role may not run it.
pub fn setup_sql(schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};\n\
         CREATE TABLE IF NOT EXISTS {schema}.heartbeat (\n  \
           probe_id text NOT NULL,\n  seq bigint NOT NULL,\n  written_at timestamptz NOT NULL,\n  \
           PRIMARY KEY (probe_id, seq));"
    )
}

pub fn grant_sql(schema: &str, role: &str) -> String {
    format!("GRANT USAGE ON SCHEMA {schema} TO {role};\nGRANT SELECT, INSERT, DELETE ON {schema}.heartbeat TO {role};")
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("role `{role}` may not create the probe table ({message}); run as a privileged user:\n{create}\n{grant}")]
    NotAllowed { role: String, message: String, create: String, grant: String },
    #[error("probe setup failed: {0}")]
    Failed(String),
}

/// Creates the probe's schema and table unless they exist.
pub async fn ensure_table(
    client: &tokio_postgres::Client,
    config: &ProbeConfig,
    deadline: Duration,
) -> Result<(), SetupError> {
    let table = format!("{}.heartbeat", config.schema);
    let exists = tokio::time::timeout(deadline, client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]))
        .await
        .map_err(|_| SetupError::Failed("timed out".into()))?
        .map_err(|e| SetupError::Failed(e.to_string()))?;
    if exists.try_get::<_, bool>(0).unwrap_or(false) {
        return Ok(());
    }
    let sql = setup_sql(&config.schema);
    match tokio::time::timeout(deadline, client.batch_execute(&sql)).await {
        Err(_) => Err(SetupError::Failed("timed out".into())),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => Err(SetupError::NotAllowed {
            role: config.user.clone(),
            message: e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string()),
            create: sql,
            grant: grant_sql(&config.schema, &config.user),
        }),
        Ok(Err(e)) => Err(SetupError::Failed(e.to_string())),
    }
}

/// A probe id unique per exporter instance: two exporters on one cluster never collide.
pub fn new_probe_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{}-{:x}", host.trim(), std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_runs_from_last_success_to_next_success() {
        let mut s = ProbeStats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            s.record(at(0), at(1), Err(FailureReason::ConnectRefused)),
            Transition::None,
            "no success yet: no outage"
        );
        assert_eq!(s.outage_since, None);
        assert_eq!(s.record(at(100), at(101), Ok(())), Transition::None);
        assert_eq!(
            s.record(at(200), at(205), Err(FailureReason::ReadOnly)),
            Transition::OutageStarted { last_success: at(101), reason: FailureReason::ReadOnly }
        );
        assert_eq!(s.record(at(300), at(1300), Err(FailureReason::Timeout)), Transition::None);
        assert_eq!(s.current_outage(at(1401)), Duration::from_millis(1300));
        let ended = s.record(at(3000), at(3101), Ok(()));
        assert_eq!(ended, Transition::OutageEnded(Outage { last_success: at(101), recovered: at(3101) }));
        assert_eq!(s.last_outage, Some(Duration::from_secs(3)));
        assert_eq!((s.outages, s.attempts), (1, 5));
        assert_eq!(s.current_outage(at(4000)), Duration::ZERO);
        let failures: Vec<_> = s.failures_by_reason().collect();
        assert!(failures.contains(&(FailureReason::ConnectRefused, 1)));
        assert!(failures.contains(&(FailureReason::ClosedConnection, 0)));
        assert_eq!(s.outage_durations.count, 1);
        assert_eq!(
            s.outage_durations.buckets().iter().find(|(b, _)| *b == 3.0).unwrap().1,
            1,
            "3.0 s lands in the le=3 bucket"
        );
    }

    #[test]
    fn histogram_buckets_end_with_inf() {
        let mut h = Hist::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        assert_eq!(h.buckets(), vec![(1.0, 1), (2.0, 1), (f64::INFINITY, 1)]);
        assert_eq!((h.count, h.sum), (3, 11.0));
    }

    #[test]
    fn addresses_and_ids() {
        assert_eq!(host_port("127.0.0.31:15000"), Some(("127.0.0.31".into(), 15000)));
        assert_eq!(host_port("[::1]:5432"), Some(("::1".into(), 5432)));
        assert_eq!(host_port("nohost"), None);
        assert_ne!(new_probe_id(), new_probe_id());
        assert!(setup_sql("s").contains("CREATE TABLE IF NOT EXISTS s.heartbeat"));
    }
}
