//! A member's own `GET /patroni`: any bytes give a status or an error, never a panic.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(status) = pgha_exporter::collect::patroni::parse_status(data) {
            assert!(status.patroni_version.is_none_or(|v| v.len() <= pgha_exporter::model::text::MAX_TARGET_TEXT));
        }
    });
}
