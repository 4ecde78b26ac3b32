//! The exporter binary serving without a lab: targets that do not exist must still give a
//! ready exporter with every target's series, and signals it does not act on must not kill it.

mod support;

use std::time::Duration;

use support::{fakes, http_get, wait_until, Exporter, Metrics};

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

fn cluster(scope: &str) -> String {
    format!("  - scope: {scope}\n    patroni:\n      members: [{{name: m1, api_url: '{}'}}]\n", refused_url())
}

fn config_path_of(exporter: &Exporter) -> std::path::PathBuf {
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", exporter.child.id())).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    args[args.iter().position(|a| *a == "--config.file").unwrap() + 1].into()
}

fn scopes(exporter: &Exporter) -> Vec<String> {
    let m = exporter.scrape();
    let mut s: Vec<String> =
        m.find("pgha_source_up", &[("source", "patroni")]).iter().map(|s| s.labels["scope"].clone()).collect();
    s.sort();
    s
}

fn post(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// SIGHUP reads the configuration again: an added cluster appears, a removed one goes, an
/// invalid file changes nothing and says so in a metric; the process lives on.
#[test]
fn sighup_reloads_and_an_invalid_file_changes_nothing() {
    let path = log("sighup");
    let mut exporter = Exporter::start(&format!("clusters:\n{}{}", cluster("one"), cluster("two")), &path);
    let file = config_path_of(&exporter);
    let pid = exporter.child.id() as libc::pid_t;
    let hup = || {
        // SAFETY: a signal to the child this test started, by its pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    };
    assert_eq!(scopes(&exporter), ["one", "two"]);
    std::fs::write(&file, format!("clusters:\n{}{}", cluster("two"), cluster("three"))).unwrap();
    hup();
    wait_until("the reload is applied", Duration::from_secs(5), || {
        (scopes(&exporter) == ["three", "two"]).then_some(())
    });
    assert_eq!(exporter.scrape().get("pgha_config_last_reload_successful", &[]), Some(1.0));
    std::fs::write(&file, "clusters: []\n").unwrap();
    hup();
    wait_until("the refusal is counted", Duration::from_secs(5), || {
        (exporter.scrape().get("pgha_config_last_reload_successful", &[]) == Some(0.0)).then_some(())
    });
    assert_eq!(scopes(&exporter), ["three", "two"], "the running configuration stays");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("the new configuration is refused") && text.contains("at least one cluster"), "{text}");
    assert!(exporter.child.try_wait().unwrap().is_none(), "the exporter died of SIGHUP");
    assert_eq!(http_get(exporter.addr, "/-/healthy").unwrap().0, 200);
    assert_eq!(post(exporter.addr, "/-/reload"), 403, "no lifecycle API without --web.enable-lifecycle");
}

#[test]
fn the_lifecycle_api_reloads() {
    let exporter =
        Exporter::start_with(&format!("clusters:\n{}", cluster("one")), &log("lifecycle"), &["--web.enable-lifecycle"]);
    let file = config_path_of(&exporter);
    std::fs::write(&file, format!("clusters:\n{}{}", cluster("one"), cluster("added"))).unwrap();
    assert_eq!(post(exporter.addr, "/-/reload"), 200);
    assert_eq!(scopes(&exporter), ["added", "one"]);
    std::fs::write(&file, "clusters: [").unwrap();
    assert_eq!(post(exporter.addr, "/-/reload"), 500, "an invalid file is refused");
    assert_eq!(scopes(&exporter), ["added", "one"]);
}

/// A loopback Patroni member that answers every other `GET /patroni` and drops the rest (and
/// every other request), so the exporter has a change of state, and a line to log, on every
/// poll. Serves at most `calls` calls.
fn flapping_member(calls: usize) -> String {
    let status = fakes::fixture("patroni-node1.json");
    fakes::http_server(calls, move |path, n| (path == "/patroni" && n % 2 == 0).then(|| status.clone()))
}

#[test]
fn a_broken_stderr_stops_no_loop() {
    let config = format!(
        "clusters:\n  - scope: pipe\n    patroni:\n      interval: 100ms\n      members: [{{name: m1, api_url: '{}'}}]\n",
        flapping_member(10_000)
    );
    let (config_path, addr) = Exporter::prepare(&config);
    let mut child = std::process::Command::new(support::binary())
        .args(["--config.file", config_path.to_str().unwrap(), "--web.listen-address", &addr.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end goes away: from now on every log line fails with EPIPE.
    drop(child.stderr.take());
    let exporter = Exporter { child, addr };
    let errors = |m: &Metrics| -> f64 {
        m.find("pgha_source_errors_total", &[("scope", "pipe"), ("target", "m1")]).iter().map(|s| s.value).sum()
    };
    let before = wait_until("the exporter serves", Duration::from_secs(10), || {
        http_get(addr, "/metrics").ok().filter(|(s, _)| *s == 200).map(|(_, body)| Metrics::parse(&body))
    });
    std::thread::sleep(Duration::from_secs(3));
    let after = exporter.scrape();
    let age = after.get("pgha_source_snapshot_age_seconds", &[("scope", "pipe"), ("source", "patroni")]);
    assert!(age.is_some_and(|a| a < 1.0), "the member's readings stopped: snapshot age {age:?}");
    assert!(
        errors(&after) >= errors(&before) + 3.0,
        "the member flaps: {} -> {} errors",
        errors(&before),
        errors(&after)
    );
    assert_eq!(http_get(addr, "/-/healthy").unwrap().0, 200);
}

#[test]
fn a_malformed_cluster_view_is_logged_once() {
    let member =
        fakes::patroni_member(10_000, fakes::fixture("patroni-node1.json"), Some(b"{\"members\": \"none\"}".to_vec()));
    let config = format!(
        "clusters:\n  - scope: view\n    patroni:\n      interval: 100ms\n      members: [{{name: m1, api_url: '{member}'}}]\n"
    );
    let path = log("view");
    let exporter = Exporter::start(&config, &path);
    wait_until("the member is polled", Duration::from_secs(5), || {
        (exporter.scrape().get("pgha_patroni_member_up", &[("scope", "view"), ("member", "m1")]) == Some(1.0))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let lines = std::fs::read_to_string(&path).unwrap().lines().filter(|l| l.contains("malformed /cluster")).count();
    assert_eq!(lines, 1, "twenty rounds of a malformed /cluster");
}

#[test]
fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
    let config =
        format!("clusters:\n  - scope: fds\n    patroni: {{members: [{{name: m1, api_url: '{}'}}]}}\n", refused_url());
    let (config_path, addr) = Exporter::prepare(&config);
    let command = format!(
        "ulimit -Sn 256 && exec '{}' --config.file '{}' --web.listen-address {addr}",
        support::binary(),
        config_path.display()
    );
    let child =
        std::process::Command::new("sh").args(["-c", &command]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let exporter = Exporter { child, addr };
    let m = wait_until("the exporter serves", Duration::from_secs(10), || {
        http_get(addr, "/metrics").ok().filter(|(s, _)| *s == 200).map(|(_, body)| Metrics::parse(&body))
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", exporter.child.id())).unwrap();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    assert_eq!(open_files[3], open_files[4], "soft and hard: {open_files:?}");
    assert_ne!(open_files[3], "256");
    assert_eq!(m.get("process_max_fds", &[]).map(|v| v.to_string()), Some(open_files[4].to_string()));
}

#[test]
fn an_etcd_host_that_drops_syns_is_logged_once_per_kind() {
    let (_listener, addr, _held) = fakes::black_hole();
    let config = format!(
        "clusters:\n  - scope: syn\n    etcd: {{endpoints: ['http://{addr}'], interval: 100ms, timeout: 300ms}}\n"
    );
    let path = log("syn");
    let exporter = Exporter::start(&config, &path);
    std::thread::sleep(Duration::from_secs(4));
    let m = exporter.scrape();
    let failed: f64 =
        m.find("pgha_source_errors_total", &[("scope", "syn"), ("source", "etcd")]).iter().map(|s| s.value).sum();
    let target = format!("http://{addr}");
    let lines = std::fs::read_to_string(&path).unwrap().lines().filter(|l| l.contains(&target)).count();
    assert!(failed >= 5.0, "the endpoint was called again and again: {failed} failures");
    assert!((1..=2).contains(&lines), "{lines} lines for {failed} failures");
}

/// `/metrics` without an Accept header is the text format, and `promtool check metrics` finds
/// nothing to say about it: three members and an HAProxy serving the healthy lab's recordings.
#[test]
#[ignore = "needs promtool (Debian: prometheus): run compose/local/test"]
fn the_text_format_passes_promtool_check_metrics() {
    use std::io::Write;
    let cluster = fakes::fixture("cluster-from-node1.json");
    let members: Vec<String> = (1..=3)
        .map(|i| {
            let status = fakes::fixture(&format!("patroni-node{i}.json"));
            let url = fakes::patroni_member(100_000, status, Some(cluster.clone()));
            format!("{{name: node{i}, api_url: '{url}', postgres: '127.0.0.2{i}:15432'}}")
        })
        .collect();
    let csv = fakes::fixture("haproxy.csv");
    let haproxy = fakes::http_server(100_000, move |path, _| (path == "/;csv").then(|| csv.clone()));
    let config = format!(
        "clusters:\n  - scope: demo\n    patroni: {{members: [{}]}}\n    haproxy: [{{stats_url: '{haproxy}/;csv'}}]\n",
        members.join(", ")
    );
    let exporter = Exporter::start(&config, &log("promtool"));
    let (_, body) = wait_until("members and HAProxy read", Duration::from_secs(10), || {
        let (status, body) = http_get(exporter.addr, "/metrics").ok()?;
        let m = Metrics::parse(&body);
        (status == 200 && m.leader("demo").is_some() && m.get("pgha_source_up", &[("source", "haproxy")]) == Some(1.0))
            .then_some((status, body))
    });
    assert!(!body.contains("# EOF") && body.contains("# TYPE pgha_build_info gauge"), "the text format");
    let mut promtool = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(p) => p,
        Err(e) => panic!("promtool is missing ({e}): install Debian's prometheus"),
    };
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}
