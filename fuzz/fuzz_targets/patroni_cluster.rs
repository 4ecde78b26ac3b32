//! `GET /cluster`: any bytes give a view or an error, never a panic; names stay bounded.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(view) = pgha_exporter::collect::patroni::parse_cluster(data) {
            for m in &view.members {
                assert!(m.name.len() <= pgha_exporter::model::text::MAX_TARGET_TEXT);
            }
            let _ = view.found_members();
        }
    });
}
