//! The command line: version, and check-config naming the bad field.

use std::process::Command;

fn exporter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgha-exporter"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgha-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn version_is_printed() {
    let out = exporter().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pgha-exporter {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_accepts_the_lab_config_and_names_a_bad_field() {
    let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/compose/local/pgha-exporter.yml");
    let out = exporter().env("PGHA_PROBE_PASSWORD", "x").args(["check-config", "--config.file", lab]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid, 1 cluster(s)"));

    let bad = write("bad.yml", "clusters:\n  - scope: demo\n    etcd: {endpoints: [http://e:2379]}\n    haproxy:\n      - {stats_url: 'http://h:7000/;csv', intreval: 1s}\n");
    let out = exporter().args(["check-config", "--config.file", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clusters[0].haproxy[0]") && err.contains("intreval"), "{err}");

    let missing_secret = write("secret.yml", "clusters:\n  - scope: demo\n    etcd: {endpoints: [http://e:2379]}\n    probes: {user: u, password: {env: PGHA_CLI_TEST_UNSET}, primary: 'h:5000'}\n");
    let out = exporter().args(["check-config", "--config.file", missing_secret.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clusters[0].probes.password") && err.contains("PGHA_CLI_TEST_UNSET"), "{err}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = exporter()
        .args(["--config.file", "/nonexistent/pgha.yml", "--web.listen-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pgha.yml"));
}

#[test]
fn the_packaged_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/pgha-exporter.yml.example");
    let out =
        exporter().env("PGHA_PROBE_PASSWORD", "x").args(["check-config", "--config.file", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A one-shot HTTP server on loopback answering `status` to the first request.
fn answer_once(status: &str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 8\r\nConnection: close\r\n\r\nanswered");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = s.read(&mut [0; 4096]);
            let _ = s.write_all(response.as_bytes());
        }
    });
    port
}

fn healthcheck(url: &str) -> (bool, String) {
    let out = exporter().args(["healthcheck", "--timeout", "2s", "--url", url]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_string())
}

#[test]
fn healthcheck_passes_on_200_and_401_and_fails_naming_why() {
    let ok = answer_once("200 OK");
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{ok}/-/healthy")), (true, "healthy: 200 answered".into()));
    let auth = answer_once("401 Unauthorized");
    let (passed, text) = healthcheck(&format!("http://127.0.0.1:{auth}/-/healthy"));
    assert!(passed && text.contains("401"), "{text}");
    let stale = answer_once("503 Service Unavailable");
    let url = format!("http://127.0.0.1:{stale}/-/healthy");
    assert_eq!(healthcheck(&url), (false, format!("unhealthy: {url}: HTTP status 503")));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (passed, text) = healthcheck(&format!("http://127.0.0.1:{closed}/-/healthy"));
    assert!(!passed && text.contains("cannot connect"), "{text}");
}
