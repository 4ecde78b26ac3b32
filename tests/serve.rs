//! The exporter binary serving without a lab: targets that do not exist must still give a
//! ready exporter with every target's series, and signals it does not act on must not kill it.

mod support;

use std::time::Duration;

use support::{http_get, wait_until, Exporter, Metrics};

fn log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pgha-serve-{name}-{}.log", std::process::id()))
}

/// A loopback URL nothing listens on (port 1: a port picked free now could be handed by the
/// kernel to an exporter started next).
fn refused_url() -> String {
    "http://127.0.0.1:1".to_string()
}

#[test]
fn an_unreachable_discovery_url_is_a_target_and_does_not_hold_readiness() {
    let url = refused_url();
    let config = format!("clusters:\n  - scope: ghost\n    patroni:\n      discovery_urls: ['{url}']\n");
    // `start` waits (bounded) for /-/ready.
    let exporter = Exporter::start(&config, &log("discovery"));
    let m: Metrics = wait_until("the discovery target's series", Duration::from_secs(5), || {
        let m = exporter.scrape();
        m.get("pgha_source_errors_total", &[("scope", "ghost"), ("target", &url), ("kind", "connect")])
            .is_some_and(|n| n >= 1.0)
            .then_some(m)
    });
    assert_eq!(m.get("pgha_source_up", &[("scope", "ghost"), ("source", "patroni"), ("target", &url)]), Some(0.0));
    assert_eq!(
        m.get("pgha_source_errors_total", &[("scope", "ghost"), ("target", &url), ("kind", "timeout")]),
        Some(0.0)
    );
}

#[test]
fn sighup_is_logged_and_ignored() {
    let config = format!(
        "clusters:\n  - scope: lone\n    patroni:\n      members: [{{name: m1, api_url: '{}'}}]\n",
        refused_url()
    );
    let path = log("sighup");
    let mut exporter = Exporter::start(&config, &path);
    let pid = exporter.child.id() as libc::pid_t;
    // SAFETY: a signal to the child this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_until("the SIGHUP is logged", Duration::from_secs(5), || {
        std::fs::read_to_string(&path).unwrap_or_default().contains("SIGHUP").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(exporter.child.try_wait().unwrap().is_none(), "the exporter died of SIGHUP");
    assert_eq!(http_get(exporter.addr, "/-/healthy").unwrap().0, 200);
}
