//! Several servers in one run: `--url` repeated (subscribers in turn over the URLs),
//! `--publish-url` (the publisher on a server of its own) and `--server-pid` repeated.
//!
//! Two gateways that are not a cluster make every step visible: the publisher reaches only the
//! subscribers on its own gateway, so exactly those on the other one lose everything.

mod common;

use common::{num, run_load, start_gateway};

#[test]
fn subscribers_take_the_urls_in_turn_and_the_publisher_its_own() {
    let (a, b) = (start_gateway(&["--api-key", "k"]), start_gateway(&["--api-key", "k"]));
    let url_a = format!("ws://127.0.0.1:{}/", a.port);
    let url_b = format!("ws://127.0.0.1:{}/", b.port);
    let publish = format!("http://127.0.0.1:{}/", b.port);
    let (pid_a, pid_b) = (a.pid().to_string(), b.pid().to_string());
    let (r, table) = run_load(&[
        "broadcast",
        "--url",
        &url_a,
        "--url",
        &url_b,
        "--publish-url",
        &publish,
        "--via",
        "http",
        "--api-key",
        "k",
        "--conns",
        "10",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--server-pid",
        &pid_a,
        "--server-pid",
        &pid_b,
    ]);
    let d = &r["delivery"];
    let published = num(d, &["published"]);
    assert!(published > 50, "{table}");
    assert_eq!(num(d, &["subscribers"]), 10, "{table}");
    // Connections 1, 3, 5, 7, 9 are on gateway B, where the publisher is.
    assert_eq!(num(d, &["delivered"]), published * 5, "{table}");
    assert_eq!(num(d, &["lost"]), published * 5, "{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
    assert_eq!(r["urls"].as_array().map(Vec::len), Some(2), "{table}");
    assert_eq!(r["publish_url"].as_str(), Some(publish.as_str()));
    let server = &r["server"];
    assert_eq!(server["pids"].as_array().map(Vec::len), Some(2), "{table}");
    let each: Vec<f64> =
        server["processes"].as_array().unwrap().iter().map(|p| p["cpu"]["cpu_s"].as_f64().unwrap()).collect();
    let sum = server["cpu"]["cpu_s"].as_f64().unwrap();
    assert!((each.iter().sum::<f64>() - sum).abs() < 0.02, "{each:?} against {sum}");
    assert!(table.contains(&format!("servers {pid_a}+{pid_b} CPU")), "{table}");
}

#[test]
fn a_publisher_over_websocket_goes_to_the_first_url_without_publish_url() {
    let (a, b) = (start_gateway(&[]), start_gateway(&[]));
    let url_a = format!("ws://127.0.0.1:{}/", a.port);
    let url_b = format!("ws://127.0.0.1:{}/", b.port);
    let (r, table) = run_load(&[
        "broadcast",
        "--url",
        &url_a,
        "--url",
        &url_b,
        "--conns",
        "4",
        "--rate",
        "200",
        "--duration",
        "500ms",
        "--watch-pid",
        &b.pid().to_string(),
    ]);
    let d = &r["delivery"];
    let published = num(d, &["published"]);
    assert!(published > 20, "{table}");
    // Connections 0 and 2 are on gateway A, with the publisher.
    assert_eq!(num(d, &["delivered"]), published * 2, "{table}");
    assert!(r.get("server").is_none(), "no --server-pid: {table}");
    assert_eq!(r["watched"][0]["pid"].as_u64(), Some(u64::from(b.pid())), "{table}");
    assert!(table.contains(&format!("watched {} CPU", b.pid())), "{table}");
}
