//! `broadcast --protocol pusher` end to end, against the small Pusher Channels server of
//! `common::pusher`: subscribers that connect, subscribe and answer pings, a publisher whose
//! signed HTTP API requests the server checks, and the same delivery accounting as the other
//! dialects.

mod common;

use std::sync::atomic::Ordering;

use common::pusher::{start_pusher_server, App};
use common::{num, run_load};

const APP: App = App { id: "3", key: "278d425bdf160c739803", secret: "7ad3773142a6692b25b8" };

fn pusher_args<'a>(url: &'a str, secret: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["broadcast", "--url", url, "--protocol", "pusher", "--app-id", APP.id];
    args.extend_from_slice(&["--app-key", APP.key, "--app-secret", secret]);
    args.extend_from_slice(extra);
    args
}

/// With one HTTP connection the events are triggered in order; with two, requests race each
/// other in the server and may be triggered out of order, but none is lost.
#[test]
fn pusher_subscribers_get_every_event_published_through_the_signed_api() {
    for http_conns in ["1", "2"] {
        let (addr, seen) = start_pusher_server(APP, false);
        let url = format!("ws://{addr}/");
        let extra =
            ["--conns", "20", "--rate", "200", "--duration", "1s", "--http-conns", http_conns, "--threads", "2"];
        let (r, table) = run_load(&pusher_args(&url, APP.secret, &extra));
        let d = &r["delivery"];
        let published = num(d, &["published"]);
        assert!((150..=201).contains(&published), "{table}");
        assert_eq!(num(&r, &["counters", "acked"]), published, "every request answered 200:\n{table}");
        assert_eq!(seen.refused.load(Ordering::Relaxed), 0, "the server accepted every signature:\n{table}");
        assert_eq!(seen.triggered.load(Ordering::Relaxed) as u64, published, "{table}");
        assert_eq!(num(d, &["subscribers"]), 20, "{table}");
        assert_eq!(num(d, &["expected"]), published * 20, "{table}");
        assert_eq!(num(d, &["delivered"]), published * 20, "{table}");
        assert_eq!(num(d, &["lost"]), 0, "{table}");
        assert_eq!(num(d, &["duplicated"]), 0, "{table}");
        if http_conns == "1" {
            assert_eq!(num(d, &["out_of_order"]), 0, "{table}");
        }
        assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
        // Corrected for coordinated omission at the rate's interval: at least one sample each.
        assert!(num(&r, &["latency_us", "count"]) >= published * 20, "{table}");
        assert_eq!(num(&r, &["co_interval_us"]), 5000, "corrected at the 200/s schedule");
        assert_eq!(seen.pongs.load(Ordering::Relaxed), 20, "each subscriber answered its ping");
        assert_eq!(num(&r, &["connections", "failed"]), 0, "{table}");
    }
}

/// A server that closes every API connection after one answer (sockudo does) gets one request
/// per connection, a new connection for the next, and loses nothing.
#[test]
fn pusher_publishes_to_a_server_that_closes_after_each_answer() {
    let (addr, seen) = start_pusher_server(APP, true);
    let url = format!("ws://{addr}/");
    let extra = ["--conns", "10", "--rate", "100", "--duration", "1s", "--http-conns", "2"];
    let (r, table) = run_load(&pusher_args(&url, APP.secret, &extra));
    let published = num(&r, &["delivery", "published"]);
    assert!((80..=101).contains(&published), "{table}");
    assert_eq!(num(&r, &["counters", "acked"]), published, "{table}");
    assert_eq!(seen.refused.load(Ordering::Relaxed), 0, "{table}");
    assert_eq!(num(&r, &["delivery", "delivered"]), published * 10, "{table}");
    assert_eq!(num(&r, &["delivery", "lost"]), 0, "{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
    // One connection per request, and the replacement of the last one.
    let api_conns = seen.api_conns.load(Ordering::Relaxed) as u64;
    assert!((published..=published + 2).contains(&api_conns), "{api_conns} API connections:\n{table}");
}

#[test]
fn pusher_publishes_with_a_wrong_secret_are_refused_and_counted() {
    let (addr, seen) = start_pusher_server(APP, false);
    let url = format!("ws://{addr}/");
    let extra = ["--conns", "5", "--messages", "20", "--duration", "5s", "--http-conns", "3"];
    let (r, table) = run_load(&pusher_args(&url, "not-the-secret", &extra));
    assert_eq!(num(&r, &["delivery", "published"]), 20, "{table}");
    assert_eq!(seen.refused.load(Ordering::Relaxed), 20, "{table}");
    assert_eq!(num(&r, &["counters", "acked"]), 0, "{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 20, "{table}");
    assert_eq!(num(&r, &["failures", "publish: HTTP 401"]), 20, "{table}");
    assert_eq!(num(&r, &["delivery", "delivered"]), 0, "{table}");
}

#[test]
fn a_pusher_server_that_refuses_the_key_fails_the_subscribers_quickly() {
    let (addr, _seen) = start_pusher_server(APP, false);
    let url = format!("ws://{addr}/");
    let args = vec!["broadcast", "--url", &url, "--protocol", "pusher", "--app-id", "3", "--app-key", "wrong"];
    let args = [&args[..], &["--app-secret", "s", "--conns", "3", "--duration", "500ms"]].concat();
    let started = std::time::Instant::now();
    let (r, table) = run_load(&args);
    assert!(started.elapsed().as_secs() < 20, "no waiting for the setup timeout:\n{table}");
    assert_eq!(num(&r, &["failures", "pusher:error 4001"]), 3, "{table}");
    assert_eq!(num(&r, &["delivery", "subscribers"]), 0, "{table}");
}
