//! The generator spread over threads and processes never changes what is counted: n2's
//! iterations over 2 processes x 2 threads count every delivery exactly, shootout's steps are
//! decided from the merged samples of 2 threads, broadcast subscribers in every process end
//! together on the publisher's final count with no loss, and every report says which side
//! limited the run (`bound`).
//!
//! The servers are the small ones of `common`; one delays every broadcast, so a subscriber that
//! gave up on a quiet spell would miss the last messages.

mod common;

use std::time::{Duration, Instant};

use common::{num, run_load, start_test_server, Behaviour};

#[test]
fn n2_over_two_processes_and_two_threads_counts_every_delivery() {
    let addr = start_test_server(Behaviour::Broadcast);
    let url = format!("ws://{addr}/");
    // 12 clients, 60 messages: exactly 5 iterations of 12 x 12 deliveries.
    let args = ["n2", "--url", &url, "--conns", "12", "--messages", "60", "--duration", "20s"];
    let (r, table) = run_load(&[&args[..], &["--processes", "2", "--threads", "2"]].concat());
    assert_eq!((num(&r, &["processes"]), num(&r, &["threads"])), (2, 2), "{table}");
    assert_eq!(num(&r, &["connections", "opened"]), 12, "{table}");
    assert_eq!(num(&r, &["counters", "iterations"]), 5, "{table}");
    assert_eq!(num(&r, &["counters", "sent"]), 60, "{table}");
    assert_eq!(num(&r, &["counters", "received"]), 5 * 12 * 12, "{table}");
    assert_eq!(num(&r, &["latency_us", "count"]), 5, "one iteration time each:\n{table}");
    assert!(r["notes"].as_array().unwrap().iter().all(|n| !n.as_str().unwrap().contains("stalled")), "{table}");
}

#[test]
fn n2_over_processes_runs_for_its_duration() {
    let addr = start_test_server(Behaviour::Broadcast);
    let url = format!("ws://{addr}/");
    let (r, table) =
        run_load(&["n2", "--url", &url, "--conns", "6", "--duration", "500ms", "--processes", "2", "--threads", "2"]);
    let iterations = num(&r, &["counters", "iterations"]);
    assert!(iterations >= 2, "{table}");
    // The run ends between iterations: every one sent is complete.
    assert_eq!(num(&r, &["counters", "sent"]), iterations * 6, "{table}");
    assert_eq!(num(&r, &["counters", "received"]), iterations * 36, "{table}");
}

#[test]
fn shootout_over_two_threads_decides_each_step_from_both() {
    let addr = start_test_server(Behaviour::Shootout);
    let url = format!("ws://{addr}/");
    let (r, table) = run_load(&[
        "shootout",
        "--url",
        &url,
        "--step",
        "4",
        "--conns",
        "12",
        "--sample",
        "10",
        "--concurrent",
        "4",
        "--limit-ms",
        "5000",
        "--duration",
        "30s",
        "--threads",
        "2",
    ]);
    let steps = r["steps"].as_array().unwrap();
    let clients: Vec<u64> = steps.iter().map(|s| s["clients"].as_u64().unwrap()).collect();
    assert_eq!(clients, [4, 8, 12], "{table}");
    for s in steps {
        // Each thread timed half of the sample; the step holds both halves.
        assert_eq!(s["rtt"]["count"].as_u64(), Some(10), "{table}");
        assert!(s["deliveries"].as_u64().unwrap() > 0, "{table}");
    }
    assert_eq!(num(&r, &["max_clients"]), 12, "{table}");
    assert_eq!(num(&r, &["latency_us", "count"]), 30, "{table}");
}

#[test]
fn shootout_over_processes_stops_at_the_limit() {
    let addr = start_test_server(Behaviour::Shootout);
    let url = format!("ws://{addr}/");
    // A limit of 1 us: the first step is over it, and the run stops there.
    let (r, table) = run_load(&[
        "shootout",
        "--url",
        &url,
        "--step",
        "4",
        "--conns",
        "40",
        "--limit-ms",
        "0.001",
        "--processes",
        "2",
    ]);
    assert_eq!(r["steps"].as_array().unwrap().len(), 1, "{table}");
    assert_eq!(num(&r, &["max_clients"]), 0, "{table}");
    assert_eq!(num(&r, &["connections", "opened"]), 4, "{table}");
}

#[test]
fn broadcast_subscribers_in_every_process_end_on_the_final_count() {
    // Every message reaches every connection 800 ms after it arrived: the last deliveries come
    // long after the publisher stopped, with nothing on the wire in between.
    let addr = start_test_server(Behaviour::DelayedBroadcast(Duration::from_millis(800)));
    let url = format!("ws://{addr}/");
    let started = Instant::now();
    // 5 messages in the first 50 ms, each delivered 800 ms later: a subscriber that stopped on
    // 0.5 s of quiet after the publisher would count them lost.
    let (r, table) = run_load(&[
        "broadcast",
        "--protocol",
        "raw",
        "--url",
        &url,
        "--conns",
        "8",
        "--rate",
        "100",
        "--messages",
        "5",
        "--duration",
        "5s",
        "--drain",
        "20s",
        "--processes",
        "2",
    ]);
    let took = started.elapsed();
    let d = &r["delivery"];
    assert_eq!(num(d, &["published"]), 5, "{table}");
    assert_eq!(num(d, &["subscribers"]), 8, "{table}");
    assert_eq!(num(d, &["expected"]), 40, "{table}");
    assert_eq!(num(d, &["delivered"]), 40, "{table}");
    assert_eq!(num(d, &["lost"]), 0, "{table}");
    // Ended on the count, not at the end of the 20 s drain.
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{table}");
}

#[test]
fn broadcast_loss_is_counted_in_every_process() {
    // Messages 7 and 14 are dropped, 10 and 20 sent twice, 11 held back behind 12.
    let addr = start_test_server(Behaviour::FaultyBroadcast);
    let url = format!("ws://{addr}/");
    let (r, table) = run_load(&[
        "broadcast",
        "--protocol",
        "raw",
        "--url",
        &url,
        "--conns",
        "6",
        "--rate",
        "200",
        "--messages",
        "20",
        "--duration",
        "5s",
        "--drain",
        "1s",
        "--processes",
        "2",
        "--threads",
        "2",
    ]);
    let d = &r["delivery"];
    assert_eq!(num(d, &["subscribers"]), 6, "{table}");
    // Every subscriber, in either process, misses 7 and 14 and gets 10 and 20 twice.
    assert_eq!(num(d, &["lost"]), 12, "{table}");
    assert_eq!(num(d, &["duplicated"]), 12, "{table}");
    assert_eq!(num(d, &["delivered"]), 6 * 18, "{table}");
}

fn echo_with_verdict(extra: &[&str]) -> (serde_json::Value, String) {
    let addr = start_test_server(Behaviour::DelayedEcho(Duration::ZERO));
    let url = format!("ws://{addr}/");
    // The test server runs in this process: its CPU is ours.
    let pid = std::process::id().to_string();
    let args = ["echo", "--url", &url, "--conns", "4", "--duration", "1s", "--server-pid", &pid];
    run_load(&[&args[..], extra].concat())
}

#[test]
fn a_saturated_generator_is_named_in_the_json_and_the_table() {
    // A threshold of 0.01% that no idle generator stays under, and a server given so many
    // cores that it never reaches it.
    let (r, table) = echo_with_verdict(&["--bound-pct", "0.01", "--server-cores", "100000"]);
    assert_eq!(r["bound"]["by"], "generator", "{table}");
    assert_eq!(r["generator_bottleneck"], true, "{table}");
    assert!(r["bound"]["generator_load_pct"].as_f64().unwrap() > 0.01, "{table}");
    assert!(table.contains("generator-bound: not a server figure"), "{table}");
    assert!(table.contains("WARNING"), "{table}");
}

#[test]
fn a_saturated_server_is_named_and_the_generator_is_not_blamed() {
    // The server on a thousandth of a core: saturated by any work; the generator's threshold at
    // 100% of its capacity.
    let (r, table) = echo_with_verdict(&["--bound-pct", "100", "--server-cores", "0.001"]);
    assert_eq!(r["bound"]["by"], "server", "{table}");
    assert_eq!(r["generator_bottleneck"], false, "{table}");
    assert!(r["bound"]["server_load_pct"].as_f64().unwrap() > 100.0, "{table}");
    assert!(!table.contains("generator-bound"), "{table}");
}
