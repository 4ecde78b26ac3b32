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
