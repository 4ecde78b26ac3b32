//! Command line, logging, start-up and a shutdown that cannot hang.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use pgha_exporter::config::Config;
use pgha_exporter::fleet::Fleet;
use pgha_exporter::http::{app, serve, AppState, ServeLimits};
use pgha_exporter::web::WebSource;

#[derive(Parser)]
#[command(
    name = "pgha-exporter",
    version,
    about = "Prometheus exporter for Patroni + etcd + HAProxy PostgreSQL clusters"
)]
struct Cli {
    /// The YAML configuration file.
    #[arg(long = "config.file", global = true, default_value = "pgha-exporter.yml")]
    config_file: PathBuf,
    /// Address to serve /metrics on; repeat the flag for several.
    #[arg(long = "web.listen-address", global = true, default_value = "127.0.0.1:9744")]
    listen_address: Vec<SocketAddr>,
    /// Keep recent events, the last failovers and the write probe's ledger here across
    /// restarts (written atomically every second; off when unset).
    #[arg(long = "state.file", global = true)]
    state_file: Option<PathBuf>,
    /// Serve `POST /-/reload` (reads the configuration again, as SIGHUP does).
    #[arg(long = "web.enable-lifecycle", global = true)]
    enable_lifecycle: bool,
    /// TLS, basic auth and headers for every endpoint, in exporter-toolkit's web config format.
    #[arg(long = "web.config.file", global = true)]
    web_config_file: Option<PathBuf>,
    /// Most HTTP connections served at once; more are closed at once.
    #[arg(long = "web.max-connections", global = true, default_value_t = 256)]
    max_connections: usize,
    /// How long a client may take to send its request headers, and stay idle between requests.
    #[arg(long = "web.header-read-timeout", global = true, default_value = "10s")]
    header_read_timeout: humantime::Duration,
    /// Log format.
    #[arg(long = "log.format", global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long = "log.level", global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration file and exit: 0 if valid, 1 with the bad field named if not.
    CheckConfig,
    /// One `GET` of a running exporter's `/-/healthy` (a container's HEALTHCHECK): exit 0 when
    /// it answers 200 (or 401: alive behind basic auth), 1 with the reason otherwise. An https
    /// URL is read without checking the certificate.
    Healthcheck {
        /// The URL to read.
        #[arg(long, default_value = "http://127.0.0.1:9744/-/healthy")]
        url: String,
        /// Deadline of the whole call.
        #[arg(long, default_value = "3s")]
        timeout: humantime::Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How long in-flight requests get after a shutdown signal before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Kept to the end: dropping it flushes the log lines still queued.
    let _log = init_logging(&cli);
    if let Some(Command::Healthcheck { url, timeout }) = &cli.command {
        return healthcheck(url, (*timeout).into());
    }
    if let Some(Command::CheckConfig) = cli.command {
        // Written without `println!`, which panics when the reader of the pipe is gone.
        return match Config::load(&cli.config_file) {
            Ok(c) => {
                let _ = writeln!(
                    std::io::stdout(),
                    "{}: valid, {} cluster(s)",
                    cli.config_file.display(),
                    c.clusters.len()
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "invalid configuration: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `healthcheck`: prints what the exporter answered, or why it did not, and says so in the exit code.
fn healthcheck(url: &str, timeout: Duration) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "unhealthy: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    pgha_exporter::config::tls::install_default_provider();
    match runtime.block_on(pgha_exporter::healthcheck::check(url, timeout)) {
        Ok(answer) => {
            let _ = writeln!(std::io::stdout(), "healthy: {answer}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "unhealthy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Log lines queued at most: past this a burst drops lines rather than wait for stderr.
const LOG_QUEUE_LINES: usize = 10_000;

/// Logging that can neither panic nor block a loop: lines go through a bounded queue to a
/// writer thread that drops them when stderr is slow, and ignores a stderr that is gone (a
/// broken pipe would otherwise panic the task that logs).
fn init_logging(cli: &Cli) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("pgha-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .log_internal_errors(false);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    raise_fd_limit();
    // From here on a SIGHUP (which would kill the process by default) waits for the reload loop.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    // The one rustls provider, for the libraries that build their own setup (tonic).
    pgha_exporter::config::tls::install_default_provider();
    let config = Config::load(&cli.config_file).context("loading the configuration")?;
    pgha_exporter::preflight(&config).await?;
    let fleet = Fleet::start(&config, Some(cli.config_file.clone()), cli.state_file.clone());
    reload_on_sighup(fleet.clone(), hangup);
    let scopes: Vec<String> = fleet.clusters().iter().map(|c| c.scope().to_string()).collect();
    let web = match &cli.web_config_file {
        Some(path) => WebSource::load(path).context("loading the web configuration")?,
        None => WebSource::none(),
    };
    let tls = web.current().tls.is_some();
    let mut listeners = Vec::new();
    for address in &cli.listen_address {
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
        listeners.push(listener);
    }
    tracing::info!(addresses = ?cli.listen_address, tls, clusters = ?scopes, version = env!("CARGO_PKG_VERSION"), "serving /metrics");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let limits =
        ServeLimits { max_connections: cli.max_connections, header_read_timeout: cli.header_read_timeout.into() };
    let saved_by = fleet.clone();
    let state = AppState::with_web(fleet, web, cli.enable_lifecycle);
    let web = state.web.clone();
    let server = serve(listeners, app(state), web, limits, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let forced = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = server => {}
        _ = forced => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}: exiting anyway"),
    }
    let saving = tokio::task::spawn_blocking(move || saved_by.save_state());
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, saving).await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit of open files to the hard one: the default soft limit (1024 under
/// systemd) is what a few hundred targets, probes and scrapes need at once.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let from = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::info!(from, to = limit.rlim_max, "raised the limit of open files");
        }
    }
}

/// SIGHUP reads the configuration again (an invalid one is logged and changes nothing).
fn reload_on_sighup(fleet: std::sync::Arc<Fleet>, mut hangup: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reading the configuration again");
            let fleet = fleet.clone();
            let _ = tokio::task::spawn_blocking(move || fleet.reload()).await;
        }
    });
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
