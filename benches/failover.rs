//! Failover bench (outside CI): `cargo bench --bench failover` (root, Debian packages as for
//! the tests). Brings the lab up, runs the exporter with probes at 100 ms and an independent
//! writer at 50 ms, and for each kind of failover, several times, prints the exporter's measured
//! write downtime next to the writer's. BENCH_ROUNDS sets the rounds per kind (default 3),
//! BENCH_KINDS which kinds (default sigterm,sigkill,switchover,sigstop).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::writer::Writer;
use support::*;

const CONFIG: &str = r#"
clusters:
  - scope: demo
    etcd:
      endpoints: [http://127.0.0.11:12379, http://127.0.0.12:12379, http://127.0.0.13:12379]
    haproxy:
      - stats_url: "http://127.0.0.31:17000/;csv"
    probes:
      user: app
      password: {env: PGHA_PROBE_PASSWORD}
      database: app
      primary: 127.0.0.31:15000
      replicas: 127.0.0.31:15001
      interval: 100ms
"#;

fn failovers(m: &Metrics) -> f64 {
    m.find("pgha_failovers_total", &[("scope", "demo")]).iter().map(|s| s.value).sum()
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let kinds = std::env::var("BENCH_KINDS").unwrap_or_else(|_| "sigterm,sigkill,switchover,sigstop".into());
    let log = std::env::temp_dir().join("pgha-bench-exporter.log");
    let _lab = LabGuard::up(log.clone());
    let exporter = Exporter::start(CONFIG, &log);
    let writer = Writer::start();
    std::thread::sleep(Duration::from_secs(2));
    println!("{:<12} {:>5} {:>14} {:>14} {:>10}", "kind", "round", "exporter (s)", "writer (s)", "diff (s)");
    let mut worst: f64 = 0.0;
    for kind in kinds.split(',') {
        for round in 1..=rounds {
            lab(&["heal", "120"]);
            std::thread::sleep(Duration::from_secs(2));
            let m = exporter.scrape();
            let leader = m.leader("demo").expect("a leader");
            let before = failovers(&m);
            let fault_at = Instant::now();
            match kind {
                "sigterm" => drop(lab(&["stop", &leader])),
                "sigkill" => drop(lab(&["kill", &leader])),
                "sigstop" => drop(lab(&["pause", &leader])),
                _ => {
                    let candidate = m
                        .members_where("pgha_patroni_member_role", &[("scope", "demo"), ("role", "replica")])
                        .pop()
                        .expect("a replica");
                    let ok = Command::new("patronictl")
                        .args(["-c", lab_dir().join("node1/patroni.yml").to_str().unwrap(), "switchover"])
                        .args(["--leader", &leader, "--candidate", &candidate, "--force"])
                        .status()
                        .unwrap()
                        .success();
                    assert!(ok, "switchover");
                }
            }
            let m = wait_until("the failover", Duration::from_secs(60), || {
                let m = exporter.scrape();
                (failovers(&m) > before).then_some(m)
            });
            let theirs =
                wait_until("the writer's outage end", Duration::from_secs(10), || writer.outage_after(fault_at));
            let ours = m.get("pgha_last_failover_write_downtime_seconds", &[("scope", "demo")]).unwrap_or(f64::NAN);
            let diff = ours - theirs.as_secs_f64();
            worst = worst.max(diff.abs());
            println!("{kind:<12} {round:>5} {ours:>14.3} {:>14.3} {diff:>+10.3}", theirs.as_secs_f64());
            if kind == "sigstop" {
                lab(&["resume", &leader]);
            }
        }
    }
    println!("largest difference: {worst:.3} s");
    lab(&["heal", "120"]);
}
