//! HAProxy's stats CSV: any text gives stats or an error, never a panic; names stay bounded.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        if let Ok(stats) = pgha_exporter::collect::haproxy::parse_stats_csv(&text) {
            for s in &stats.servers {
                assert!(s.name.len() <= pgha_exporter::model::text::MAX_TARGET_TEXT);
            }
            let _ = pgha_exporter::model::haproxy::server_transitions(&stats, &stats);
        }
    });
}
