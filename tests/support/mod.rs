//! Helpers for the integration tests against the real lab: driving `compose/local/lab`, running
//! the exporter binary, scraping and querying its `/metrics`, and bounded waits.

#![allow(dead_code)]

pub mod bundle;
pub mod fakes;
pub mod prometheus;
pub mod steps;
pub mod writer;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lab_dir() -> PathBuf {
    std::env::var_os("PGHA_LAB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/pgha-lab"))
}

/// Runs a lab verb; panics with its output when it fails.
pub fn lab(args: &[&str]) -> String {
    let out = Command::new(repo().join("compose/local/lab")).args(args).output().expect("running compose/local/lab");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "lab {args:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The leader as `patronictl list` names it.
pub fn patronictl_leader() -> Option<String> {
    let out = Command::new("patronictl")
        .args(["-c", lab_dir().join("node1/patroni.yml").to_str().unwrap(), "list", "-f", "json"])
        .output()
        .ok()?;
    let members: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    members.iter().find(|m| m["Role"] == "Leader").and_then(|m| m["Member"].as_str()).map(str::to_string)
}

/// The lab for the whole test run: brought up once, taken down when dropped, even on failure
/// (a failing test also gets the lab's and the exporter's logs printed).
pub struct LabGuard {
    pub exporter_log: PathBuf,
}

impl LabGuard {
    pub fn up(exporter_log: PathBuf) -> Self {
        Self::up_with(exporter_log, &["up"])
    }

    /// The lab brought up with `lab <args>` (e.g. `up --tls`).
    pub fn up_with(exporter_log: PathBuf, args: &[&str]) -> Self {
        assert!(
            Command::new("patroni").arg("--version").output().is_ok(),
            "the lab needs Debian's etcd, patroni, haproxy and postgresql: run `.ci/run` or `compose/local/lab install`"
        );
        let guard = LabGuard { exporter_log };
        lab(args);
        guard
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== lab status\n{}",
                Command::new(repo().join("compose/local/lab"))
                    .arg("status")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            );
            eprintln!(
                "===== lab logs\n{}",
                Command::new(repo().join("compose/local/lab"))
                    .arg("logs")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            );
            let log = std::fs::read_to_string(&self.exporter_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("===== exporter log (last 80 lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        let _ = Command::new(repo().join("compose/local/lab")).arg("down").status();
    }
}

/// The exporter binary, running with a config file; killed (by its own pid) when dropped.
pub struct Exporter {
    pub child: Child,
    pub addr: SocketAddr,
}

/// The exporter binary under test: this build's, or `PGHA_EXPORTER_BIN` (to show a test failing
/// on an older build).
pub fn binary() -> String {
    std::env::var("PGHA_EXPORTER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pgha-exporter").to_string())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Exporter {
    pub fn start(config: &str, log: &PathBuf) -> Self {
        Self::start_with(config, log, &[])
    }

    /// A config file of its own (tests of one binary run in parallel) and a free address.
    pub fn prepare(config: &str) -> (PathBuf, SocketAddr) {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgha-it-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join(format!("config-{n}.yml"));
        std::fs::write(&config_path, config).unwrap();
        (config_path, format!("127.0.0.1:{}", free_port()).parse().unwrap())
    }

    /// Started with `extra` arguments after the config file and listen address.
    pub fn start_with(config: &str, log: &PathBuf, extra: &[&str]) -> Self {
        Self::start_limited(config, log, extra, None)
    }

    /// Started as [`Exporter::start_with`], with soft and hard limits of `open_files` when given
    /// (as a unit's `LimitNOFILE=` would set them).
    pub fn start_limited(config: &str, log: &PathBuf, extra: &[&str], open_files: Option<u64>) -> Self {
        use std::os::unix::process::CommandExt;
        let (config_path, addr) = Self::prepare(config);
        let mut command = Command::new(binary());
        command
            .args(["--config.file", config_path.to_str().unwrap(), "--web.listen-address", &addr.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("PGHA_PROBE_PASSWORD", "app")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        if let Some(n) = open_files {
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            // SAFETY: setrlimit is async-signal-safe and only touches the child's own limits.
            unsafe {
                command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = command.spawn().expect("starting the exporter");
        let exporter = Exporter { child, addr };
        wait_until("the exporter answers /-/ready", Duration::from_secs(20), || {
            http_get(addr, "/-/ready").ok().filter(|(status, _)| *status == 200)
        });
        exporter
    }

    pub fn scrape(&self) -> Metrics {
        self.timed_scrape().1
    }

    pub fn timed_scrape(&self) -> (Duration, Metrics) {
        let started = Instant::now();
        let (status, body) = http_get(self.addr, "/metrics").expect("scraping /metrics");
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        (took, Metrics::parse(&body))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET with a 5 s deadline on every step.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition. Good enough for our own output: label values hold no `",` sequences.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").expect("label");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            samples.push(Sample { name: name.to_string(), labels, value: value.parse().expect("value") });
        }
        Metrics { samples, text: text.to_string() }
    }

    /// Samples of `name` whose labels include all of `matching`.
    pub fn find(&self, name: &str, matching: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name && matching.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of exactly one matching sample, or `None` when there is none.
    pub fn get(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, matching);
        assert!(found.len() <= 1, "{name} {matching:?} matches {} series", found.len());
        found.first().map(|s| s.value)
    }

    /// The `member` label of every sample of `name` (in `matching`) whose value is 1.
    pub fn members_where(&self, name: &str, matching: &[(&str, &str)]) -> Vec<String> {
        let mut m: Vec<String> = self
            .find(name, matching)
            .into_iter()
            .filter(|s| s.value == 1.0)
            .filter_map(|s| s.labels.get("member").cloned())
            .collect();
        m.sort();
        m
    }

    pub fn leader(&self, scope: &str) -> Option<String> {
        let leaders = self.members_where("pgha_cluster_leader_info", &[("scope", scope)]);
        assert!(leaders.len() <= 1, "several leaders: {leaders:?}");
        leaders.into_iter().next()
    }
}

/// Polls `check` every 100 ms until it gives a value; panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            eprintln!("[{:>6.2}s] {what}", started.elapsed().as_secs_f64());
            return v;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
