//! Patroni's member key in etcd: any value gives a member or an error, never a panic.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = pgha_exporter::collect::etcd::parse_member_key("node1", data);
    });
}
