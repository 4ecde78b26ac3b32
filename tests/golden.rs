//! Golden `/metrics`: the exposition built from the readings recorded in the lab
//! (`tests/fixtures/<state>/`), compared line by line with `tests/golden/<state>.txt`.
//!
//! Lines are sorted (prometheus-client writes the series of a family in hash order), the
//! `process_*` families are dropped and values derived from the wall clock are masked. Anything
//! else that changes in the exposition shows up here as a diff.
//!
//! Regenerate after an intended change: `PGHA_UPDATE_GOLDEN=1 cargo test --test golden`, then
//! read the diff before committing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgha_exporter::collect::etcd::parse_member_key;
use pgha_exporter::collect::haproxy::{parse_stats_csv, HaproxyReading};
use pgha_exporter::collect::patroni::{parse_cluster, parse_status};
use pgha_exporter::state::{ClusterState, ErrorKind, MemberReading, Source};

const STATES: [&str; 4] = ["healthy", "leader-stopped", "etcd-quorum-lost", "haproxy-stopped"];
/// Values that depend on when the test runs, not on the readings.
const MASKED: [&str; 2] = ["pgha_source_poll_duration_seconds", "pgha_source_snapshot_age_seconds"];

fn golden_path(state: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{state}.txt"))
}

fn fixture(state: &str, file: &str) -> Option<Vec<u8>> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(state).join(file)).ok()
}

/// The exposition of one cluster whose readings are the ones recorded in `state`: members from
/// their etcd keys, each member's own `/patroni` (a member without one did not answer), the
/// first `/cluster` recorded as the DCS view, and HAProxy's stats (none: HAProxy refused).
fn exposition(state: &str) -> String {
    let cluster =
        Arc::new(ClusterState::new("demo".into(), vec![Source::Patroni, Source::Haproxy], Duration::from_secs(600)));
    let names = ["node1", "node2", "node3"];
    let found = names
        .iter()
        .map(|n| parse_member_key(n, &fixture(state, &format!("etcd-member-{n}.json")).expect("member key")).unwrap())
        .collect();
    cluster.observe_members(found, Instant::now());
    for n in names {
        let status = fixture(state, &format!("patroni-{n}.json")).map(|b| parse_status(&b).unwrap());
        let outcome = match status {
            Some(_) => Ok(()),
            None => Err((ErrorKind::Connect, "connection refused".to_string())),
        };
        cluster.record_poll(Source::Patroni, n, Duration::from_millis(3), outcome);
        cluster.write().patroni.insert(n.to_string(), MemberReading { status });
    }
    let view = names.iter().find_map(|n| fixture(state, &format!("cluster-from-{n}.json")));
    cluster.write().dcs_view = view.map(|v| parse_cluster(&v).unwrap());
    cluster.register_target(Source::Haproxy, "haproxy");
    let stats = fixture(state, "haproxy.csv").map(|b| parse_stats_csv(&String::from_utf8(b).unwrap()).unwrap());
    let outcome = match stats {
        Some(_) => Ok(()),
        None => Err((ErrorKind::Connect, "connection refused".to_string())),
    };
    cluster.record_poll(Source::Haproxy, "haproxy", Duration::from_millis(2), outcome);
    cluster.write().haproxy.insert(
        "haproxy".into(),
        HaproxyReading { stats, primary_backend: "primary".into(), replicas_backend: "replicas".into() },
    );
    cluster.finish_round(Source::Patroni);
    cluster.finish_round(Source::Haproxy);
    pgha_exporter::metrics::encode(&pgha_exporter::metrics::registry(vec![cluster])).unwrap()
}

/// Sorted lines, `process_*` dropped, wall-clock values masked.
fn normalise(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            !l.starts_with("process_") && !l.starts_with("# HELP process_") && !l.starts_with("# TYPE process_")
        })
        .map(|l| match MASKED.iter().any(|m| l.starts_with(&format!("{m}{{"))) {
            true => format!("{} <masked>", l.rsplit_once(' ').map_or(l, |(series, _)| series)),
            false => l.to_string(),
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

#[test]
fn exposition_matches_the_golden_files() {
    let update = std::env::var_os("PGHA_UPDATE_GOLDEN").is_some();
    let mut differ = Vec::new();
    for state in STATES {
        let got = normalise(&exposition(state));
        let path = golden_path(state);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (PGHA_UPDATE_GOLDEN=1 writes it)", path.display()));
        if got != want {
            let want_lines: std::collections::BTreeSet<&str> = want.lines().collect();
            let got_lines: std::collections::BTreeSet<&str> = got.lines().collect();
            let missing: Vec<&&str> = want_lines.difference(&got_lines).collect();
            let extra: Vec<&&str> = got_lines.difference(&want_lines).collect();
            differ.push(format!("{state}:\n  missing: {missing:#?}\n  unexpected: {extra:#?}"));
        }
    }
    assert!(differ.is_empty(), "exposition differs from the golden files:\n{}", differ.join("\n"));
}

#[test]
fn normalising_masks_wall_clock_values_and_sorts() {
    let text = "b 1\npgha_source_snapshot_age_seconds{scope=\"x\"} 0.25\nprocess_open_fds 9\na 2\n";
    assert_eq!(normalise(text), "a 2\nb 1\npgha_source_snapshot_age_seconds{scope=\"x\"} <masked>\n");
}
