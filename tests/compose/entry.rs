//! The ha-entry profile's faults: the HAProxy container holding the virtual IP stopped
//! (`docker stop`), killed (`docker kill`) and frozen (`docker pause`), one after another. Each
//! time the VIP's whoami page must name the other instance, the writer's writes must come back,
//! and the exporter's write outage must agree with the writer's downtime within 0.5 s.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Entry {
    env: Vec<(&'static str, String)>,
    vip: String,
    exporter: String,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Polls `check` every 100 ms until it gives a value; panics naming `what` after `limit`.
fn wait<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Entry {
    pub fn new(env: &[(&'static str, String)], vip: &str) -> Self {
        let exporter = env.iter().find(|(k, _)| *k == "PGHA_EXPORTER_PORT").unwrap().1.clone();
        Entry { env: env.to_vec(), vip: vip.to_string(), exporter }
    }

    fn compose(&self, args: &[&str]) -> Option<String> {
        output(Command::new("docker-compose").args(args).envs(self.env.clone()))
    }

    fn container(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]).unwrap_or_default().trim().to_string();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    /// The instance the VIP's whoami page names, and its VRRP state.
    fn holder(&self) -> Option<(String, String)> {
        let url = format!("http://{}:7001/", self.vip);
        let body = output(Command::new("curl").args(["-fsS", "-m", "0.5", &url]))?;
        let mut words = body.split_whitespace().map(str::to_string);
        Some((words.next()?, words.next()?))
    }

    /// The value of the exporter's series `name` whose labels include `label`.
    fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.exporter);
        let body = output(Command::new("curl").args(["-fsS", "-m", "2", &url]))?;
        let line = body.lines().find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))?;
        line.rsplit(' ').next()?.parse().ok()
    }

    /// The downtimes the writer logged for outages that ended after `since` (unix seconds).
    fn writer_outages(&self, since: f64) -> Vec<f64> {
        let logs = self.compose(&["logs", "--no-color", "--tail=400", "writer"]).unwrap_or_default();
        let lines = logs.lines().filter_map(|l| l.find('{').map(|at| &l[at..]));
        let events = lines.filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        let back = events.filter(|e| e["event"] == "writes_back" && e["at"].as_f64().unwrap_or(0.0) >= since);
        back.filter_map(|e| e["downtime"].as_f64()).collect()
    }

    /// The writer committing for 3 s without an outage, and the exporter's write probe up.
    fn settled(&self) {
        wait("the writer and the write probe are settled", Duration::from_secs(60), || {
            let quiet_since = now() - 3.0;
            (self.writer_outages(quiet_since).is_empty()
                && self.metric("pgha_probe_up", "probe=\"write\"") == Some(1.0))
            .then_some(())
        });
        std::thread::sleep(Duration::from_secs(3));
    }

    pub fn fault_the_holder(&mut self, fault: &str) {
        self.settled();
        let (holder, state) = wait("the VIP answers", Duration::from_secs(20), || self.holder());
        assert_eq!(state, "master", "{holder} holds the VIP in state {state}");
        let other = if holder == "haproxy" { "haproxy2" } else { "haproxy" };
        let outages = self.metric("pgha_probe_outages_total", "probe=\"write\"").unwrap_or(0.0);
        let (container, t0) = (self.container(&holder), now());
        eprintln!("===== docker {fault} {holder}, the VIP's holder");
        output(Command::new("docker").args([fault, &container])).unwrap_or_else(|| panic!("docker {fault} failed"));
        let moved = wait("the VIP moves", Duration::from_secs(20), || {
            self.holder().filter(|(name, _)| name == other).map(|_| now() - t0)
        });
        let writer =
            wait("the writer's writes come back", Duration::from_secs(30), || self.writer_outages(t0).first().copied());
        let exporter = wait("the exporter's write probe recovers", Duration::from_secs(30), || {
            let ended = self.metric("pgha_probe_outages_total", "probe=\"write\"")? > outages;
            let up = self.metric("pgha_probe_up", "probe=\"write\"")? == 1.0;
            (ended && up).then(|| self.metric("pgha_probe_last_outage_seconds", "probe=\"write\""))?
        });
        eprintln!(
            "{fault}: the VIP moved to {other} in {moved:.2} s; writer down {writer:.3} s, exporter {exporter:.3} s"
        );
        assert!((exporter - writer).abs() <= 0.5, "{fault}: exporter {exporter:.3} s, writer {writer:.3} s");
        let restore = if fault == "pause" { "unpause" } else { "start" };
        output(Command::new("docker").args([restore, &container])).unwrap_or_else(|| panic!("docker {restore} failed"));
    }
}
