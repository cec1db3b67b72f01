//! fanout-load end to end: each scenario against a real server, read back from `--json`.
//!
//! The echo example and the gateway binary of the main crate are built by the tests themselves
//! (`cargo build -p fanout --example echo --bin fanout`); the small servers with known delays
//! and faults live in `common`.

mod common;

use std::time::Duration;

use common::{num, run_load, start_echo, start_gateway, start_test_server, Behaviour};

#[test]
fn echo_against_the_echo_example_echoes_everything_without_errors() {
    let server = start_echo();
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let pid = server.pid().to_string();
    let (r, table) = run_load(&[
        "echo",
        "--url",
        &url,
        "--conns",
        "20",
        "--in-flight",
        "2",
        "--duration",
        "1s",
        "--server-pid",
        &pid,
    ]);
    let sent = num(&r, &["counters", "sent"]);
    let received = num(&r, &["counters", "received"]);
    assert!(received > 100, "only {received} echoes:\n{table}");
    assert_eq!(sent, received, "every message sent must come back:\n{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
    assert_eq!(num(&r, &["connections", "opened"]), 20, "{table}");
    assert_eq!(num(&r, &["connections", "failed"]), 0, "{table}");
    assert_eq!(num(&r, &["latency_us", "count"]), received);
    assert!(r["throughput"]["messages_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["server"]["cpu"]["cpu_s"].as_f64().is_some(), "server CPU read from /proc");
    assert!(table.contains("round trip: p50"), "{table}");
}

/// Messages of megabytes fill the socket buffers on both sides: the generator's writes are
/// partial and it must wait for the WRITABLE edge it registers only then.
#[test]
fn echo_of_messages_larger_than_the_socket_buffers_completes() {
    let server = start_echo();
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) = run_load(&[
        "echo",
        "--url",
        &url,
        "--conns",
        "2",
        "--payload",
        "3000000",
        "--in-flight",
        "3",
        "--messages",
        "30",
        "--duration",
        "20s",
    ]);
    assert_eq!(num(&r, &["counters", "sent"]), 30, "{table}");
    assert_eq!(num(&r, &["counters", "received"]), 30, "{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
}

#[test]
fn echo_over_processes_and_threads_merges_every_count() {
    let server = start_echo();
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) = run_load(&[
        "echo",
        "--url",
        &url,
        "--conns",
        "40",
        "--duration",
        "1s",
        "--processes",
        "2",
        "--threads",
        "2",
        "--addrs",
        "3",
    ]);
    let received = num(&r, &["counters", "received"]);
    assert_eq!(num(&r, &["connections", "opened"]), 40, "{table}");
    assert!(received > 100, "{table}");
    assert_eq!(num(&r, &["counters", "sent"]), received, "{table}");
    // The merged histogram holds every child's samples.
    assert_eq!(num(&r, &["latency_us", "count"]), received);
    assert!(r["generator"]["cpu_s"].as_f64().unwrap() > 0.0, "children's CPU summed");
    assert!(!r["series"].as_array().unwrap().is_empty());
}

#[test]
fn echo_latency_matches_a_known_server_delay() {
    let addr = start_test_server(Behaviour::DelayedEcho(Duration::from_millis(20)));
    let url = format!("ws://{addr}/");
    let (r, table) = run_load(&["echo", "--url", &url, "--conns", "2", "--duration", "600ms"]);
    let p50 = num(&r, &["latency_us", "p50"]);
    let min = num(&r, &["latency_us", "min"]);
    assert!(min >= 20_000, "no round trip can beat the server's 20 ms delay:\n{table}");
    assert!(p50 < 30_000, "the generator adds little to a 20 ms round trip:\n{table}");
    // Two connections, one in flight each, 20 ms apiece: about 50 per second each.
    let received = num(&r, &["counters", "received"]);
    assert!((40..=64).contains(&received), "{received} echoes in 0.6 s:\n{table}");
}

#[test]
fn connect_counts_upgrades_and_failures_by_reason() {
    let server = start_echo();
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) = run_load(&["connect", "--url", &url, "--conns", "300", "--duration", "2s"]);
    assert_eq!(num(&r, &["connections", "opened"]), 300, "{table}");
    assert_eq!(num(&r, &["connections", "failed"]), 0, "{table}");
    assert_eq!(num(&r, &["latency_us", "count"]), 300);
    assert!(r["throughput"]["upgrades_per_s"].as_f64().unwrap() > 0.0);

    // Nothing listens on the port of a listener we just closed: every connect is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/");
    let (r, table) = run_load(&["connect", "--url", &url, "--conns", "10", "--duration", "1s"]);
    assert_eq!(num(&r, &["connections", "failed"]), 10, "{table}");
    assert_eq!(num(&r, &["failures", "refused"]), 10, "{table}");
}

#[test]
fn broadcast_through_the_gateway_loses_nothing() {
    let server = start_gateway(&[]);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) = run_load(&[
        "broadcast",
        "--url",
        &url,
        "--conns",
        "50",
        "--duration",
        "1s",
        "--protocol",
        "fanout",
        "--via",
        "ws",
    ]);
    let d = &r["delivery"];
    let published = num(d, &["published"]);
    assert!(published > 10, "{table}");
    assert_eq!(num(d, &["subscribers"]), 50, "{table}");
    assert_eq!(num(d, &["expected"]), published * 50, "{table}");
    assert_eq!(num(d, &["delivered"]), published * 50, "{table}");
    assert_eq!(num(d, &["lost"]), 0, "{table}");
    assert_eq!(num(d, &["duplicated"]), 0, "{table}");
    assert_eq!(num(d, &["out_of_order"]), 0, "{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
    assert_eq!(num(&r, &["latency_us", "count"]), published * 50);
}

#[test]
fn broadcast_over_http_at_a_rate_is_acknowledged_and_delivered() {
    let server = start_gateway(&["--api-key", "test-key"]);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) = run_load(&[
        "broadcast",
        "--url",
        &url,
        "--conns",
        "20",
        "--duration",
        "1s",
        "--via",
        "http",
        "--api-key",
        "test-key",
        "--rate",
        "200",
    ]);
    let published = num(&r, &["delivery", "published"]);
    assert!((150..=201).contains(&published), "{table}");
    assert_eq!(num(&r, &["counters", "acked"]), published, "{table}");
    assert_eq!(num(&r, &["delivery", "lost"]), 0, "{table}");
    assert_eq!(num(&r, &["co_interval_us"]), 5000, "corrected at the 200/s schedule");
}

#[test]
fn broadcast_raw_detects_loss_duplicates_and_reordering() {
    let addr = start_test_server(Behaviour::FaultyBroadcast);
    let url = format!("ws://{addr}/");
    let (r, table) = run_load(&[
        "broadcast",
        "--url",
        &url,
        "--protocol",
        "raw",
        "--conns",
        "5",
        "--rate",
        "400",
        "--messages",
        "100",
        "--duration",
        "5s",
    ]);
    let d = &r["delivery"];
    // Of counters 1..=100: 14 dropped (n % 7), 9 doubled (n % 10, less 70), 8 held back
    // (n % 11, less 77); five subscribers (the publisher is one of them) see each fault.
    assert_eq!(num(d, &["published"]), 100, "{table}");
    assert_eq!(num(d, &["subscribers"]), 5, "{table}");
    assert_eq!(num(d, &["lost"]), 5 * 14, "{table}");
    assert_eq!(num(d, &["duplicated"]), 5 * 9, "{table}");
    assert_eq!(num(d, &["out_of_order"]), 5 * 8, "{table}");
    assert_eq!(num(d, &["delivered"]), 5 * 86, "{table}");
}

#[test]
fn n2_completes_iterations_of_n_squared_deliveries() {
    let addr = start_test_server(Behaviour::Broadcast);
    let url = format!("ws://{addr}/");
    let (r, table) = run_load(&["n2", "--url", &url, "--conns", "10", "--duration", "500ms", "--threads", "2"]);
    let iterations = num(&r, &["counters", "iterations"]);
    assert!(iterations > 5, "{table}");
    assert_eq!(num(&r, &["counters", "sent"]), iterations * 10, "{table}");
    assert_eq!(num(&r, &["counters", "received"]), iterations * 100, "{table}");
    assert_eq!(num(&r, &["latency_us", "count"]), iterations, "one time per iteration");
}

#[test]
fn idle_reports_memory_per_connection_from_the_slope() {
    let server = start_echo();
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let pid = server.pid().to_string();
    let (r, table) = run_load(&["idle", "--url", &url, "--conns", "500", "--duration", "300ms", "--server-pid", &pid]);
    assert_eq!(num(&r, &["connections", "opened"]), 500, "{table}");
    assert_eq!(num(&r, &["connections", "held"]), 500, "{table}");
    let points = r["memory"]["points"].as_array().unwrap();
    // Before connecting, after each tenth, and at the end of the hold.
    assert_eq!(points.len(), 12, "{table}");
    assert_eq!(points[5][0].as_u64(), Some(250));
    assert!(r["memory"]["bytes_per_conn"].as_f64().is_some(), "{table}");
    assert!(table.contains("B per connection"), "{table}");
}

#[test]
fn slow_subscribers_do_not_count_against_the_healthy_ones() {
    let server = start_gateway(&[]);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) =
        run_load(&["slow", "--url", &url, "--conns", "20", "--slow", "2", "--rate", "200", "--duration", "1s"]);
    let d = &r["delivery"];
    assert_eq!(num(d, &["subscribers"]), 18, "{table}");
    assert_eq!(num(d, &["lost"]), 0, "{table}");
    assert_eq!(num(d, &["slow_subscribers_closed"]) + num(d, &["slow_subscribers_open"]), 2, "{table}");
}

#[test]
fn shootout_ramps_in_steps_until_the_limit_or_the_client_cap() {
    let addr = start_test_server(Behaviour::Shootout);
    let url = format!("ws://{addr}/");
    let (r, table) =
        run_load(&["shootout", "--url", &url, "--step", "10", "--conns", "30", "--sample", "10", "--duration", "10s"]);
    let steps = r["steps"].as_array().unwrap();
    let clients: Vec<u64> = steps.iter().map(|s| s["clients"].as_u64().unwrap()).collect();
    assert_eq!(clients, vec![10, 20, 30], "{table}");
    assert_eq!(num(&r, &["max_clients"]), 30, "{table}");
    assert!(steps.iter().all(|s| s["rtt"]["count"].as_u64() == Some(10)), "{table}");
    // Every broadcast a client received is timed from its sender's send.
    let received = num(&r, &["counters", "received"]);
    assert!(received > 0, "{table}");
    assert_eq!(num(&r, &["delivery_latency_us", "count"]), received, "{table}");
    assert!(table.contains("broadcast delivery"), "{table}");
}

/// Paced, echo sends at most the rate (flat out, 10 connections to the echo example send tens of
/// thousands a second), and every message still comes back.
#[test]
fn echo_at_a_rate_sends_no_faster_than_the_rate() {
    let server = start_echo();
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let (r, table) =
        run_load(&["echo", "--url", &url, "--conns", "10", "--rate", "500", "--duration", "1s", "--threads", "2"]);
    let sent = num(&r, &["counters", "sent"]);
    // 500 in the second, plus at most a millisecond's catch-up and the first send per thread.
    assert!((300..=505).contains(&sent), "{sent} sent at --rate 500 for 1 s:\n{table}");
    assert_eq!(num(&r, &["counters", "received"]), sent, "{table}");
}

/// Paced, n2 opens an iteration no sooner than 1/rate after the last one began.
#[test]
fn n2_at_a_rate_paces_its_iterations() {
    let addr = start_test_server(Behaviour::Broadcast);
    let url = format!("ws://{addr}/");
    let (r, table) = run_load(&["n2", "--url", &url, "--conns", "10", "--rate", "20", "--duration", "1s"]);
    let iterations = num(&r, &["counters", "iterations"]);
    assert!((10..=21).contains(&iterations), "{iterations} iterations at --rate 20 for 1 s:\n{table}");
    assert_eq!(num(&r, &["counters", "received"]), iterations * 100, "{table}");
}
