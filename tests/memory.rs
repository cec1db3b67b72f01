//! Resident memory per idle connection, measured on the echo example in its own process: 10,000
//! open, idle WebSocket connections must cost less than 1 KiB each (slack for the allocator; the
//! goal of 256 B and the measured figure are in BENCHMARKS.md), and one with permessage-deflate
//! negotiated at most 64 B more than one without (it holds no compression state). The same measure of the gateway
//! binary is in gateway/tests/memory.rs.

mod common;

use common::{open_upgraded, open_upgraded_with, rss_bytes, start_example, start_example_with};

/// The tests here each hold 10,100 connections: one at a time, within the 20,000 descriptors a
/// process may have.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ten_thousand_idle_connections_cost_under_one_kib_each() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

/// Resident memory per idle connection of the echo example started with `args`, with each
/// upgrade carrying `extra` header lines.
fn per_idle_connection(args: &[&str], extra: &str) -> u64 {
    let (server, addr) = start_example_with("echo", args);
    let pid = server.0.id();
    let warm = open_upgraded_with(addr, 100, extra);
    let before = rss_bytes(pid);
    let conns = open_upgraded_with(addr, 10_000, extra);
    let after = rss_bytes(pid);
    drop((warm, conns));
    after.saturating_sub(before) / 10_000
}

#[test]
fn an_idle_connection_with_compression_costs_within_64_bytes_of_one_without() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let plain = per_idle_connection(&[], "");
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let compressed = per_idle_connection(&["--compression"], offer);
    eprintln!("per idle connection: {plain} B without compression, {compressed} B with it negotiated");
    assert!(compressed <= plain + 64, "{compressed} B with compression, {plain} B without");
}
