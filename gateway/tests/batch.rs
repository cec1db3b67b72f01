//! Batch publish (issue 13, item 6) end to end: `POST /api/publish` with an array is answered
//! with the `seq` of each message in input order, subscribers get them in that order, and one
//! bad item (its index named) or a batch over a limit publishes nothing; in memory, and through
//! the Redis engine (one transaction; a script cache emptied under it; Redis gone: 503).

#[path = "../../tests/common/mod.rs"]
mod common;

// The cluster tests' helpers; this file uses part of them.
#[allow(dead_code)]
#[path = "cluster/clients.rs"]
mod clients;
#[allow(dead_code)]
#[path = "cluster/node.rs"]
mod node;
#[allow(dead_code)]
#[path = "cluster/redis.rs"]
mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use clients::Native;
use common::*;
use fanout_gateway::app::{self as gateway, GatewayConfig};
use node::Node;
use redis::Redis;
use serde_json::{json, Value};

fn post(addr: SocketAddr, body: &str) -> (u16, Value) {
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(addr, request.as_bytes());
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
}

/// The messages a subscriber gets next, as (channel, seq, data).
fn messages(client: &mut Native, n: usize) -> Vec<(String, u64, Value)> {
    (0..n)
        .map(|_| {
            let m = client.message();
            (m["channel"].as_str().unwrap().to_owned(), m["seq"].as_u64().unwrap(), m["data"].clone())
        })
        .collect()
}

fn triple(channel: &str, seq: u64, data: Value) -> (String, u64, Value) {
    (channel.to_owned(), seq, data)
}

/// The batch cases both engines answer alike, on a gateway at `addr` whose batch limit is 3.
fn batch_contract(addr: SocketAddr) {
    let mut a = Native::connect(addr);
    a.subscribe("a");
    let mut b = Native::connect(addr);
    b.subscribe("b");

    let batch = json!([
        {"channel": "a", "data": {"n": 1}},
        {"channel": "b", "data": "two"},
        {"channel": "a", "data": [3], "event": "third"},
    ]);
    assert_eq!(post(addr, &batch.to_string()), (200, json!({"seqs": [1, 1, 2]})), "input order");
    assert_eq!(messages(&mut a, 2), [triple("a", 1, json!({"n": 1})), triple("a", 2, json!([3]))]);
    assert_eq!(messages(&mut b, 1), [triple("b", 1, json!("two"))]);

    // One bad item refuses the batch, naming it; nothing of it is published.
    let bad_items = [
        (json!([{"channel": "a", "data": 1}, {"channel": "has space", "data": 2}]), 1, "channel"),
        (json!([{"channel": "a"}, {"channel": "a", "data": 2}]), 0, "data"),
        (json!([{"channel": "a", "data": 1}, {"channel": "a", "data": 2, "event": ""}]), 1, "event"),
        (json!([{"channel": "a", "data": 1}, 7]), 1, "expected"),
    ];
    for (batch, index, says) in bad_items {
        let (status, answer) = post(addr, &batch.to_string());
        assert_eq!((status, answer["index"].as_u64()), (400, Some(index)), "{batch}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("item {index}: ")) && error.contains(says), "{error}");
    }
    let (status, answer) = post(addr, &Value::Array(vec![json!({"channel": "a", "data": 0}); 4]).to_string());
    assert_eq!(status, 413, "over --publish-batch-max: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("at most 3"), "{answer}");
    let (status, answer) = post(addr, "[{\"channel\":\"a\",\"data\":1},");
    assert!(status == 400 && answer["error"].as_str().unwrap().contains("array"), "{answer}");
    assert_eq!(post(addr, "[]"), (200, json!({"seqs": []})));

    // The single form is unchanged, and the refused batches took no seq.
    assert_eq!(post(addr, &json!({"channel": "a", "data": "next"}).to_string()), (200, json!({"seq": 3})));
    assert_eq!(messages(&mut a, 1), [triple("a", 3, json!("next"))], "nothing of a refused batch arrived");
}

#[test]
fn a_batch_in_memory_is_numbered_in_order_and_refused_whole() {
    let config = GatewayConfig { publish_batch_max: 3, ..GatewayConfig::default() };
    let server = gateway::start(test_config(), config).unwrap();
    batch_contract(server.local_addr());
}

#[test]
fn a_batch_in_memory_over_a_limit_publishes_nothing() {
    let config = GatewayConfig { max_channels: 2, max_publish_size: 16, ..GatewayConfig::default() };
    let server = gateway::start(test_config(), config).unwrap();
    let addr = server.local_addr();
    let mut a = Native::connect(addr);
    a.subscribe("a");
    let big = json!([{"channel": "a", "data": 1}, {"channel": "a", "data": "x".repeat(20)}]);
    let (status, answer) = post(addr, &big.to_string());
    assert_eq!((status, answer["index"].as_u64()), (413, Some(1)), "data over the limit: {answer}");
    let single = json!({"channel": "a", "data": "x".repeat(20)});
    assert_eq!(post(addr, &single.to_string()).0, 413, "the single form has the same limit");
    let three = json!([{"channel": "a", "data": 1}, {"channel": "b", "data": 2}, {"channel": "c", "data": 3}]);
    assert_eq!(post(addr, &three.to_string()).0, 429, "a, b and c make three channels, over 2");
    assert_eq!(post(addr, &json!({"channel": "a", "data": 2}).to_string()), (200, json!({"seq": 1})), "none taken");
    assert_eq!(messages(&mut a, 1), [triple("a", 1, json!(2))]);
}

#[test]
fn the_body_limit_leaves_room_for_a_batch_and_still_bounds_it() {
    // 1,000 messages of 100 bytes: far over one message's 64 KiB, within the 1 MiB body.
    let mut command = node::command(&["--max-body-size".to_owned(), "200000".to_owned()]);
    command.env("FANOUT_PUBLISH_BATCH_MAX", "1000");
    let node = Node::spawn(command);
    let item = json!({"channel": "bulk", "data": "x".repeat(100)});
    let batch = Value::Array(vec![item; 1000]).to_string();
    assert!(batch.len() > 64 * 1024 && batch.len() < 200_000);
    let (status, answer) = post(node.addr, &batch);
    assert_eq!(status, 200);
    let seqs: Vec<u64> = answer["seqs"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    let too_big = Value::Array(vec![json!({"channel": "bulk", "data": "x".repeat(1000)}); 250]).to_string();
    assert_eq!(post_status(node.addr, &too_big), 413, "over --max-body-size");
}

/// The status alone (a 413 from the library's body limit has a plain-text body).
fn post_status(addr: SocketAddr, body: &str) -> u16 {
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(addr, request.as_bytes());
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"))
}

#[test]
fn a_batch_through_redis_is_one_transaction_in_order() {
    let mut redis = Redis::start();
    let node = Node::clustered(&redis.url(), &["--publish-batch-max", "3"]);
    node.wait_redis("up", Duration::from_secs(15));
    batch_contract(node.addr);

    // Another node receives the batch from Redis in the same order and numbering.
    let other = Node::clustered(&redis.url(), &[]);
    other.wait_redis("up", Duration::from_secs(15));
    let mut far = Native::connect(other.addr);
    far.subscribe("c");
    // Redis lost its scripts (a restart, SCRIPT FLUSH): the batch loads it and runs once.
    assert_eq!(redis.cmd(&["SCRIPT", "FLUSH"]), redis::Resp::Simple("OK".into()));
    let sha = fanout_gateway::cluster::script::PUBLISH.get_hash();
    let loaded = || redis.cmd(&["SCRIPT", "EXISTS", sha]) == redis::Resp::Array(Some(vec![redis::Resp::Int(1)]));
    assert!(!loaded());
    let batch = json!([{"channel": "c", "data": 1}, {"channel": "c", "data": 2}, {"channel": "c", "data": 3}]);
    assert_eq!(post(node.addr, &batch.to_string()), (200, json!({"seqs": [1, 2, 3]})));
    assert!(loaded(), "the batch met NOSCRIPT and loaded the publish script");
    let got = messages(&mut far, 3);
    assert_eq!(got, [triple("c", 1, json!(1)), triple("c", 2, json!(2)), triple("c", 3, json!(3))]);

    redis.stop();
    let (status, answer) = post(node.addr, &batch.to_string());
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("unavailable"), "{answer}");
}
