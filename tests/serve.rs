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

/// A loopback Patroni member that answers every other `GET /patroni` and drops the rest (and
/// every other request), so the exporter has a change of state, and a line to log, on every
/// poll. Serves at most `calls` calls.
fn flapping_member(calls: usize) -> String {
    fake_member(calls, true, None)
}

/// A loopback Patroni member: `GET /patroni` answers the healthy primary's recorded status
/// (every other call only, with `flap`), `GET /cluster` answers `cluster` (else the connection is
/// dropped). Serves at most `calls` calls.
fn fake_member(calls: usize, flap: bool, cluster: Option<&'static [u8]>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/healthy/patroni-node1.json")).unwrap();
    std::thread::spawn(move || {
        let mut polls = 0;
        for stream in listener.incoming().take(calls) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let answer: &[u8] = if request[..n].starts_with(b"GET /patroni ") {
                polls += 1;
                if flap && polls % 2 == 0 {
                    continue;
                }
                &body
            } else if let (true, Some(view)) = (request[..n].starts_with(b"GET /cluster "), cluster) {
                view
            } else {
                continue;
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", answer.len());
            let _ = stream.write_all(&[head.as_bytes(), answer].concat());
        }
    });
    url
}

#[test]
fn a_broken_stderr_stops_no_loop() {
    let config = format!(
        "clusters:\n  - scope: pipe\n    patroni:\n      interval: 100ms\n      members: [{{name: m1, api_url: '{}'}}]\n",
        flapping_member(10_000)
    );
    let (config_path, addr) = Exporter::prepare(&config);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgha-exporter"))
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
    let member = fake_member(10_000, false, Some(b"{\"members\": \"none\"}"));
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
        env!("CARGO_BIN_EXE_pgha-exporter"),
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

/// A loopback address whose listening socket is never accepted from and whose accept queue is
/// full: new connections get no answer to their SYN, as from a host that drops them.
fn black_hole() -> (std::net::TcpListener, std::net::SocketAddr, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain socket, bound and listened on with the libc calls; owned by the listener.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        std::net::TcpListener::from_raw_fd(fd)
    };
    let addr = listener.local_addr().unwrap();
    let held: Vec<std::net::TcpStream> =
        (0..4).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()).collect();
    (listener, addr, held)
}

#[test]
fn an_etcd_host_that_drops_syns_is_logged_once_per_kind() {
    let (_listener, addr, _held) = black_hole();
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
