//! Resident memory per idle connection, measured on the echo example in its own process: 10,000
//! open, idle WebSocket connections must cost less than 1 KiB each (slack for the allocator; the
//! goal of 256 B and the measured figure are in BENCHMARKS.md). The same measure of the gateway
//! binary is in gateway/tests/memory.rs.

mod common;

use common::{open_upgraded, rss_bytes, start_example};

#[test]
fn ten_thousand_idle_connections_cost_under_one_kib_each() {
    let (server, addr) = start_example("echo");
    let pid = server.0.id();
    // Warm up: the first connections grow the slab and allocate the worker's read block.
    let warm = open_upgraded(addr, 100);
    let before = rss_bytes(pid);
    let conns = open_upgraded(addr, 10_000);
    let after = rss_bytes(pid);
    let per_conn = after.saturating_sub(before) / 10_000;
    eprintln!("server RSS {before} -> {after} bytes: {per_conn} B per idle connection");
    assert!(per_conn < 1024, "{per_conn} B per idle connection");
    drop((warm, conns));
}
