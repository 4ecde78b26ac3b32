//! Restart and reload against the real lab, with a second exporter of its own (its own probe
//! id and state file), so the main exporter's figures are not disturbed.
//!
//! Restart: the exporter sees a failover, then HAProxy freezes (a write outage) and the exporter
//! is killed with SIGKILL; three of its acknowledged rows are deleted while it is down; it comes
//! back with the same state file. Its events and last failover are back, the outage it was in
//! is listed as interrupted and measured nowhere, and the loss check finds the three rows.
//! Reload: a changed probe interval (SIGHUP) keeps the failover history and the probe id.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::steps::Steps;
use crate::support::*;
use crate::SCOPE;

fn config(interval: &str) -> String {
    format!(
        "clusters:\n  - scope: {SCOPE}\n    etcd:\n      endpoints: [http://127.0.0.11:12379, http://127.0.0.12:12379, http://127.0.0.13:12379]\n    \
         haproxy: [{{stats_url: 'http://127.0.0.31:17000/;csv'}}]\n    probes:\n      user: app\n      \
         password: {{env: PGHA_PROBE_PASSWORD}}\n      database: app\n      primary: 127.0.0.31:15000\n      \
         direct: false\n      interval: {interval}\n      timeout: 500ms\n"
    )
}

/// A second exporter with `state`; killed (by its pid) when dropped.
fn start(config_path: &std::path::Path, state: &std::path::Path, log: &std::path::Path) -> Exporter {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(binary())
        .args(["--config.file", config_path.to_str().unwrap(), "--web.listen-address", &addr.to_string()])
        .args(["--state.file", state.to_str().unwrap()])
        .env("PGHA_PROBE_PASSWORD", "app")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let exporter = Exporter { child, addr };
    wait_until("the second exporter is ready", Duration::from_secs(30), || {
        http_get(addr, "/-/ready").ok().filter(|(s, _)| *s == 200)
    });
    exporter
}

fn events(exporter: &Exporter) -> serde_json::Value {
    serde_json::from_str(&http_get(exporter.addr, "/api/v1/events").unwrap().1).unwrap()
}

fn counter(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.find(name, labels).iter().map(|s| s.value).sum()
}

pub fn run(steps: &mut Steps, heal: impl FnOnce()) {
    steps.run("reload and restart after SIGKILL in a write outage", restart, heal);
}

fn restart() {
    let dir = std::env::temp_dir().join(format!("pgha-it-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (config_path, state, log) = (dir.join("config.yml"), dir.join("state.json"), dir.join("exporter.log"));
    std::fs::write(&config_path, config("100ms")).unwrap();
    let mut first = start(&config_path, &state, &log);
    let m = wait_until("writes and a leader", Duration::from_secs(20), || {
        let m = first.scrape();
        (m.get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]) == Some(1.0) && m.leader(SCOPE).is_some())
            .then_some(m)
    });
    let probe_id = m.find("pgha_probe_info", &[("scope", SCOPE)])[0].labels["probe_id"].clone();

    // A failover it sees.
    let old = m.leader(SCOPE).unwrap();
    lab(&["stop", &old]);
    let failover = wait_until("the failover is recorded", Duration::from_secs(40), || {
        let v = events(&first);
        v["last_failovers"].as_array().and_then(|f| f.first().cloned())
    });
    lab(&["heal", "120"]);

    // A reload with another probe interval keeps the history and the probe id.
    std::fs::write(&config_path, config("200ms")).unwrap();
    // SAFETY: a signal to the child this test started, by its pid.
    assert_eq!(unsafe { libc::kill(first.child.id() as libc::pid_t, libc::SIGHUP) }, 0);
    wait_until("the reload is applied", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap().contains("configuration reloaded").then_some(())
    });
    let after_reload = first.scrape();
    assert_eq!(after_reload.find("pgha_probe_info", &[("scope", SCOPE)])[0].labels["probe_id"], probe_id);
    assert_eq!(events(&first)["last_failovers"][0], failover, "the reload kept the failover");
    wait_until("writes again after the reload", Duration::from_secs(20), || {
        (first.scrape().get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]) == Some(1.0)).then_some(())
    });

    // A write outage, then SIGKILL inside it (the state file is written every second).
    lab(&["pause", "haproxy"]);
    let frozen = Instant::now();
    wait_until("the write probe fails", Duration::from_secs(10), || {
        (first.scrape().get("pgha_probe_up", &[("scope", SCOPE), ("probe", "write")]) == Some(0.0)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500));
    let _ = first.child.kill();
    let _ = first.child.wait();
    let leader = patronictl_leader().expect("a leader");
    let ip = format!("127.0.0.2{}", &leader[4..]);
    let deleted = psql(&ip, &format!(
        "WITH gone AS (DELETE FROM pgha_probe.heartbeat WHERE probe_id = '{probe_id}' AND seq IN \
         (SELECT seq FROM pgha_probe.heartbeat WHERE probe_id = '{probe_id}' ORDER BY seq DESC LIMIT 3 OFFSET 10) RETURNING seq) \
         SELECT count(*) FROM gone"
    ));
    // Ten rows back from the newest: surely acknowledged (the newest may have committed unanswered).
    assert_eq!(deleted.trim(), "3", "three acknowledged rows deleted");
    lab(&["resume", "haproxy"]);
    lab(&["wait-healthy", "30"]);
    eprintln!("exporter killed {:.1}s into the outage", frozen.elapsed().as_secs_f64());

    let second = start(&config_path, &state, &log);
    let m = wait_until("the loss check after the restart", Duration::from_secs(30), || {
        let m = second.scrape();
        (counter(&m, "pgha_probe_lost_writes_total", &[("scope", SCOPE)]) > 0.0).then_some(m)
    });
    assert_eq!(counter(&m, "pgha_probe_lost_writes_total", &[("scope", SCOPE)]), 3.0, "exactly the deleted rows");
    assert_eq!(m.find("pgha_probe_info", &[("scope", SCOPE)])[0].labels["probe_id"], probe_id, "the same probe id");
    assert_eq!(counter(&m, "pgha_probe_outages_total", &[("scope", SCOPE), ("probe", "write")]), 0.0, "not measured");
    let v = events(&second);
    assert_eq!(v["last_failovers"][0], failover, "the failover seen before the restart");
    let kinds: Vec<&str> = v["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"failover"), "{kinds:?}");
    assert!(kinds.contains(&"write_outage_interrupted"), "{kinds:?}");
    assert!(
        !kinds[kinds.iter().rposition(|k| *k == "write_outage_interrupted").unwrap()..].contains(&"write_outage_ended"),
        "the interrupted outage is never closed as measured: {kinds:?}"
    );
}

fn psql(ip: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", ip, "-p", "15432", "-U", "postgres", "-d", "app", "-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", "lab-postgres")
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
