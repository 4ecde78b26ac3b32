//! The exporter against the real lab (compose/local/lab): one bring-up, steps in order, each
//! checked from the exporter's own `/metrics`, the lab healed between steps, every wait bounded.
//! One test function on purpose: the lab's addresses are fixed, so nothing may run beside it.

#[path = "lab/bundle_check.rs"]
mod bundle_check;
#[path = "lab/failover.rs"]
mod failover;
#[path = "lab/restart.rs"]
mod restart;
mod support;

use std::time::{Duration, Instant};

use support::steps::Steps;
use support::*;

pub(crate) const SCOPE: &str = "demo";

fn config() -> String {
    format!(
        r#"
clusters:
  - scope: {SCOPE}
    etcd:
      endpoints: [http://127.0.0.11:12379, http://127.0.0.12:12379, http://127.0.0.13:12379]
    haproxy:
      - name: haproxy
        stats_url: "http://127.0.0.31:17000/;csv"
    probes:
      user: app
      password: {{env: PGHA_PROBE_PASSWORD}}
      database: app
      primary: 127.0.0.31:15000
      replicas: 127.0.0.31:15001
      interval: 100ms
      timeout: 500ms
  # A cluster that does not exist: reported down, and must not disturb the real one.
  - scope: ghost
    patroni:
      members: [{{name: ghost1, api_url: "http://127.0.0.99:18008"}}]
    etcd:
      endpoints: [http://127.0.0.99:12379]
    haproxy:
      - stats_url: "http://127.0.0.99:17000/;csv"
"#
    )
}

#[test]
#[ignore = "needs the lab (root, Debian's etcd, patroni, haproxy, postgresql, prometheus): run compose/local/test"]
fn exporter_tells_the_truth_about_the_lab() {
    let log = std::env::temp_dir().join(format!("pgha-it-exporter-{}.log", std::process::id()));
    let _lab = LabGuard::up(log.clone());
    let exporter = Exporter::start(&config(), &log);
    let prometheus = support::prometheus::Prometheus::start(exporter.addr);
    let prometheus_start = support::prometheus::unix_now();
    let mut steps = Steps::new(log.clone());
    let healed = || heal(&exporter);

    steps.run("healthy", || healthy(&exporter), healed);
    steps.run("discovery from one Patroni URL", discovery_from_one_patroni_url, healed);
    steps.run("a second cluster down", || second_cluster_is_down_without_disturbing_the_first(&exporter), healed);
    steps.run("replica stopped", || replica_stopped(&exporter), healed);
    steps.run("healed after the replica", healed, healed);
    steps.run("leader stopped", || leader_stopped(&exporter), healed);
    steps.run("healed after the leader", healed, healed);
    steps.run("etcd quorum lost", || etcd_quorum_lost(&exporter), healed);
    steps.run("healed after etcd", healed, healed);
    steps.run("HAProxy stopped", || haproxy_stopped(&exporter), healed);
    steps.run("healed after HAProxy", healed, healed);
    steps.run("paused Patroni node", || paused_patroni_node(&exporter), healed);
    steps.run("healed after the paused node", healed, healed);
    steps.run("paused etcd member", || paused_etcd_member(&exporter), healed);
    steps.run("healed after the paused etcd member", healed, healed);
    failover::run(&mut steps, &exporter);
    restart::run(&mut steps, healed);
    steps.run(
        "dashboards and alerts in Prometheus",
        || bundle_check::check(&prometheus, &exporter, prometheus_start),
        || {},
    );
    steps.finish();
}

/// Restores the lab to healthy and waits until the exporter sees it so.
fn heal(exporter: &Exporter) {
    lab(&["heal", "120"]);
    wait_until("the exporter sees a healthy cluster", Duration::from_secs(30), || {
        let m = exporter.scrape();
        let ok = m.leader(SCOPE).is_some()
            && m.get("pgha_cluster_members_running", &[("scope", SCOPE)]) == Some(3.0)
            && m.get("pgha_etcd_cluster_members_healthy", &[("scope", SCOPE)]) == Some(3.0)
            && m.get("pgha_source_up", &[("scope", SCOPE), ("source", "haproxy")]) == Some(1.0)
            && m.members_where(
                "pgha_haproxy_server_status",
                &[("status", "up"), ("scope", SCOPE), ("route", "replicas")],
            )
            .len()
                == 2;
        ok.then_some(())
    });
}

fn healthy(exporter: &Exporter) {
    let m = wait_until("leader, 3 running members, 2 replicas routed", Duration::from_secs(30), || {
        let m = exporter.scrape();
        (m.leader(SCOPE).is_some()
            && m.get("pgha_cluster_members_running", &[("scope", SCOPE)]) == Some(3.0)
            && m.members_where(
                "pgha_haproxy_server_status",
                &[("status", "up"), ("scope", SCOPE), ("route", "replicas")],
            )
            .len()
                == 2)
            .then_some(m)
    });
    let leader = m.leader(SCOPE).unwrap();
    assert_eq!(Some(leader.clone()), patronictl_leader(), "our leader is the one patronictl names");
    assert_eq!(m.get("pgha_cluster_primaries", &[("scope", SCOPE)]), Some(1.0));
    assert_eq!(m.get("pgha_cluster_members", &[("scope", SCOPE)]), Some(3.0));

    let replicas = m.members_where("pgha_patroni_member_role", &[("scope", SCOPE), ("role", "replica")]);
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    for r in &replicas {
        assert_ne!(r, &leader);
        let lag = m.get("pgha_patroni_member_replication_lag_bytes", &[("scope", SCOPE), ("member", r)]);
        assert!(lag.is_some_and(|l| l >= 0.0), "lag of {r}: {lag:?}");
        assert_eq!(
            m.get("pgha_patroni_member_state", &[("scope", SCOPE), ("member", r), ("state", "running")]),
            Some(1.0)
        );
    }
    assert_eq!(m.get("pgha_patroni_member_replication_lag_bytes", &[("scope", SCOPE), ("member", &leader)]), None);

    assert_eq!(m.get("pgha_etcd_cluster_members", &[("scope", SCOPE)]), Some(3.0));
    assert_eq!(m.get("pgha_etcd_cluster_members_healthy", &[("scope", SCOPE)]), Some(3.0));
    assert_eq!(m.get("pgha_etcd_quorum", &[("scope", SCOPE)]), Some(1.0));
    let etcd_leaders =
        m.find("pgha_etcd_member_is_leader", &[("scope", SCOPE)]).into_iter().filter(|s| s.value == 1.0).count();
    assert_eq!(etcd_leaders, 1);
    assert_eq!(m.members_where("pgha_patroni_leader_key_info", &[("scope", SCOPE)]), vec![leader.clone()]);
    let ttl = m.get("pgha_patroni_leader_key_ttl_seconds", &[("scope", SCOPE)]).expect("lease ttl");
    assert!(ttl > 0.0 && ttl <= 10.0, "ttl {ttl}");

    assert_eq!(
        m.members_where("pgha_haproxy_server_status", &[("status", "up"), ("scope", SCOPE), ("route", "primary")]),
        vec![leader.clone()],
        "the primary port routes to the leader only"
    );
    assert_eq!(
        m.members_where("pgha_haproxy_server_status", &[("status", "up"), ("scope", SCOPE), ("route", "replicas")]),
        replicas
    );
    for source in ["patroni", "etcd", "haproxy"] {
        for s in m.find("pgha_source_up", &[("scope", SCOPE), ("source", source)]) {
            assert_eq!(s.value, 1.0, "{:?}", s.labels);
        }
        let age = m.get("pgha_source_snapshot_age_seconds", &[("scope", SCOPE), ("source", source)]).unwrap();
        assert!(age < 2.0, "{source} snapshot is {age}s old");
    }
    assert!(m.get("process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
}

/// Without etcd, one Patroni URL is enough to find every member and their addresses.
fn discovery_from_one_patroni_url() {
    let log = std::env::temp_dir().join(format!("pgha-it-rest-only-{}.log", std::process::id()));
    let rest_only = Exporter::start(
        &format!("clusters:\n  - scope: {SCOPE}\n    patroni:\n      discovery_urls: [\"http://127.0.0.22:18008\"]\n"),
        &log,
    );
    let m = wait_until("all members found from one Patroni URL", Duration::from_secs(10), || {
        let m = rest_only.scrape();
        (m.find("pgha_patroni_member_up", &[("scope", SCOPE)]).iter().filter(|s| s.value == 1.0).count() == 3)
            .then_some(m)
    });
    assert_eq!(m.leader(SCOPE), patronictl_leader());
    let addresses: Vec<String> =
        m.find("pgha_patroni_member_info", &[("scope", SCOPE)]).iter().map(|s| s.labels["postgres"].clone()).collect();
    assert_eq!(addresses, ["127.0.0.21:15432", "127.0.0.22:15432", "127.0.0.23:15432"]);
}

fn second_cluster_is_down_without_disturbing_the_first(exporter: &Exporter) {
    let m = exporter.scrape();
    let ghost = m.find("pgha_source_up", &[("scope", "ghost")]);
    assert_eq!(ghost.len(), 3, "patroni, etcd and haproxy targets of the ghost cluster");
    assert!(ghost.iter().all(|s| s.value == 0.0));
    let refused = m.find("pgha_source_errors_total", &[("scope", "ghost"), ("kind", "connect")]);
    assert!(refused.iter().all(|s| s.value >= 1.0), "{refused:?}");
    assert_eq!(m.get("pgha_etcd_quorum", &[("scope", "ghost")]), Some(0.0));
    assert!(m.find("pgha_source_up", &[("scope", SCOPE)]).iter().all(|s| s.value == 1.0));
}

fn replica_stopped(exporter: &Exporter) {
    let leader = exporter.scrape().leader(SCOPE).unwrap();
    let replica = exporter
        .scrape()
        .members_where("pgha_patroni_member_role", &[("scope", SCOPE), ("role", "replica")])
        .pop()
        .unwrap();
    lab(&["stop", &replica]);
    wait_until("the stopped replica is reported down", Duration::from_secs(5), || {
        (exporter.scrape().get("pgha_patroni_member_up", &[("scope", SCOPE), ("member", &replica)]) == Some(0.0))
            .then_some(())
    });
    wait_until("HAProxy drops it from the replicas backend", Duration::from_secs(10), || {
        let m = exporter.scrape();
        (m.get(
            "pgha_haproxy_server_status",
            &[("status", "up"), ("scope", SCOPE), ("route", "replicas"), ("member", &replica)],
        ) == Some(0.0))
        .then_some(())
    });
    // Its member key expires about ttl (10 s) after it stopped; it must still be reported.
    let m = wait_until("its etcd key expired", Duration::from_secs(30), || {
        let m = exporter.scrape();
        (m.get("pgha_patroni_member_discovered", &[("scope", SCOPE), ("member", &replica)]) == Some(0.0)).then_some(m)
    });
    assert_eq!(
        m.get("pgha_patroni_member_up", &[("scope", SCOPE), ("member", &replica)]),
        Some(0.0),
        "still reported, as down"
    );
    assert_eq!(m.get("pgha_cluster_members", &[("scope", SCOPE)]), Some(3.0));
    assert_eq!(m.get("pgha_cluster_members_running", &[("scope", SCOPE)]), Some(2.0));
    assert_eq!(m.leader(SCOPE), Some(leader), "leader unchanged");
}

fn leader_stopped(exporter: &Exporter) {
    let m = exporter.scrape();
    let old = m.leader(SCOPE).unwrap();
    let timeline = m.get("pgha_cluster_timeline", &[("scope", SCOPE)]).unwrap();
    let stopped_at = Instant::now();
    lab(&["stop", &old]);
    let new = wait_until("a new leader", Duration::from_secs(15).saturating_sub(stopped_at.elapsed()), || {
        exporter.scrape().leader(SCOPE).filter(|l| *l != old)
    });
    eprintln!("new leader {new} {:.1}s after the stop", stopped_at.elapsed().as_secs_f64());
    let m = exporter.scrape();
    assert!(m.get("pgha_cluster_timeline", &[("scope", SCOPE)]).unwrap() > timeline, "timeline incremented");
    assert_eq!(m.get("pgha_patroni_member_up", &[("scope", SCOPE), ("member", &old)]), Some(0.0));
    wait_until("the primary port routes to the new leader", Duration::from_secs(5), || {
        (exporter
            .scrape()
            .members_where("pgha_haproxy_server_status", &[("status", "up"), ("scope", SCOPE), ("route", "primary")])
            == vec![new.clone()])
        .then_some(())
    });
}

fn etcd_quorum_lost(exporter: &Exporter) {
    let old = exporter.scrape().leader(SCOPE).unwrap();
    lab(&["stop", "etcd1", "etcd2"]);
    let m = wait_until("quorum reported lost", Duration::from_secs(10), || {
        let m = exporter.scrape();
        (m.get("pgha_etcd_quorum", &[("scope", SCOPE)]) == Some(0.0)).then_some(m)
    });
    assert_eq!(m.get("pgha_etcd_cluster_members", &[("scope", SCOPE)]), Some(3.0), "stopped members still count");
    assert_eq!(
        m.get("pgha_source_up", &[("scope", SCOPE), ("source", "etcd"), ("target", "http://127.0.0.11:12379")]),
        Some(0.0)
    );
    // The survivor notices after its election timeout (1 s in the lab).
    let survivor = [("scope", SCOPE), ("etcd_endpoint", "http://127.0.0.13:12379")];
    let m = wait_until("the survivor reports no leader", Duration::from_secs(5), || {
        let m = exporter.scrape();
        (m.get("pgha_etcd_member_has_leader", &survivor) == Some(0.0)).then_some(m)
    });
    assert_eq!(
        m.get("pgha_source_up", &[("scope", SCOPE), ("source", "etcd"), ("target", "http://127.0.0.13:12379")]),
        Some(1.0),
        "it still answers"
    );
    assert!(m.get("pgha_etcd_member_status_errors", &survivor).unwrap() >= 1.0, "etcdserver: no leader");
    // Patroni demotes the primary ~retry_timeout..ttl after losing the DCS.
    let m = wait_until("the former primary reports itself demoted", Duration::from_secs(40), || {
        let m = exporter.scrape();
        // Its own answer (it may miss a poll while Patroni restarts PostgreSQL read-only).
        let own = |role| m.get("pgha_patroni_member_role", &[("scope", SCOPE), ("member", &old), ("role", role)]);
        (m.get("pgha_patroni_member_up", &[("scope", SCOPE), ("member", &old)]) == Some(1.0)
            && own("primary") == Some(0.0)
            && own("replica") == Some(1.0))
        .then_some(m)
    });
    assert_eq!(m.leader(SCOPE), None, "no member claims primary");
    assert_eq!(m.get("pgha_cluster_primaries", &[("scope", SCOPE)]), Some(0.0));
    assert_eq!(
        m.members_where("pgha_cluster_dcs_leader_info", &[("scope", SCOPE)]),
        vec![old],
        "/cluster is stale and still names the old leader: kept apart from the truth"
    );
}

fn haproxy_stopped(exporter: &Exporter) {
    lab(&["stop", "haproxy"]);
    let m = wait_until("HAProxy source down", Duration::from_secs(5), || {
        let m = exporter.scrape();
        (m.get("pgha_source_up", &[("scope", SCOPE), ("source", "haproxy")]) == Some(0.0)).then_some(m)
    });
    assert!(m.leader(SCOPE).is_some(), "Patroni still reported");
    assert_eq!(m.get("pgha_cluster_members_running", &[("scope", SCOPE)]), Some(3.0));
    assert_eq!(m.get("pgha_etcd_quorum", &[("scope", SCOPE)]), Some(1.0), "etcd still reported");
    // A call in flight at the stop fails as `other` (the connection closed mid-answer); the
    // next ones are refused.
    wait_until("refused calls to HAProxy counted", Duration::from_secs(2), || {
        let m = exporter.scrape();
        let refused =
            m.get("pgha_source_errors_total", &[("scope", SCOPE), ("source", "haproxy"), ("kind", "connect")]);
        (refused.unwrap() >= 1.0).then_some(())
    });
}

/// Scrapes for `duration`, asserting every scrape answers in under a second.
fn scrapes_stay_fast(exporter: &Exporter, duration: Duration) {
    let until = Instant::now() + duration;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let (took, _) = exporter.timed_scrape();
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_secs(1), "a scrape took {slowest:?}");
    eprintln!("slowest scrape while a target hung: {:.1} ms", slowest.as_secs_f64() * 1e3);
}

fn paused_patroni_node(exporter: &Exporter) {
    let replica = exporter
        .scrape()
        .members_where("pgha_patroni_member_role", &[("scope", SCOPE), ("role", "replica")])
        .pop()
        .unwrap();
    let timeouts_before = exporter
        .scrape()
        .get("pgha_source_errors_total", &[("scope", SCOPE), ("target", &replica), ("kind", "timeout")])
        .unwrap();
    lab(&["pause", &replica]);
    scrapes_stay_fast(exporter, Duration::from_secs(3));
    let m = wait_until("the paused node reported down by timeout", Duration::from_secs(5), || {
        let m = exporter.scrape();
        (m.get("pgha_patroni_member_up", &[("scope", SCOPE), ("member", &replica)]) == Some(0.0)).then_some(m)
    });
    let timeouts =
        m.get("pgha_source_errors_total", &[("scope", SCOPE), ("target", &replica), ("kind", "timeout")]).unwrap();
    assert!(timeouts > timeouts_before, "counted as timeouts: {timeouts_before} -> {timeouts}");
    lab(&["resume", &replica]);
}

fn paused_etcd_member(exporter: &Exporter) {
    let endpoint = "http://127.0.0.13:12379";
    lab(&["pause", "etcd3"]);
    scrapes_stay_fast(exporter, Duration::from_secs(3));
    let m = wait_until("the paused etcd member reported down", Duration::from_secs(5), || {
        let m = exporter.scrape();
        (m.get("pgha_source_up", &[("scope", SCOPE), ("source", "etcd"), ("target", endpoint)]) == Some(0.0))
            .then_some(m)
    });
    assert!(
        m.get("pgha_source_errors_total", &[("scope", SCOPE), ("target", endpoint), ("kind", "timeout")]).unwrap()
            >= 1.0
    );
    // If the paused member was the raft leader, the other two elect one first (election
    // timeout 1 s, more on a loaded machine): then two of three hold quorum.
    let started = Instant::now();
    wait_until("two of three still hold quorum", Duration::from_secs(10), || {
        (exporter.scrape().get("pgha_etcd_quorum", &[("scope", SCOPE)]) == Some(1.0)).then_some(())
    });
    eprintln!("quorum reported {:.1}s after the member was seen down", started.elapsed().as_secs_f64());
    lab(&["resume", "etcd3"]);
}
