//! The exporter binary against hostile and broken targets and clients on loopback: each test is
//! one finding of an adversarial run, and asserts its bound (the scrape answers within its
//! budget and stays small, memory stays under a ceiling, the log stays short, targets keep their
//! truth). Ceilings are several times what this build uses, and far below what the findings
//! measured (`PGHA_EXPORTER_BIN=<older build>` runs these tests against another binary).

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::fakes::{self, Proc};
use support::{http_get, wait_until, Exporter, Metrics};

fn log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pgha-hostile-{name}-{}.log", std::process::id()))
}

fn member_config(scope: &str, url: &str) -> String {
    format!("clusters:\n  - scope: {scope}\n    patroni:\n      members: [{{name: m1, api_url: '{url}'}}]\n")
}

/// Scrapes `count` times, `every` apart: the slowest scrape, the largest body and the last one.
fn scrapes(exporter: &Exporter, count: usize, every: Duration) -> (Duration, usize, Metrics) {
    let (mut slowest, mut largest, mut last) = (Duration::ZERO, 0, None);
    for _ in 0..count {
        let started = Instant::now();
        let (status, body) = http_get(exporter.addr, "/metrics").expect("a scrape is answered");
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
        largest = largest.max(body.len());
        last = Some(Metrics::parse(&body));
        std::thread::sleep(every);
    }
    (slowest, largest, last.unwrap())
}

fn member_up(m: &Metrics, scope: &str) -> Option<f64> {
    m.get("pgha_patroni_member_up", &[("scope", scope), ("member", "m1")])
}

fn errors(m: &Metrics, scope: &str) -> f64 {
    m.find("pgha_source_errors_total", &[("scope", scope)]).iter().map(|s| s.value).sum()
}

/// More idle clients than the open-file limit allows (systemd's default soft limit, 1024, here
/// as the hard limit too): those beyond the connection cap are closed at once and the others
/// after the header-read timeout, so targets never lack a file descriptor and scrapes answer
/// again once the timeout has passed.
#[test]
fn idle_clients_beyond_the_open_file_limit_cost_no_scrape_and_no_target() {
    fakes::raise_open_files();
    let url = fakes::patroni_member(1_000_000, fakes::fixture("patroni-node1.json"), None);
    let path = log("idle");
    let exporter = Exporter::start_limited(&member_config("idle", &url), &path, &[], Some(1024));
    let before = wait_until("the member is up", Duration::from_secs(10), || {
        Some(exporter.scrape()).filter(|m| member_up(m, "idle") == Some(1.0))
    });
    let idle: Vec<TcpStream> =
        (0..1100).filter_map(|_| TcpStream::connect_timeout(&exporter.addr, Duration::from_millis(500)).ok()).collect();
    // Those within the connection cap hold their slot until the header-read timeout (10 s).
    std::thread::sleep(Duration::from_secs(11));
    let (slowest, _, after) = scrapes(&exporter, 10, Duration::from_millis(300));
    let proc = Proc(exporter.child.id());
    eprintln!(
        "{} idle clients connected; slowest scrape {slowest:?}; {} fds; peak RSS {:.1} MiB",
        idle.len(),
        proc.fds(),
        proc.peak_rss_mib()
    );
    assert!(idle.len() >= 1000, "only {} clients could connect", idle.len());
    assert!(slowest < Duration::from_secs(2), "slowest scrape {slowest:?}");
    assert_eq!(member_up(&after, "idle"), Some(1.0), "the member is still seen up");
    assert_eq!(errors(&after, "idle"), errors(&before, "idle"), "no call to the member failed");
    assert!(proc.fds() < 600, "{} file descriptors held", proc.fds());
    assert!(proc.peak_rss_mib() < 60.0, "peak RSS {:.1} MiB", proc.peak_rss_mib());
}

/// Clients that send part of a request's headers and then nothing: closed once the header-read
/// timeout (10 s by default) passes, or at once beyond the connection cap.
#[test]
fn half_open_clients_are_closed_within_the_header_timeout() {
    use std::io::{Read, Write};
    fakes::raise_open_files();
    let exporter = Exporter::start(&member_config("half", "http://127.0.0.1:1"), &log("half"));
    let mut clients: Vec<TcpStream> =
        (0..3000).filter_map(|_| TcpStream::connect_timeout(&exporter.addr, Duration::from_millis(500)).ok()).collect();
    for c in &mut clients {
        let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    }
    let started = Instant::now();
    let mut closed = 0;
    for c in &mut clients {
        let left = Duration::from_secs(14).saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        c.set_read_timeout(Some(left)).unwrap();
        let timed_out =
            |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
        closed += usize::from(!c.read(&mut [0u8; 256]).is_err_and(|e| timed_out(&e)));
    }
    let (slowest, _, _) = scrapes(&exporter, 3, Duration::from_millis(100));
    let proc = Proc(exporter.child.id());
    eprintln!(
        "{closed}/{} half-open clients closed in {:?}; slowest scrape {slowest:?}; peak RSS {:.1} MiB",
        clients.len(),
        started.elapsed(),
        proc.peak_rss_mib()
    );
    assert!(clients.len() >= 2000, "only {} clients could connect", clients.len());
    assert_eq!(closed, clients.len(), "every half-open client is closed within 14 s");
    assert!(slowest < Duration::from_secs(2), "slowest scrape {slowest:?}");
    assert!(proc.peak_rss_mib() < 60.0, "peak RSS {:.1} MiB", proc.peak_rss_mib());
}

/// One line of HAProxy's stats CSV with only the columns the exporter reads filled in.
fn csv_line(header: &str, backend: &str, server: &str, status: &str, ty: &str) -> String {
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let mut fields = vec![""; at("type") + 1];
    (fields[0], fields[1], fields[at("status")], fields[at("type")]) = (backend, server, status, ty);
    fields.join(",") + "\n"
}

/// The healthy lab's stats page with `extra` lines after its own.
fn stats_page(extra: &str) -> Vec<u8> {
    let page = String::from_utf8(fakes::fixture("haproxy.csv")).unwrap();
    (page + extra).into_bytes()
}

fn haproxy_config(scope: &str, url: &str, interval: &str) -> String {
    format!(
        "clusters:\n  - scope: {scope}\n    patroni: {{members: [{{name: node1, api_url: 'http://127.0.0.1:1'}}]}}\n    \
         haproxy: [{{name: h, stats_url: '{url}/;csv', interval: {interval}}}]\n"
    )
}

/// An HAProxy with 40,000 servers in a backend the cluster does not use (1.8 MB of CSV, under
/// the body cap), read five times a second: only the configured backends are exported, and the
/// page is indexed, not compared pairwise.
#[test]
fn forty_thousand_haproxy_servers_cost_little() {
    let page = stats_page("");
    let header = String::from_utf8_lossy(&page).lines().next().unwrap().to_string();
    let mut bulk = String::new();
    for i in 0..40_000 {
        bulk.push_str(&csv_line(&header, "bulk", &format!("s{i}"), "UP", "2"));
    }
    bulk.push_str(&csv_line(&header, "bulk", "BACKEND", "UP", "1"));
    let page = stats_page(&bulk);
    let size = page.len();
    let url = fakes::http_server(1_000_000, move |path, _| (path == "/;csv").then(|| page.clone()));
    let exporter = Exporter::start(&haproxy_config("bulk", &url, "200ms"), &log("bulk"));
    let proc = Proc(exporter.child.id());
    wait_until("HAProxy is read", Duration::from_secs(10), || {
        exporter
            .scrape()
            .get("pgha_source_up", &[("scope", "bulk"), ("source", "haproxy"), ("target", "h")])
            .filter(|up| *up == 1.0)
    });
    let cpu_before = proc.cpu_seconds();
    std::thread::sleep(Duration::from_secs(5));
    let cpu = (proc.cpu_seconds() - cpu_before) / 5.0;
    let (slowest, largest, m) = scrapes(&exporter, 10, Duration::from_millis(200));
    eprintln!(
        "{size} bytes of CSV: /metrics {largest} bytes, slowest scrape {slowest:?}, CPU {:.0}% of a core \
         with no scrape, peak RSS {:.1} MiB",
        cpu * 100.0,
        proc.peak_rss_mib()
    );
    assert!(size > 1_000_000);
    let up = |backend: &str, server: &str| {
        m.get(
            "pgha_haproxy_server_status",
            &[("status", "up"), ("scope", "bulk"), ("backend", backend), ("server", server)],
        )
    };
    assert_eq!((up("primary", "node1"), up("primary", "node2")), (Some(1.0), Some(0.0)), "routes are read");
    assert_eq!(up("bulk", "s1"), None, "a backend outside the cluster is not exported");
    assert!(largest < 64 * 1024, "/metrics is {largest} bytes");
    assert!(slowest < Duration::from_millis(500), "slowest scrape {slowest:?}");
    assert!(cpu < 0.25, "{:.0}% of a core with no scrape", cpu * 100.0);
    assert!(proc.peak_rss_mib() < 60.0, "peak RSS {:.1} MiB", proc.peak_rss_mib());
}

/// A server name of 512 KiB in the primary backend, going up and down on every read (ten times
/// a second): its events, labels and log lines hold a bounded prefix of it.
#[test]
fn a_flapping_half_megabyte_server_name_costs_bounded_memory_and_log() {
    let page = stats_page("");
    let header = String::from_utf8_lossy(&page).lines().next().unwrap().to_string();
    let name = "n".repeat(512 * 1024);
    let (up, down) = (
        stats_page(&csv_line(&header, "primary", &name, "UP", "2")),
        stats_page(&csv_line(&header, "primary", &name, "DOWN", "2")),
    );
    let url = fakes::http_server(1_000_000, move |path, n| {
        (path == "/;csv").then(|| if n % 2 == 0 { up.clone() } else { down.clone() })
    });
    let path = log("flap");
    let exporter = Exporter::start(&haproxy_config("flap", &url, "100ms"), &path);
    let proc = Proc(exporter.child.id());
    std::thread::sleep(Duration::from_secs(2));
    let rss_at_2s = proc.rss_mib();
    std::thread::sleep(Duration::from_secs(6));
    let (slowest, largest, m) = scrapes(&exporter, 3, Duration::from_millis(100));
    let (_, events) = http_get(exporter.addr, "/api/v1/events?limit=1000").unwrap();
    let transitions: f64 =
        m.find("pgha_haproxy_server_transitions_total", &[("scope", "flap")]).iter().map(|s| s.value).sum();
    let log_bytes = std::fs::metadata(&path).unwrap().len();
    let grew = proc.rss_mib() - rss_at_2s;
    eprintln!(
        "{transitions} transitions counted; /metrics {largest} bytes, events {} bytes, log {log_bytes} bytes; \
         RSS +{grew:.1} MiB in 6 s, peak {:.1} MiB; slowest scrape {slowest:?}",
        events.len(),
        proc.peak_rss_mib()
    );
    assert!(transitions >= 20.0, "the server flapped: {transitions} transitions");
    assert!(largest < 64 * 1024, "/metrics is {largest} bytes");
    assert!(events.len() < 2 << 20, "events are {} bytes", events.len());
    assert!(log_bytes < 256 * 1024, "the log is {log_bytes} bytes");
    assert!(grew < 8.0, "RSS grew {grew:.1} MiB in 6 s");
    assert!(proc.peak_rss_mib() < 60.0, "peak RSS {:.1} MiB", proc.peak_rss_mib());
}

/// A member whose status holds a Patroni version of 3 MB (under the 4 MiB body cap).
#[test]
fn a_three_megabyte_version_string_is_cut() {
    let status = String::from_utf8(fakes::fixture("patroni-node1.json")).unwrap();
    let huge = status.replace("\"version\": \"3.0.2\"", &format!("\"version\": \"{}\"", "3".repeat(3 << 20)));
    assert!(huge.len() > 3 << 20);
    let url = fakes::patroni_member(1_000_000, huge.into_bytes(), None);
    let exporter = Exporter::start(&member_config("version", &url), &log("version"));
    let m = wait_until("the member is up", Duration::from_secs(10), || {
        Some(exporter.scrape()).filter(|m| member_up(m, "version") == Some(1.0))
    });
    let (slowest, largest, _) = scrapes(&exporter, 5, Duration::from_millis(200));
    let info = m.find("pgha_patroni_member_info", &[("scope", "version")]);
    let version = info.first().and_then(|s| s.labels.get("version")).cloned().unwrap_or_default();
    let proc = Proc(exporter.child.id());
    eprintln!(
        "/metrics {largest} bytes, version label {} bytes, slowest scrape {slowest:?}, peak RSS {:.1} MiB",
        version.len(),
        proc.peak_rss_mib()
    );
    assert!(version.starts_with("333"), "the version is kept in part: {version:.20}");
    assert!(version.len() <= 256, "the version label is {} bytes", version.len());
    assert!(largest < 64 * 1024, "/metrics is {largest} bytes");
    assert!(proc.peak_rss_mib() < 80.0, "peak RSS {:.1} MiB", proc.peak_rss_mib());
}

/// A member whose `/cluster` lists 2000 members: discovery watches `max_members` (64) of them
/// and counts the rest as dropped, so the exporter does not open 2000 sockets a round.
#[test]
fn two_thousand_discovered_members_are_capped() {
    let members: Vec<String> = (0..2000)
        .map(|i| format!("{{\"name\": \"d{i}\", \"role\": \"replica\", \"state\": \"running\", \"api_url\": \"http://127.0.0.1:1/patroni\"}}"))
        .collect();
    let view = format!("{{\"members\": [{}]}}", members.join(", ")).into_bytes();
    let url = fakes::patroni_member(1_000_000, fakes::fixture("patroni-node1.json"), Some(view));
    let exporter = Exporter::start(&member_config("many", &url), &log("many"));
    wait_until("discovered members are watched", Duration::from_secs(10), || {
        (exporter.scrape().find("pgha_patroni_member_up", &[("scope", "many")]).len() > 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, largest, m) = scrapes(&exporter, 3, Duration::from_millis(200));
    let proc = Proc(exporter.child.id());
    let watched = m.find("pgha_patroni_member_up", &[("scope", "many")]).len();
    let dropped = m.get("pgha_discovery_members_dropped", &[("scope", "many")]).unwrap_or(0.0);
    eprintln!(
        "{watched} members watched, {dropped} dropped; {} fds; /metrics {largest} bytes; peak RSS {:.1} MiB",
        proc.fds(),
        proc.peak_rss_mib()
    );
    assert!(watched <= 65, "{watched} members watched");
    assert!(dropped >= 1900.0, "{dropped} counted as dropped");
    assert!(proc.fds() < 200, "{} file descriptors", proc.fds());
    assert!(proc.peak_rss_mib() < 60.0, "peak RSS {:.1} MiB", proc.peak_rss_mib());
}
