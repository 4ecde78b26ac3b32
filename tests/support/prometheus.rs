//! A real Prometheus (Debian's) scraping the exporter at 15 s with the project's rules loaded,
//! for the lab test; queried through its HTTP API.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use super::{free_port, http_get, repo, wait_until};

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

impl Prometheus {
    pub fn start(exporter: SocketAddr) -> Self {
        Self::start_jobs(&format!(
            "  - job_name: pgha-exporter\n    static_configs:\n      - targets: ['{exporter}']\n"
        ))
    }

    /// Scraping with `jobs`, entries of `scrape_configs` as YAML.
    pub fn start_jobs(jobs: &str) -> Self {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgha-it-prometheus-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rules = repo().join("prometheus/rules");
        let config = format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\
             rule_files: ['{}/*.yml']\n\
             scrape_configs:\n{jobs}",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("starting prometheus (Debian package `prometheus`)");
        let p = Prometheus { child, addr, dir };
        wait_until("Prometheus is ready", Duration::from_secs(30), || {
            http_get(p.addr, "/-/ready").ok().filter(|(s, _)| *s == 200)
        });
        p
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.addr, path).expect("querying Prometheus");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(v["status"], "success", "{path}: {body}");
        v
    }

    /// Series returned by a range query (each with at least one sample).
    pub fn query_range(&self, query: &str, start: f64, end: f64, step: u64) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}", encode(query));
        let v = self.get(&path);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let v = self.get(&format!("/api/v1/query?query={}", encode(query)));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The active targets, as `/api/v1/targets` gives them.
    pub fn targets(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/targets")["data"]["activeTargets"].as_array().cloned().unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
