//! One PostgreSQL session of a probe: connect, every statement under the attempt's deadline,
//! error classification, and the heartbeat table's SQL. The write, read and direct probes all
//! use it; nothing else in the program speaks SQL.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::error::SqlState;

use super::password_guard::{Guarded, GuardedTls, PasswordGuard};
use crate::config::tls::tls_failure;
use crate::config::{ChannelBinding, PgLogin, PgTls, ProbePlan, SslMode};
use crate::model::address::HostPort;
use crate::model::probe::FailureReason;
use tokio::net::TcpStream;
use tokio_postgres::tls::MakeTlsConnect;

/// Rows of any probe id (e.g. of exporters long gone) older than this are pruned.
const FOREIGN_ROWS_AGE_SECONDS: f64 = 86_400.0;
/// Setup and loss checks get at least this long, whatever the probe's timeout.
pub const SLOW_STATEMENT: Duration = Duration::from_secs(2);

/// The end of one attempt: every step of it gets what is left.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// What is left, at least a millisecond (so a late step fails as a timeout, not a panic).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
    }
}

/// Classifies a PostgreSQL client error.
pub fn classify(e: &tokio_postgres::Error) -> FailureReason {
    if let Some(code) = e.code() {
        if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            return FailureReason::ReadOnly;
        }
        if [SqlState::INVALID_PASSWORD, SqlState::INVALID_AUTHORIZATION_SPECIFICATION].contains(code) {
            return FailureReason::Auth;
        }
        // The server is shutting down or restarting: the connection is going away.
        if [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code) {
            return FailureReason::ClosedConnection;
        }
    }
    if tls_failure(e).is_some() || e.to_string().contains("TLS") {
        return FailureReason::Tls;
    }
    if e.is_closed() {
        return FailureReason::ClosedConnection;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        cause = c.source();
    }
    // HAProxy accepts the TCP connection and closes it when no server is up: tokio-postgres
    // reports that as an unexpected end of the startup exchange, with no error code or cause.
    let text = e.to_string();
    if text.contains("connection closed") || text.contains("unexpected EOF") || text.contains("unexpected message") {
        return FailureReason::ClosedConnection;
    }
    FailureReason::Other
}

/// Connects to `addr` and logs in, TLS as `tls` says; returns the client and the task driving
/// its connection. The TCP connection is ours, so the password guard can sit under TLS and in it.
async fn open(
    pg: &tokio_postgres::Config,
    tls: &PgTls,
    addr: &HostPort,
    deadline: &Deadline,
) -> Result<(tokio_postgres::Client, Driver), FailureReason> {
    let tcp =
        match tokio::time::timeout(deadline.remaining(), TcpStream::connect((addr.host.as_str(), addr.port))).await {
            Err(_) => return Err(FailureReason::Timeout),
            Ok(Err(e)) => return Err(io_reason(&e)),
            Ok(Ok(tcp)) => tcp,
        };
    let _ = tcp.set_nodelay(true);
    let guard = |tls_requested| tls.require_scram.then(|| PasswordGuard::new(tls_requested));
    let mut pg = pg.clone();
    match &tls.plan {
        Some(plan) => {
            pg.ssl_mode(ssl_mode(tls.sslmode)).channel_binding(channel_binding(tls.channel_binding));
            let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(rustls::ClientConfig::clone(&plan.rustls));
            let rustls = MakeTlsConnect::<Guarded<TcpStream>>::make_tls_connect(&mut make, &addr.host)
                .map_err(|_| FailureReason::Tls)?;
            let connector = GuardedTls { inner: rustls, guard: tls.require_scram };
            let stream = Guarded::new(tcp, guard(true));
            let (client, connection) = bounded(deadline, pg.connect_raw(stream, connector)).await?;
            Ok((client, Driver::spawn(connection)))
        }
        None => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let stream = Guarded::new(tcp, guard(false));
            let (client, connection) = bounded(deadline, pg.connect_raw(stream, tokio_postgres::NoTls)).await?;
            Ok((client, Driver::spawn(connection)))
        }
    }
}

/// The task driving a session's connection. It reads the socket all the time, so a connection
/// closed by the server (shutdown, crash, HAProxy cutting its sessions) ends it at once, even
/// while no statement runs: `closed` tells.
struct Driver {
    task: tokio::task::JoinHandle<()>,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Driver {
    fn spawn<C: Future + Send + 'static>(connection: C) -> Self {
        let (tx, closed) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            drop(connection.await);
            let _ = tx.send(true);
        });
        Driver { task, closed }
    }
}

/// libpq's modes that tokio-postgres knows: the verify modes are `require` to it, the checks
/// being the rustls setup's.
fn ssl_mode(mode: SslMode) -> tokio_postgres::config::SslMode {
    match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    }
}

fn channel_binding(c: ChannelBinding) -> tokio_postgres::config::ChannelBinding {
    match c {
        ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
        ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
    }
}

fn io_reason(io: &std::io::Error) -> FailureReason {
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => FailureReason::ConnectRefused,
        std::io::ErrorKind::TimedOut => FailureReason::Timeout,
        // The password guard's refusal.
        std::io::ErrorKind::PermissionDenied => FailureReason::Auth,
        _ => FailureReason::ClosedConnection,
    }
}

/// How an idle session was lost, and when: when it closed, or when the unanswered ping was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub since: Instant,
    pub reason: FailureReason,
}

/// Waits for `round` on `session`'s behalf (see [`Session::idle`]); without a session, for
/// `round` only.
pub async fn idle(
    session: &mut Option<Session>,
    round: impl Future<Output = ()>,
    ping: Option<Duration>,
    timeout: Duration,
) -> Option<Lost> {
    match session {
        Some(s) => s.idle(round, ping, timeout).await,
        None => {
            round.await;
            None
        }
    }
}

/// Runs a statement under `deadline`; a timeout is a failure like any other.
async fn bounded<T>(
    deadline: &Deadline,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, FailureReason> {
    match tokio::time::timeout(deadline.remaining(), f).await {
        Err(_) => Err(FailureReason::Timeout),
        Ok(Err(e)) => Err(classify(&e)),
        Ok(Ok(v)) => Ok(v),
    }
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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetupError {
    #[error("role `{role}` may not create the probe table ({message}); run as a privileged user:\n{create}\n{grant}")]
    NotAllowed { role: String, message: String, create: String, grant: String },
    #[error("probe setup failed: {0}")]
    Failed(String),
}

/// A connected session. Its connection is driven by a task that is aborted when the session is
/// dropped: a frozen server must not keep it alive.
pub struct Session {
    client: tokio_postgres::Client,
    driver: Driver,
    table: String,
    /// The probe table was found or created on this session's server.
    table_ready: bool,
    /// The read probe's statement, once prepared.
    newest: Option<tokio_postgres::Statement>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.task.abort();
    }
}

impl Session {
    pub async fn connect(
        login: &PgLogin,
        schema: &str,
        addr: &HostPort,
        deadline: &Deadline,
    ) -> Result<Session, FailureReason> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&addr.host)
            .port(addr.port)
            .user(&login.user)
            .dbname(&login.database)
            .application_name("pgha-exporter")
            .connect_timeout(deadline.remaining());
        if let Some(p) = &login.password {
            pg.password(p.expose());
        }
        let (client, driver) = open(&pg, &login.tls, addr, deadline).await?;
        Ok(Session { client, driver, table: format!("{schema}.heartbeat"), table_ready: false, newest: None })
    }

    /// Waits for `round`, or until the session is lost on the way: its connection closed,
    /// whoever closed it, or, with `ping` set, an empty query sent every `ping` left unanswered
    /// for `timeout` (a frozen server, or a path that silently drops packets, closes nothing).
    /// A ping in flight when the round comes due is waited for first: the round's own statement
    /// would queue behind it and find the freeze only a whole deadline later.
    pub async fn idle(
        &mut self,
        round: impl Future<Output = ()>,
        ping: Option<Duration>,
        timeout: Duration,
    ) -> Option<Lost> {
        let Session { client, driver, .. } = self;
        let closed = driver.closed.wait_for(|c| *c);
        tokio::pin!(round, closed);
        let gone = || Some(Lost { since: Instant::now(), reason: FailureReason::ClosedConnection });
        loop {
            let next_ping = async {
                match ping {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut round => return None,
                _ = &mut closed => return gone(),
                _ = next_ping => {}
            }
            let (since, deadline) = (Instant::now(), Deadline::after(timeout));
            tokio::select! {
                answer = bounded(&deadline, client.simple_query("")) => {
                    if let Err(reason) = answer {
                        return Some(Lost { since, reason });
                    }
                }
                _ = &mut closed => return gone(),
            }
        }
    }

    /// Creates the probe's schema and table unless they exist (once per session).
    pub async fn ensure_table(&mut self, plan: &ProbePlan, deadline: &Deadline) -> Result<(), SetupError> {
        if self.table_ready {
            return Ok(());
        }
        let timeout = |_| SetupError::Failed("timed out".into());
        let failed = |e: tokio_postgres::Error| SetupError::Failed(e.to_string());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.table];
        let exists = self.client.query_one("SELECT to_regclass($1) IS NOT NULL", &params);
        let row = tokio::time::timeout(deadline.remaining(), exists).await.map_err(timeout)?.map_err(failed)?;
        if !row.try_get::<_, bool>(0).unwrap_or(false) {
            let sql = setup_sql(&plan.schema);
            match tokio::time::timeout(deadline.remaining(), self.client.batch_execute(&sql)).await.map_err(timeout)? {
                Ok(()) => {}
                Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    return Err(SetupError::NotAllowed {
                        role: plan.login.user.clone(),
                        message: e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string()),
                        create: sql,
                        grant: grant_sql(&plan.schema, &plan.login.user),
                    })
                }
                Err(e) => return Err(failed(e)),
            }
        }
        self.table_ready = true;
        Ok(())
    }

    pub async fn in_recovery(&self, deadline: &Deadline) -> Result<bool, FailureReason> {
        // The simple protocol: one round trip, nothing to parse twice. It runs every second
        // on every member while the cluster is calm.
        let messages = bounded(deadline, self.client.simple_query("SELECT pg_is_in_recovery()")).await?;
        let value = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        });
        match value.as_deref() {
            Some("t") => Ok(true),
            Some("f") => Ok(false),
            _ => Err(FailureReason::Other),
        }
    }

    /// One heartbeat row, committed (autocommit).
    pub async fn write_heartbeat(&self, probe_id: &str, seq: i64, deadline: &Deadline) -> Result<(), FailureReason> {
        let sql = format!("INSERT INTO {} (probe_id, seq, written_at) VALUES ($1, $2, $3)", self.table);
        bounded(deadline, self.client.execute(&sql, &[&probe_id, &seq, &SystemTime::now()])).await.map(|_| ())
    }

    /// The sequence number of this probe id's newest visible row; `None` when none is visible.
    pub async fn newest_seq(&mut self, probe_id: &str, deadline: &Deadline) -> Result<Option<i64>, FailureReason> {
        // Prepared once per session: the read probe runs it every second.
        let statement = match &self.newest {
            Some(s) => s.clone(),
            None => {
                let sql = format!("SELECT seq FROM {} WHERE probe_id = $1 ORDER BY seq DESC LIMIT 1", self.table);
                let s = bounded(deadline, self.client.prepare(&sql)).await?;
                self.newest = Some(s.clone());
                s
            }
        };
        let rows = bounded(deadline, self.client.query(&statement, &[&probe_id])).await?;
        // A table made by hand with other column types is a failure, not a panic.
        rows.first().map(|r| r.try_get::<_, i64>(0).map_err(|_| FailureReason::Other)).transpose()
    }

    /// Which of `seqs` this probe id still has.
    pub async fn present(
        &self,
        probe_id: &str,
        seqs: &[i64],
        deadline: &Deadline,
    ) -> Result<HashSet<i64>, FailureReason> {
        let sql = format!("SELECT seq FROM {} WHERE probe_id = $1 AND seq = ANY($2)", self.table);
        let rows = bounded(deadline, self.client.query(&sql, &[&probe_id, &seqs])).await?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// Deletes this probe id's rows before `keep_from`, and with `foreign` anyone's rows older
    /// than a day (exporters that are gone). Nothing outside the probe's table is touched.
    pub async fn prune(
        &self,
        probe_id: &str,
        keep_from: i64,
        foreign: bool,
        deadline: &Deadline,
    ) -> Result<(), FailureReason> {
        let result = if foreign {
            let sql = format!(
                "DELETE FROM {} WHERE (probe_id = $1 AND seq < $2) OR written_at < now() - make_interval(secs => $3)",
                self.table
            );
            bounded(deadline, self.client.execute(&sql, &[&probe_id, &keep_from, &FOREIGN_ROWS_AGE_SECONDS])).await
        } else {
            let sql = format!("DELETE FROM {} WHERE probe_id = $1 AND seq < $2", self.table);
            bounded(deadline, self.client.execute(&sql, &[&probe_id, &keep_from])).await
        };
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_login() -> PgLogin {
        let tls = crate::config::PgTls {
            sslmode: SslMode::Disable,
            plan: None,
            channel_binding: ChannelBinding::Disable,
            require_scram: false,
        };
        PgLogin { user: "u".into(), password: None, database: "d".into(), tls }
    }

    #[test]
    fn setup_sql_names_the_schema() {
        assert!(setup_sql("s").contains("CREATE TABLE IF NOT EXISTS s.heartbeat"));
        assert!(grant_sql("s", "r").contains("GRANT SELECT, INSERT, DELETE ON s.heartbeat TO r"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_classified() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let login = plain_login();
        let addr = HostPort { host: "127.0.0.1".into(), port };
        let err = Session::connect(&login, "s", &addr, &Deadline::after(Duration::from_secs(2))).await.err();
        assert_eq!(err, Some(FailureReason::ConnectRefused));
    }

    /// A server that answers any startup with PostgreSQL's "password authentication failed".
    async fn refusing_server() -> HostPort {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = HostPort { host: "127.0.0.1".into(), port: listener.local_addr().unwrap().port() };
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let _ = s.read(&mut [0u8; 1024]).await;
            let mut fields = Vec::new();
            for (tag, value) in
                [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28P01"), (b'M', "password authentication failed")]
            {
                fields.push(tag);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut message = vec![b'E'];
            message.extend_from_slice(&((fields.len() + 4) as i32).to_be_bytes());
            message.extend_from_slice(&fields);
            let _ = s.write_all(&message).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_refused_login_says_so() {
        let addr = refusing_server().await;
        let login = plain_login();
        let err = Session::connect(&login, "s", &addr, &Deadline::after(Duration::from_secs(2))).await.err();
        assert_eq!(err, Some(FailureReason::Auth));
    }

    /// A server that logs anyone in, answers the first `answers` queries with an empty result,
    /// then stays silent with the connection open (a frozen server), or closes it with `close`.
    async fn pinged_server(answers: usize, close: bool) -> HostPort {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = HostPort { host: "127.0.0.1".into(), port: listener.local_addr().unwrap().port() };
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut len = [0u8; 4];
            let _ = s.read_exact(&mut len).await;
            let _ = s.read_exact(&mut vec![0u8; i32::from_be_bytes(len) as usize - 4]).await;
            let _ = s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']).await;
            for _ in 0..answers {
                let mut head = [0u8; 5];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let _ =
                    s.read_exact(&mut vec![0u8; i32::from_be_bytes(head[1..].try_into().unwrap()) as usize - 4]).await;
                let _ = s.write_all(&[b'I', 0, 0, 0, 4, b'Z', 0, 0, 0, 5, b'I']).await;
            }
            if !close {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        addr
    }

    /// `idle` on a session to [`pinged_server`], its round due after `round_ms`.
    async fn idle_on(answers: usize, close: bool, ping: Option<u64>, round_ms: u64) -> Option<(Lost, Duration)> {
        let addr = pinged_server(answers, close).await;
        let deadline = Deadline::after(Duration::from_secs(2));
        let mut session = Session::connect(&plain_login(), "s", &addr, &deadline).await.expect("logged in");
        let started = Instant::now();
        let round = tokio::time::sleep(Duration::from_millis(round_ms));
        let lost = session.idle(round, ping.map(Duration::from_millis), Duration::from_millis(300)).await;
        lost.map(|l| (l, started.elapsed()))
    }

    #[tokio::test]
    async fn a_session_whose_pings_go_unanswered_is_lost_at_the_ping_deadline() {
        let (lost, after) = idle_on(3, false, Some(50), 3000).await.expect("found");
        assert_eq!(lost.reason, FailureReason::Timeout);
        // Three pings answered, the fourth sent after 200 ms and given 300 ms.
        assert!(after >= Duration::from_millis(500), "{after:?}");
        assert!(after < Duration::from_secs(2), "{after:?}");
    }

    #[tokio::test]
    async fn a_ping_in_flight_when_the_round_is_due_is_waited_for() {
        let (lost, after) = idle_on(0, false, Some(50), 100).await.expect("the round does not hide it");
        assert_eq!(lost.reason, FailureReason::Timeout);
        assert!(after >= Duration::from_millis(350), "{after:?}");
        assert_eq!(idle_on(100, false, Some(50), 300).await, None, "answered pings: the round comes");
    }

    #[tokio::test]
    async fn a_closed_session_is_lost_at_once_and_a_silent_one_without_pings_is_not() {
        let (lost, after) = idle_on(0, true, None, 3000).await.expect("found");
        assert_eq!(lost.reason, FailureReason::ClosedConnection);
        assert!(after < Duration::from_secs(1), "{after:?}");
        assert_eq!(idle_on(0, false, None, 300).await, None, "nothing tells a silent server without pings");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = HostPort { host: "127.0.0.1".into(), port: listener.local_addr().unwrap().port() };
        let held = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(conn);
        });
        let login = plain_login();
        let started = Instant::now();
        let err = Session::connect(&login, "s", &addr, &Deadline::after(Duration::from_millis(300))).await.err();
        assert_eq!(err, Some(FailureReason::Timeout));
        assert!(started.elapsed() < Duration::from_secs(3));
        held.abort();
    }
}
