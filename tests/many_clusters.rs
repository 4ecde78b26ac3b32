//! A thousand clusters that cannot be reached: after the first minute's one line per target,
//! the log stays quiet (one summary line a minute, naming how many are down), and `/metrics`
//! keeps answering. Its own test binary, so its load does not disturb timing tests running
//! beside it. Takes about 75 s.

mod support;

use std::time::{Duration, Instant};

use support::{fakes, wait_until, Exporter};

const CLUSTERS: usize = 1000;

#[test]
fn a_thousand_unreachable_clusters_log_little_after_the_first_minute() {
    // Half the members refuse connections, half drop SYNs (their calls time out).
    let (_listener, black_hole, _held) = fakes::black_hole();
    let mut config = String::from("clusters:\n");
    for i in 0..CLUSTERS {
        let url = if i % 2 == 0 { "http://127.0.0.1:1".to_string() } else { format!("http://{black_hole}") };
        config.push_str(&format!(
            "  - scope: c{i}\n    patroni: {{members: [{{name: m, api_url: '{url}'}}], interval: 1s, timeout: 500ms}}\n"
        ));
    }
    let log = std::env::temp_dir().join(format!("pgha-many-{}.log", std::process::id()));
    let started = Instant::now();
    let exporter = Exporter::start(&config, &log);
    let lines = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    wait_until("a minute has passed", Duration::from_secs(90), || {
        (started.elapsed() >= Duration::from_secs(62)).then_some(())
    });
    let after_a_minute = lines();
    std::thread::sleep(Duration::from_secs(12));
    let (took, m) = exporter.timed_scrape();
    let later = lines() - after_a_minute;
    eprintln!("{after_a_minute} lines in the first minute, {later} in the next 12 s; a scrape took {took:?}");
    assert!(after_a_minute >= CLUSTERS, "each member's first failure is logged: {after_a_minute}");
    assert!(later <= 5, "{later} lines in 12 s after the first minute");
    let text = std::fs::read_to_string(&log).unwrap();
    let summaries: Vec<&str> = text.lines().filter(|l| l.contains("targets still down")).collect();
    assert_eq!(summaries.len(), 1, "one summary line in 74 s: {summaries:?}");
    assert!(summaries[0].contains(&format!("count={CLUSTERS}")), "{}", summaries[0]);
    assert_eq!(m.find("pgha_source_up", &[("source", "patroni")]).len(), CLUSTERS);
    assert!(took < Duration::from_secs(2), "a scrape of {CLUSTERS} clusters took {took:?}");
}
