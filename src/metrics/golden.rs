//! Golden `/metrics`: the exposition built from the readings recorded in the lab
//! (`tests/fixtures/<state>/`, see `crate::testing::lab_state`), compared line by line with
//! `tests/golden/<state>.txt`.
//!
//! Lines are sorted (prometheus-client writes the series of a family in hash order), the
//! `process_*` families are dropped and values derived from the wall clock are masked. Anything
//! else that changes in the exposition shows up here as a diff.
//!
//! Regenerate after an intended change: `PGHA_UPDATE_GOLDEN=1 cargo test --lib golden`, then
//! read the diff before committing it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::testing::lab_state;

/// The recorded states, and `healthy-vip`: the healthy readings behind two HAProxy instances
/// and a virtual IP held by the first.
const STATES: [&str; 5] = ["healthy", "leader-stopped", "etcd-quorum-lost", "haproxy-stopped", "healthy-vip"];
/// Values that depend on when the test runs, not on the readings.
const MASKED: [&str; 3] = [
    "pgha_source_poll_duration_seconds",
    "pgha_source_snapshot_age_seconds",
    "pgha_config_last_reload_success_timestamp_seconds",
];

fn golden_path(state: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{state}.txt"))
}

/// The build's git revision changes with every commit.
fn mask_revision(line: &str) -> String {
    match line.split_once("revision=\"") {
        Some((head, rest)) => format!("{head}revision=\"<masked>\"{}", rest.split_once('"').map_or("", |(_, t)| t)),
        None => line.to_string(),
    }
}

/// Sorted lines, `process_*` dropped, wall-clock values masked.
fn normalise(text: &str) -> String {
    let process = |l: &str| ["process_", "# HELP process_", "# TYPE process_"].iter().any(|p| l.starts_with(p));
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !process(l))
        .map(|l| match MASKED.iter().any(|m| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} "))) {
            true => format!("{} <masked>", l.rsplit_once(' ').map_or(l, |(series, _)| series)),
            false => mask_revision(l),
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

fn exposition(state: &str) -> String {
    let cluster = match state {
        "healthy-vip" => {
            use crate::model::vip::test_round as vip_round;
            use crate::model::vip::VrrpState::{Backup, Master};
            use crate::testing::{lab_state_of, plan_behind, VIP_HAPROXY};
            let s = lab_state_of("healthy", plan_behind(VIP_HAPROXY, ""));
            s.apply_vip(vip_round(Ok("haproxy"), &[("haproxy", Some(Master)), ("haproxy2", Some(Backup))]));
            s
        }
        _ => lab_state(state, ""),
    };
    super::encode(&super::registry(crate::fleet::Fleet::fixed(vec![Arc::new(cluster)]))).unwrap()
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
            let (want, got): (BTreeSet<&str>, BTreeSet<&str>) = (want.lines().collect(), got.lines().collect());
            let missing: Vec<&&str> = want.difference(&got).collect();
            let extra: Vec<&&str> = got.difference(&want).collect();
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
