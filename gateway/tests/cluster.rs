//! The Redis engine (issue 11) end to end: several `fanout` processes on one `redis-server`
//! form a cluster, driven from outside over real sockets.
//!
//! Covers: every input on one node (native WebSocket publish, `POST /api/publish`, the Pusher
//! HTTP API, a Pusher client event) reaching native and Pusher subscribers on the other nodes
//! once, in order, with one seq; an interleaved publish storm from three nodes; the
//! subscribe-then-publish race across nodes (both protocols); joins with `since:0` on other
//! nodes while the channel is busy; `socket_id` exclusion across nodes; resume across nodes;
//! `kill -9` of a node under load (its clients resume elsewhere with nothing lost or
//! duplicated, its presence members are removed within `--redis-node-timeout`), and a graceful
//! stop (members removed at once); Redis killed and restarted under load (health, metrics, 503
//! and `unavailable` answers, subscriptions restored with a fresh `subscribed` in the new
//! epoch); Redis unreachable at start; a full `--redis-queue`; FLUSHALL (resumes on any node
//! are not recovered, live subscribers hear of the new epoch first); the Laravel ingest (both
//! protocols, exactly once with every node ingesting, malformed messages counted, lease
//! takeover after `kill -9` of the holder); presence as the union over nodes; `--redis-prefix`
//! isolation; the settings from the environment and the file (and the URL's database); and no
//! change at all without `--redis-url`.
//!
//! Helpers: `cluster/redis.rs` (a throwaway `redis-server`, raw RESP), `cluster/node.rs` (a
//! `fanout` child and its HTTP side), `cluster/clients.rs` (native and Pusher clients).
//! Every wait is on an event or a polled condition with a deadline, never a bare sleep.

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "cluster/clients.rs"]
mod clients;
#[path = "cluster/node.rs"]
mod node;
#[path = "webhook/receiver.rs"]
mod receiver;
#[path = "cluster/redis.rs"]
mod redis;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clients::{data, Native, Next, Pusher};
use node::{wait_for, Node};
use redis::Redis;
use serde_json::{json, Value};

/// The time the contract gives a presence change to reach members on every node.
const PRESENCE_WITHIN: Duration = Duration::from_secs(2);
/// How long a node may take to notice Redis going away or coming back.
const LINK_WITHIN: Duration = Duration::from_secs(15);

/// `n` nodes on `redis` with `extra` flags, each linked to Redis (healthz says so) before it is
/// used: a publish to a node still connecting may rightly be refused.
fn cluster(redis: &Redis, n: usize, extra: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = (0..n).map(|_| Node::clustered(&redis.url(), extra)).collect();
    for node in &nodes {
        node.wait_redis("up", LINK_WITHIN);
    }
    nodes
}

fn epoch(reply: &Value) -> String {
    reply["epoch"].as_str().filter(|e| !e.is_empty()).unwrap_or_else(|| panic!("no epoch in {reply}")).to_owned()
}

/// The next Pusher frame within `within`; fails on silence.
fn pusher_event(p: &mut Pusher, within: Duration, what: &str) -> Value {
    p.recv_within(within).unwrap_or_else(|| panic!("{what}: nothing within {within:?}"))
}

#[test]
fn every_input_on_one_node_reaches_the_other_nodes_once_in_order_with_one_seq() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &[]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let ch = "private-orders";
    let mut natives: Vec<Native> = nodes.iter().map(|n| Native::connect(n.addr)).collect();
    let epochs: HashSet<String> = natives.iter_mut().map(|s| epoch(&s.subscribe(ch))).collect();
    assert_eq!(epochs.len(), 1, "one epoch per channel in the whole cluster: {epochs:?}");
    let mut pushers: Vec<Pusher> = [b, c].iter().map(|n| Pusher::connect(n.addr)).collect();
    for p in &mut pushers {
        p.subscribe(ch, None);
    }
    let mut sender = Pusher::connect(a.addr);
    sender.subscribe(ch, None);

    // 1. A native WebSocket publish on A.
    let mut publisher = Native::connect(a.addr);
    publisher.0.send(json!({"op": "publish", "channel": ch, "event": "created", "data": {"n": 1}, "id": 7}));
    assert_eq!(publisher.0.recv(), json!({"op": "ack", "id": 7, "seq": 1}));
    // 2. POST /api/publish on A.
    assert_eq!(a.publish_seq(ch, json!({"n": 2})), 2);
    // 3. The Pusher HTTP API on A.
    let (status, answer) = a.trigger(json!({"name": "shipped", "channel": ch, "data": "{\"n\":3}"}));
    assert_eq!((status, answer), (200, json!({})));
    // 4. A Pusher client event from a client on A (client events are on by default).
    sender.send(json!({"event": "client-typing", "channel": ch, "data": {"n": 4}}));
    // The client event takes its own path: wait until it is out before the marker.
    let expected = [
        json!({"op": "message", "channel": ch, "seq": 1, "event": "created", "data": {"n": 1}}),
        json!({"op": "message", "channel": ch, "seq": 2, "data": {"n": 2}}),
        json!({"op": "message", "channel": ch, "seq": 3, "event": "shipped", "data": {"n": 3}}),
        json!({"op": "message", "channel": ch, "seq": 4, "event": "client-typing", "data": {"n": 4}}),
        json!({"op": "message", "channel": ch, "seq": 5, "data": "end"}),
    ];
    for (i, s) in natives.iter_mut().enumerate() {
        for want in &expected[..4] {
            assert_eq!(&s.0.recv(), want, "native subscriber on node {i}");
        }
    }
    // A marker after everything: the next frame everywhere, so nothing came twice.
    assert_eq!(a.publish_seq(ch, json!("end")), 5);
    for (i, s) in natives.iter_mut().enumerate() {
        assert_eq!(s.0.recv(), expected[4], "native subscriber on node {i}: a duplicate before the marker?");
    }
    let pusher_expected = [
        json!({"event": "created", "channel": ch, "data": "{\"n\":1}"}),
        json!({"event": "message", "channel": ch, "data": "{\"n\":2}"}),
        json!({"event": "shipped", "channel": ch, "data": "{\"n\":3}"}),
        json!({"event": "client-typing", "channel": ch, "data": {"n": 4}}),
        json!({"event": "message", "channel": ch, "data": "end"}),
    ];
    for (i, p) in pushers.iter_mut().enumerate() {
        for want in &pusher_expected {
            assert_eq!(&p.recv(), want, "Pusher subscriber on node {}", i + 1);
        }
    }
    for want in [&pusher_expected[0], &pusher_expected[1], &pusher_expected[2], &pusher_expected[4]] {
        assert_eq!(&sender.recv(), want, "the sender of the client event never gets it back");
    }
    // Resume on another node than the one the client was on: the history is the cluster's.
    let e = epochs.into_iter().next().unwrap();
    let mut back = Native::connect(c.addr);
    let reply = back.resume(ch, 2, &e);
    assert_eq!((reply["seq"].as_u64(), reply["recovered"].as_bool()), (Some(5), Some(true)), "{reply}");
    for want in &expected[2..] {
        assert_eq!(&back.0.recv(), want, "the missed messages, once, in order");
    }
}

#[test]
fn a_publish_storm_from_three_nodes_keeps_one_order_without_gap_or_duplicate() {
    const PER_NODE: usize = 300;
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &["--history-size", "1000"]);
    let ch = "storm";
    let mut natives: Vec<Native> = nodes.iter().map(|n| Native::connect(n.addr)).collect();
    for s in &mut natives {
        assert_eq!(s.subscribe(ch)["seq"], 0);
    }
    let mut pushers: Vec<Pusher> = nodes.iter().map(|n| Pusher::connect(n.addr)).collect();
    for p in &mut pushers {
        p.subscribe(ch, None);
    }
    let acked: Vec<(u64, String)> = std::thread::scope(|s| {
        let publishers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                s.spawn(move || {
                    (0..PER_NODE)
                        .map(|k| {
                            let d = format!("{i}-{k}");
                            (node.publish_seq(ch, json!(d)), d)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        publishers.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    let by_seq: BTreeMap<u64, String> = acked.iter().cloned().collect();
    let total = (3 * PER_NODE) as u64;
    assert_eq!(by_seq.len(), acked.len(), "two publishes were acked with one seq");
    assert_eq!(by_seq.keys().copied().collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>(), "acked seqs are 1..=900");
    for (i, s) in natives.iter_mut().enumerate() {
        for (&seq, d) in &by_seq {
            let m = s.message();
            assert_eq!((m["seq"].as_u64(), m["data"].as_str()), (Some(seq), Some(d.as_str())), "native on node {i}");
        }
    }
    for (i, p) in pushers.iter_mut().enumerate() {
        for d in by_seq.values() {
            let e = p.recv();
            assert_eq!(e["data"].as_str(), Some(d.as_str()), "Pusher on node {i}: {e}");
        }
    }
    // Nothing more: the next frame everywhere is a marker.
    let end = nodes[0].publish_seq(ch, json!("end"));
    assert_eq!(end, total + 1);
    for s in &mut natives {
        assert_eq!(s.message()["seq"], end);
    }
}

#[test]
fn a_publish_right_after_subscribed_on_another_node_always_arrives() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2, &[]);
    let mut publisher = Native::connect(nodes[0].addr);
    let mut subscriber = Native::connect(nodes[1].addr);
    for i in 0..50u64 {
        let ch = format!("race-{i}");
        subscriber.subscribe(&ch);
        let ack = publisher.publish(&ch, json!(i), i);
        assert_eq!((ack["op"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(1)), "{ack}");
        let m = subscriber.0.recv_within(Duration::from_secs(5)).unwrap_or_else(|| {
            panic!("round {i}: the publish made on A right after `subscribed` on B never reached B")
        });
        assert_eq!(m, json!({"op": "message", "channel": ch, "seq": 1, "data": i}), "round {i}");
        subscriber.0.send(json!({"op": "unsubscribe", "channel": ch}));
        assert_eq!(subscriber.0.recv(), json!({"op": "unsubscribed", "channel": ch}));
    }
}

#[test]
fn a_publish_right_after_pusher_subscription_succeeded_on_another_node_always_arrives() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2, &[]);
    let mut publisher = Native::connect(nodes[0].addr);
    let mut subscriber = Pusher::connect(nodes[1].addr);
    for i in 0..50u64 {
        let ch = format!("prace-{i}");
        subscriber.subscribe(&ch, None);
        assert_eq!(publisher.publish(&ch, json!(i.to_string()), i)["op"], "ack");
        let e = subscriber.recv_within(Duration::from_secs(5)).unwrap_or_else(|| {
            panic!("round {i}: the publish made on A right after subscription_succeeded on B never reached B")
        });
        assert_eq!(e, json!({"event": "message", "channel": ch, "data": i.to_string()}), "round {i}");
        subscriber.send(json!({"event": "pusher:unsubscribe", "data": {"channel": ch}}));
    }
}

#[test]
fn joining_with_since_0_on_other_nodes_while_publishes_stream_gives_no_gap_and_no_duplicate() {
    const CHANNELS: usize = 20;
    const ROUNDS: u64 = 150;
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &["--history-size", "500"]);
    let a = nodes[0].addr;
    let (progress, ticks) = std::sync::mpsc::channel();
    // Rounds of one pipelined publish per channel on A, each round acked before the next, so
    // that the joins below land while the channels' messages stream in.
    let publisher = std::thread::spawn(move || {
        let mut p = Native::connect(a);
        for round in 0..ROUNDS {
            for ch in 0..CHANNELS {
                p.0.write(json!({"op": "publish", "channel": format!("s-{ch}"), "data": round}));
            }
            p.0.flush();
            for _ in 0..CHANNELS {
                assert_eq!(p.0.recv()["op"], "ack");
            }
            if round % 6 == 0 {
                let _ = progress.send(());
            }
        }
    });
    // Channel k gets its joiners on B and C at tick k: each join is the first on its node for
    // that channel, so its subscription is set up in Redis while the channel is busy.
    let mut joiners = Vec::new();
    for ch in 0..CHANNELS {
        ticks.recv().expect("the publisher runs long enough for every join");
        for node in &nodes[1..] {
            let mut s = Native::connect(node.addr);
            s.0.send(json!({"op": "subscribe", "channel": format!("s-{ch}"), "since": 0}));
            joiners.push((ch, node.addr, s));
        }
    }
    publisher.join().unwrap();
    for (ch, addr, mut s) in joiners {
        let reply = s.0.recv();
        assert_eq!((reply["op"].as_str(), reply["recovered"].as_bool()), (Some("subscribed"), Some(true)), "{reply}");
        for seq in 1..=ROUNDS {
            let m = s.message();
            assert_eq!(m["seq"].as_u64(), Some(seq), "s-{ch} on {addr}: a gap or a duplicate (joined at {reply})");
            assert_eq!(m["data"].as_u64(), Some(seq - 1));
        }
    }
}

#[test]
fn a_trigger_excludes_its_socket_id_on_whichever_node_that_socket_is() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &[]);
    let mut excluded = Pusher::connect(nodes[1].addr);
    let mut beside = Pusher::connect(nodes[1].addr);
    let mut far = Pusher::connect(nodes[2].addr);
    for p in [&mut excluded, &mut beside, &mut far] {
        p.subscribe("news", None);
    }
    let mut native = Native::connect(nodes[2].addr);
    native.subscribe("news");
    let body = json!({"name": "not-you", "channel": "news", "data": "1", "socket_id": excluded.socket_id});
    assert_eq!(nodes[0].trigger(body).0, 200);
    assert_eq!(nodes[0].trigger(json!({"name": "everyone", "channel": "news", "data": "2"})).0, 200);
    assert_eq!(excluded.recv()["event"], "everyone", "the socket named by socket_id, on another node, got it");
    for p in [&mut beside, &mut far] {
        assert_eq!(p.recv()["event"], "not-you");
        assert_eq!(p.recv()["event"], "everyone");
    }
    assert_eq!(native.message()["event"], "not-you");
}

/// What a subscriber of the kill test saw: seqs and data in arrival order, and how often it had
/// to resume on another node.
struct Resumed {
    got: Vec<(u64, Value)>,
    reconnects: usize,
}

/// Publishes `"{tag}-{k}"` to `channel` on `node` over HTTP until `stop`, every few
/// milliseconds, recording each answer with the time it came.
fn publish_until(node: &Node, channel: &str, tag: &str, stop: &AtomicBool, log: &Mutex<Vec<Answer>>) {
    let mut k = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let d = json!(format!("{tag}-{k}"));
        let sent = Instant::now();
        let (status, body) = node.publish(channel, d.clone());
        log.lock().unwrap().push(Answer { sent, at: Instant::now(), status, body, data: d });
        k += 1;
        std::thread::sleep(Duration::from_millis(5)); // the pace of the load, not a wait
    }
}

/// Raises its flag when dropped. Made first in a `thread::scope`, it stops the scope's helper
/// threads when the test's own thread panics there, instead of the scope waiting for them
/// forever.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One answer to an HTTP publish.
struct Answer {
    sent: Instant,
    at: Instant,
    status: u16,
    body: Value,
    data: Value,
}

impl Answer {
    fn seq(&self) -> Option<u64> {
        (self.status == 200)
            .then(|| self.body["seq"].as_u64().unwrap_or_else(|| panic!("200 without seq: {}", self.body)))
    }
}

/// Reads `sub` until it has seq `target` (once known), checking each message is the one after
/// the last; when its node dies, resumes on `fallback` with since and epoch.
fn follow_and_resume(
    i: usize,
    mut sub: Native,
    epoch: String,
    fallback: std::net::SocketAddr,
    target: &AtomicU64,
    resumed: &AtomicUsize,
    aborted: &AtomicBool,
) -> Resumed {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Resumed { got: Vec::new(), reconnects: 0 };
    loop {
        let last = out.got.last().map_or(0, |(seq, _)| *seq);
        let t = target.load(Ordering::SeqCst);
        if (t != 0 && last >= t) || aborted.load(Ordering::SeqCst) {
            return out;
        }
        assert!(Instant::now() < deadline, "subscriber {i}: stuck at seq {last} (target {t})");
        match sub.0.next(Duration::from_millis(300)) {
            Next::Frame(m) => {
                assert_eq!(m["op"], "message", "subscriber {i}: {m}");
                let seq = m["seq"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "subscriber {i}: a gap or a duplicate after {last}");
                out.got.push((seq, m["data"].clone()));
            }
            Next::Silent => {}
            Next::Closed(why) => {
                assert_eq!(out.reconnects, 0, "subscriber {i}: closed twice ({why})");
                out.reconnects += 1;
                sub = Native::connect(fallback);
                let reply = sub.resume("load", last, &epoch);
                assert_eq!(reply["recovered"], true, "subscriber {i} resuming at {last} on another node: {reply}");
                assert_eq!(reply["epoch"].as_str(), Some(epoch.as_str()), "{reply}");
                resumed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn kill_9_of_a_node_under_load_its_clients_resume_elsewhere_and_its_members_leave() {
    const NODE_TIMEOUT: Duration = Duration::from_secs(3);
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &["--redis-node-timeout", "3", "--history-size", "5000"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Presence: a member on A watches one on B.
    let mut watcher = Pusher::connect(a.addr);
    watcher.subscribe("presence-lobby", Some(r#"{"user_id":"watcher"}"#));
    let mut doomed = Pusher::connect(b.addr);
    let joined = doomed.subscribe("presence-lobby", Some(r#"{"user_id":"doomed"}"#));
    assert_eq!(data(&joined)["presence"]["count"], 2, "the member on A is listed on B: {joined}");
    let added = pusher_event(&mut watcher, PRESENCE_WITHIN, "member_added on A for a member on B");
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(data(&added)["user_id"], "doomed");
    // Native subscribers on B; publishers on A and C.
    let subscribers: Vec<(Native, String)> = (0..6)
        .map(|_| {
            let mut s = Native::connect(b.addr);
            let e = epoch(&s.subscribe("load"));
            (s, e)
        })
        .collect();
    let (stop, log) = (AtomicBool::new(false), Mutex::new(Vec::new()));
    let (target, resumed, aborted) = (AtomicU64::new(0), AtomicUsize::new(0), AtomicBool::new(false));
    let acks = || log.lock().unwrap().len();
    let results: Vec<Resumed> = std::thread::scope(|s| {
        let (_stop, _abort) = (RaiseOnDrop(&stop), RaiseOnDrop(&aborted));
        let publishers = [
            s.spawn(|| publish_until(a, "load", "a", &stop, &log)),
            s.spawn(|| publish_until(c, "load", "c", &stop, &log)),
        ];
        let readers: Vec<_> = subscribers
            .into_iter()
            .enumerate()
            .map(|(i, (sub, e))| {
                let fallback = if i % 2 == 0 { a.addr } else { c.addr };
                let (target, resumed, aborted) = (&target, &resumed, &aborted);
                s.spawn(move || follow_and_resume(i, sub, e, fallback, target, resumed, aborted))
            })
            .collect();
        wait_for("60 publishes before the kill", Duration::from_secs(30), || acks() >= 60);
        b.kill9();
        let killed_at = Instant::now();
        // The member on B leaves the lobby for the member on A within the node timeout (and a
        // little slack for the survivors' check interval).
        let limit = NODE_TIMEOUT + Duration::from_millis(1500);
        let removed = watcher
            .recv_within(limit.saturating_sub(killed_at.elapsed()))
            .unwrap_or_else(|| panic!("no member_removed for the killed node's member within {limit:?}"));
        assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
        assert_eq!(data(&removed), json!({"user_id": "doomed"}));
        eprintln!("cluster: member_removed {:?} after the kill", killed_at.elapsed());
        let at_removal = acks();
        wait_for("every subscriber resumed elsewhere", Duration::from_secs(20), || resumed.load(Ordering::SeqCst) == 6);
        wait_for("100 more publishes", Duration::from_secs(30), || acks() >= at_removal + 100);
        stop.store(true, Ordering::SeqCst);
        for p in publishers {
            p.join().unwrap();
        }
        let max = log.lock().unwrap().iter().filter_map(Answer::seq).max().unwrap();
        target.store(max, Ordering::SeqCst);
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let log = log.into_inner().unwrap();
    for answer in &log {
        assert_eq!(answer.status, 200, "a publish on a survivor: {}", answer.body);
    }
    let acked: BTreeMap<u64, Value> = log.iter().map(|a| (a.seq().unwrap(), a.data.clone())).collect();
    let max = *acked.keys().last().unwrap();
    assert_eq!(acked.len(), log.len(), "two publishes were acked with one seq");
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (1..=max).collect::<Vec<_>>(), "acked seqs 1..={max}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.reconnects, 1, "subscriber {i}");
        let got: BTreeMap<u64, Value> = r.got.iter().cloned().collect();
        assert_eq!(got, acked, "subscriber {i}: every acked publish once, with its data");
    }
    // A newcomer on C sees the lobby without the killed node's member.
    let mut late = Pusher::connect(c.addr);
    let reply = late.subscribe("presence-lobby", Some(r#"{"user_id":"late"}"#));
    assert_eq!(ids(&reply), ["late", "watcher"], "{reply}");
}

/// The sorted member ids of a presence `subscription_succeeded`.
fn ids(reply: &Value) -> Vec<String> {
    let presence = data(reply)["presence"].clone();
    let mut ids: Vec<String> = presence["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {reply}"))
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(presence["count"].as_u64(), Some(ids.len() as u64), "{reply}");
    ids
}

/// Frames a subscriber thread collected until it saw the data `"end"` (or its deadline).
fn collect_until_end(sub: &mut clients::Json, who: &str, aborted: &AtomicBool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut frames = Vec::new();
    loop {
        if aborted.load(Ordering::SeqCst) {
            return frames;
        }
        assert!(Instant::now() < deadline, "{who}: no end marker; got {} frames", frames.len());
        match sub.next(Duration::from_millis(300)) {
            Next::Frame(f) => {
                let end = f["data"] == "end";
                frames.push(f);
                if end {
                    return frames;
                }
            }
            Next::Silent => {}
            Next::Closed(why) => panic!("{who}: a subscriber lost its connection ({why}); it must stay connected"),
        }
    }
}

#[test]
fn redis_killed_and_restarted_under_load_nodes_refuse_then_resume_for_the_same_clients() {
    let mut redis = Redis::start();
    let nodes = cluster(&redis, 3, &["--history-size", "5000"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut native_b = Native::connect(b.addr);
    let old_epoch = epoch(&native_b.subscribe("outage"));
    let mut native_c = Native::connect(c.addr);
    native_c.subscribe("outage");
    let mut pusher_c = Pusher::connect(c.addr);
    pusher_c.subscribe("outage", None);
    let (stop, log) = (AtomicBool::new(false), Mutex::new(Vec::<Answer>::new()));
    let aborted = AtomicBool::new(false);
    let start = Instant::now();
    let (mut down_at, mut restarted_at, mut all_up_at) = (start, start, start);
    let frames: Vec<Vec<Value>> = std::thread::scope(|s| {
        let (_stop, _abort) = (RaiseOnDrop(&stop), RaiseOnDrop(&aborted));
        let publisher = s.spawn(|| publish_until(a, "outage", "p", &stop, &log));
        let readers = [
            s.spawn(|| collect_until_end(&mut native_b.0, "native on B", &aborted)),
            s.spawn(|| collect_until_end(&mut native_c.0, "native on C", &aborted)),
            s.spawn(|| collect_until_end(&mut pusher_c.json, "Pusher on C", &aborted)),
        ];
        let count = |from: Instant, status: u16| {
            log.lock().unwrap().iter().filter(|x| x.at >= from && x.status == status).count()
        };
        wait_for("20 publishes before the outage", Duration::from_secs(30), || count(start, 200) >= 20);
        redis.stop();
        for node in &nodes {
            node.wait_redis("down", LINK_WITHIN);
            assert_eq!(node.metric("fanout_redis_up"), Some(0.0), "node {}", node.addr);
        }
        down_at = Instant::now();
        // Every input is refused at once, with an error, not silence.
        let asked = Instant::now();
        let (status, answer) = a.publish("outage-probe", json!(1));
        assert_eq!(status, 503, "{answer}");
        assert!(answer["error"].is_string(), "{answer}");
        let mut ws = Native::connect(b.addr);
        let refused = ws.publish("outage-probe", json!(1), 41);
        assert_eq!(
            (refused["op"].as_str(), refused["code"].as_str(), refused["id"].as_u64()),
            (Some("error"), Some("unavailable"), Some(41)),
            "{refused}"
        );
        let (status, answer) = c.trigger(json!({"name": "e", "channel": "outage-probe", "data": "x"}));
        assert_eq!(status, 503, "{answer}");
        assert!(asked.elapsed() < Duration::from_secs(3), "refusals took {:?}", asked.elapsed());
        wait_for("refusals under load", Duration::from_secs(10), || count(down_at, 503) >= 5);
        redis.restart();
        restarted_at = Instant::now();
        for node in &nodes {
            node.wait_redis("up", LINK_WITHIN);
            assert_eq!(node.metric("fanout_redis_up"), Some(1.0), "node {}", node.addr);
            let reconnects = node.metric("fanout_redis_reconnects_total").unwrap_or(0.0);
            assert!(reconnects >= 1.0, "node {}: fanout_redis_reconnects_total {reconnects}", node.addr);
        }
        all_up_at = Instant::now();
        wait_for("30 publishes after the recovery", Duration::from_secs(30), || count(all_up_at, 200) >= 30);
        stop.store(true, Ordering::SeqCst);
        publisher.join().unwrap();
        let (status, answer) = a.publish("outage", json!("end"));
        assert_eq!(status, 200, "{answer}");
        let now = Instant::now();
        log.lock().unwrap().push(Answer { sent: now, at: now, status, body: answer, data: json!("end") });
        readers.map(|r| r.join().unwrap()).into_iter().collect()
    });
    let log = log.into_inner().unwrap();
    for answer in &log {
        assert!(
            answer.status == 200 || (answer.status == 503 && answer.body["error"].is_string()),
            "a publish answered {} {}",
            answer.status,
            answer.body
        );
    }
    // What was acked in each epoch: before the restart began (the old Redis was dead by then),
    // and after. A publish in flight when Redis died may have gone out though its answer was
    // 503; one sent once every node said Redis was down must never be delivered.
    let acked = |epoch: &dyn Fn(&Answer) -> bool| -> BTreeMap<u64, Value> {
        log.iter().filter(|x| epoch(x)).filter_map(|x| Some((x.seq()?, x.data.clone()))).collect()
    };
    let old = acked(&|x| x.at < restarted_at);
    let new = acked(&|x| x.at >= restarted_at);
    let in_flight: HashSet<Value> =
        log.iter().filter(|x| x.status == 503 && x.sent < down_at).map(|x| x.data.clone()).collect();
    let refused: HashSet<Value> =
        log.iter().filter(|x| x.status == 503 && x.sent >= down_at).map(|x| x.data.clone()).collect();
    let new_seqs: Vec<u64> = new.keys().copied().collect();
    assert_eq!(new_seqs, (1..=new.len() as u64).collect::<Vec<_>>(), "the new epoch's acked seqs");
    for (who, frames) in [("native on B", &frames[0]), ("native on C", &frames[1])] {
        let fresh: Vec<usize> = (0..frames.len()).filter(|&i| frames[i]["op"] == "subscribed").collect();
        assert_eq!(fresh.len(), 1, "{who}: one fresh `subscribed` for the new epoch: {frames:?}");
        let fresh_at = fresh[0];
        let reply = &frames[fresh_at];
        assert_eq!(reply["recovered"], false, "{who}: {reply}");
        assert_ne!(epoch(reply), old_epoch, "{who}: Redis lost its data, the epoch changes: {reply}");
        for (part, acked) in [(&frames[..fresh_at], &old), (&frames[fresh_at + 1..], &new)] {
            let mut last = None;
            for m in part {
                assert_eq!(m["op"], "message", "{who}: {m}");
                let seq = m["seq"].as_u64().unwrap();
                if let Some(last) = last {
                    assert_eq!(seq, last + 1, "{who}: a gap or a duplicate within an epoch");
                }
                last = Some(seq);
                match acked.get(&seq) {
                    Some(d) => assert_eq!(d, &m["data"], "{who}: {m} was acked with other data"),
                    None => assert!(in_flight.contains(&m["data"]), "{who}: {m} was never acked"),
                }
            }
        }
        // Every publish acked in the new epoch arrives, even one acked before this node was
        // linked again: it is in the history its node reads when it subscribes again.
        let got: Vec<u64> = frames[fresh_at + 1..].iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(got, new_seqs, "{who}: the new epoch's messages, all of them, once, in order");
        assert_eq!(frames[..fresh_at].first().map(|m| m["seq"].clone()), Some(json!(1)), "{who}: from seq 1");
    }
    // Pusher frames carry no seq: the data order, no duplicate, nothing refused, nothing missed.
    let pusher: Vec<Value> = frames[2].iter().map(|e| e["data"].clone()).collect();
    let order = |d: &Value| log.iter().position(|x| &x.data == d).unwrap_or_else(|| panic!("{d} was never published"));
    let positions: Vec<usize> = pusher.iter().map(order).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "Pusher on C: out of order or twice: {pusher:?}");
    for d in &pusher {
        assert!(!refused.contains(d), "Pusher on C got {d}, whose publish was refused with 503");
    }
    for d in new.values() {
        assert!(pusher.contains(d), "Pusher on C: {d}, acked in the new epoch, never arrived");
    }
}

#[test]
fn a_node_starts_without_redis_refuses_publishes_and_links_when_redis_comes() {
    let port = redis::free_port();
    let node = Node::clustered(&format!("redis://127.0.0.1:{port}"), &[]);
    node.wait_redis("down", LINK_WITHIN);
    assert_eq!(node.metric("fanout_redis_up"), Some(0.0));
    let (status, answer) = node.publish("news", json!(1));
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    let mut ws = Native::connect(node.addr);
    let refused = ws.publish("news", json!(1), 5);
    assert_eq!((refused["op"].as_str(), refused["code"].as_str()), (Some("error"), Some("unavailable")), "{refused}");
    assert_eq!(node.trigger(json!({"name": "e", "channel": "news", "data": "x"})).0, 503);
    let _redis = Redis::start_on(port);
    node.wait_redis("up", LINK_WITHIN);
    let mut sub = Native::connect(node.addr);
    sub.subscribe("news");
    let ack = ws.publish("news", json!("now"), 6);
    assert_eq!((ack["op"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(1)), "{ack}");
    assert_eq!(sub.message()["data"], "now");
}

#[test]
fn a_full_redis_queue_answers_at_once_with_errors() {
    let redis = Redis::start();
    let node = &cluster(&redis, 1, &["--redis-queue", "4"])[0];
    let mut ws = Native::connect(node.addr);
    assert_eq!(ws.publish("q", json!(0), 0)["op"], "ack");
    redis.signal("STOP");
    for id in 1..=20u64 {
        ws.0.write(json!({"op": "publish", "channel": "q", "data": id, "id": id}));
    }
    ws.0.flush();
    // While Redis answers nothing, the publishes over the queue's bound are refused at once.
    let mut answers = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(a) = ws.0.recv_within(deadline.saturating_duration_since(Instant::now())) {
        assert!(answers.insert(a["id"].as_u64().unwrap(), a.clone()).is_none(), "two answers for one id: {a}");
    }
    redis.signal("CONT");
    let errors_while_stopped = answers.values().filter(|a| a["op"] == "error").count();
    assert!(errors_while_stopped >= 1, "a full queue answered nothing within 3 s: {answers:?}");
    assert!(answers.values().filter(|a| a["op"] == "error").all(|a| a["code"].is_string()), "{answers:?}");
    while answers.len() < 20 {
        let a = ws.0.recv();
        assert!(answers.insert(a["id"].as_u64().unwrap(), a.clone()).is_none(), "two answers for one id: {a}");
    }
    let seqs: Vec<u64> = answers.values().filter(|a| a["op"] == "ack").map(|a| a["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "acked seqs in publish order, distinct: {answers:?}");
    node.wait_redis("up", LINK_WITHIN);
    assert_eq!(ws.publish("q", json!("after"), 99)["op"], "ack", "served again once Redis answers");
}

#[test]
fn after_flushall_a_resume_is_not_recovered_and_live_subscribers_get_the_new_epoch_first() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &[]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut live_a = Native::connect(a.addr);
    let old = epoch(&live_a.subscribe("ep"));
    let mut away = Native::connect(a.addr);
    away.subscribe("ep");
    for i in 1..=3 {
        assert_eq!(b.publish_seq("ep", json!(i)), i);
        assert_eq!(away.message()["seq"], i);
    }
    drop(away);
    assert_eq!(a.publish_seq("ep", json!(4)), 4);
    assert_eq!(a.publish_seq("ep", json!(5)), 5);
    // Resume on another node: exactly the missed messages.
    let mut live_b = Native::connect(b.addr);
    let reply = live_b.resume("ep", 3, &old);
    assert_eq!((reply["recovered"].as_bool(), reply["seq"].as_u64()), (Some(true), Some(5)), "{reply}");
    assert_eq!(epoch(&reply), old);
    assert_eq!([live_b.message()["seq"].clone(), live_b.message()["seq"].clone()], [json!(4), json!(5)]);
    for i in 1..=5 {
        assert_eq!(live_a.message()["seq"], i);
    }
    redis.flushall();
    // On C, where nobody is subscribed to the channel, a resume finds the history gone.
    let mut late = Native::connect(c.addr);
    let reply = late.resume("ep", 5, &old);
    assert_eq!(reply["recovered"], false, "Redis lost the history: {reply}");
    let new = epoch(&reply);
    assert_ne!(new, old, "{reply}");
    let seq = a.publish_seq("ep", json!("new"));
    for (who, live) in [("live on A", &mut live_a), ("live on B", &mut live_b)] {
        let fresh = live.0.recv();
        assert_eq!(
            (fresh["op"].as_str(), fresh["channel"].as_str(), fresh["recovered"].as_bool()),
            (Some("subscribed"), Some("ep"), Some(false)),
            "{who}: a fresh `subscribed` before any message of the new epoch: {fresh}"
        );
        assert_eq!(epoch(&fresh), new, "{who}: one new epoch for the channel in the cluster");
        let m = live.message();
        assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(seq), &json!("new")), "{who}");
    }
    let m = late.message();
    assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(seq), &json!("new")), "the resumed client is live");
    // The new epoch resumes across nodes like the old one did.
    let mut again = Native::connect(b.addr);
    let reply = again.resume("ep", seq - 1, &new);
    assert_eq!((reply["recovered"].as_bool(), epoch(&reply)), (Some(true), new), "{reply}");
    assert_eq!(again.message()["data"], "new");
}

#[test]
fn after_flushall_a_resume_on_a_node_with_live_subscribers_is_not_recovered_either() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2, &[]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut live = Native::connect(b.addr);
    let old = epoch(&live.subscribe("ep"));
    for i in 1..=3 {
        assert_eq!(a.publish_seq("ep", json!(i)), i);
        assert_eq!(live.message()["seq"], i);
    }
    redis.flushall();
    // B still has the channel live (and its recent messages in memory), but Redis lost them:
    // the contract says a resume after the loss is not a recovery, whatever node answers it.
    let mut late = Native::connect(b.addr);
    let reply = late.resume("ep", 2, &old);
    assert_eq!(reply["recovered"], false, "Redis lost the history: {reply}");
    assert_ne!(epoch(&reply), old, "{reply}");
}

/// The flags of an ingesting node: Laravel's Redis broadcaster with its default prefix, and a
/// short lease so that a takeover test is quick.
const INGEST: [&str; 6] =
    ["--redis-ingest", "laravel_database_*", "--redis-ingest-strip", "laravel_database_", "--redis-ingest-lease", "2"];
const LEASE: Duration = Duration::from_secs(2);

/// The one node of `nodes` whose `/metrics` says it holds the ingest lease (`1` there, `0` on
/// every other), once they agree.
fn lease_holder(nodes: &[&Node]) -> usize {
    let deadline = Instant::now() + LINK_WITHIN;
    loop {
        let seen: Vec<Option<f64>> = nodes.iter().map(|n| n.metric("fanout_redis_ingest_lease")).collect();
        let holders: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == Some(1.0)).collect();
        if holders.len() == 1 && seen.iter().filter(|v| **v == Some(0.0)).count() == nodes.len() - 1 {
            return holders[0];
        }
        assert!(Instant::now() < deadline, "no single holder of the ingest lease: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Laravel broadcast as Laravel's RedisBroadcaster publishes it.
fn laravel(event: &str, data: Value) -> String {
    json!({"event": event, "data": data, "socket": null}).to_string()
}

/// Waits until the ingest is live: Laravel messages on a probe channel published until one
/// reaches a subscriber on `node`.
fn wait_ingest(redis: &Redis, node: &Node) {
    let mut probe = Native::connect(node.addr);
    probe.subscribe("probe");
    let deadline = Instant::now() + LINK_WITHIN;
    loop {
        redis.publish("laravel_database_probe", &laravel("Probe", json!(1)));
        if let Some(m) = probe.0.recv_within(Duration::from_millis(100)) {
            assert_eq!(m["event"], "Probe", "{m}");
            return;
        }
        assert!(Instant::now() < deadline, "the Laravel ingest never delivered a message");
    }
}

#[test]
fn a_laravel_broadcast_reaches_both_protocols_once_with_every_node_ingesting() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &INGEST);
    let holder = lease_holder(&nodes.iter().collect::<Vec<_>>());
    wait_ingest(&redis, &nodes[0]);
    let mut natives: Vec<Native> = nodes.iter().map(|n| Native::connect(n.addr)).collect();
    let mut pushers: Vec<Pusher> = nodes.iter().map(|n| Pusher::connect(n.addr)).collect();
    for (s, p) in natives.iter_mut().zip(&mut pushers) {
        s.subscribe("news");
        p.subscribe("news", None);
    }
    for i in 0..10 {
        redis.publish("laravel_database_news", &laravel("App\\Events\\Sent", json!({"a": i})));
    }
    for (n, (s, p)) in natives.iter_mut().zip(&mut pushers).enumerate() {
        for i in 0..10 {
            let want = json!({"op": "message", "channel": "news", "seq": i + 1, "event": "App\\Events\\Sent", "data": {"a": i}});
            assert_eq!(s.0.recv(), want, "native on node {n}");
            let want = json!({"event": "App\\Events\\Sent", "channel": "news", "data": format!("{{\"a\":{i}}}")});
            assert_eq!(p.recv(), want, "Pusher on node {n}");
        }
    }
    // Published once: the next seq is 11, and it is the next frame everywhere.
    assert_eq!(nodes[1].publish_seq("news", json!("end")), 11, "a Laravel message was published more than once");
    for (s, p) in natives.iter_mut().zip(&mut pushers) {
        assert_eq!(s.message()["seq"], 11);
        assert_eq!(p.recv()["data"], "end");
    }
    // Malformed messages are counted and skipped; a missing `data` is null.
    for bad in ["not json", "[1]", r#"{"data":{"a":1}}"#] {
        redis.publish("laravel_database_news", bad);
    }
    redis.publish("laravel_database_news", r#"{"event":"NoData"}"#);
    for (n, (s, p)) in natives.iter_mut().zip(&mut pushers).enumerate() {
        let want = json!({"op": "message", "channel": "news", "seq": 12, "event": "NoData", "data": null});
        assert_eq!(s.0.recv(), want, "native on node {n}");
        assert_eq!(p.recv(), json!({"event": "NoData", "channel": "news", "data": "null"}), "Pusher on node {n}");
    }
    assert_eq!(lease_holder(&nodes.iter().collect::<Vec<_>>()), holder, "the lease stayed where it was");
    assert_eq!(nodes[holder].metric("fanout_redis_ingest_malformed_total"), Some(3.0));
    for node in &nodes {
        assert_eq!(node.healthz().0, 200, "node {}: malformed input is never fatal", node.addr);
    }
}

#[test]
fn the_ingest_lease_moves_to_a_survivor_when_its_holder_is_killed() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &INGEST);
    let all: Vec<&Node> = nodes.iter().collect();
    let holder = lease_holder(&all);
    let survivors: Vec<&Node> = (0..3).filter(|&i| i != holder).map(|i| &nodes[i]).collect();
    wait_ingest(&redis, survivors[0]);
    let mut subs: Vec<Native> = survivors.iter().map(|n| Native::connect(n.addr)).collect();
    for s in &mut subs {
        s.subscribe("tick");
    }
    nodes[holder].kill9();
    let killed_at = Instant::now();
    // Laravel keeps broadcasting; once the lease has moved, the messages flow again.
    let limit = LEASE + Duration::from_secs(3);
    let mut frames: Vec<Vec<Value>> = vec![Vec::new(); subs.len()];
    let mut n = 0u64;
    while frames[0].is_empty() {
        assert!(killed_at.elapsed() < limit, "no node took over the ingest within {limit:?} of the holder's death");
        redis.publish("laravel_database_tick", &laravel("Tick", json!({"n": n})));
        n += 1;
        frames[0].extend(subs[0].0.recv_within(Duration::from_millis(100)));
    }
    eprintln!("cluster: the ingest flowed again {:?} after the kill", killed_at.elapsed());
    lease_holder(&survivors);
    // Five more after the takeover: each once, on both survivors.
    let last = n + 4;
    for k in n..=last {
        redis.publish("laravel_database_tick", &laravel("Tick", json!({"n": k})));
    }
    for (s, got) in subs.iter_mut().zip(&mut frames) {
        while got.last().is_none_or(|m| m["data"]["n"] != last) {
            got.push(s.0.recv());
        }
    }
    let end = survivors[0].publish_seq("tick", json!("end"));
    for (i, (s, got)) in subs.iter_mut().zip(&frames).enumerate() {
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=got.len() as u64).collect::<Vec<_>>(), "survivor {i}: {got:?}");
        let ns: Vec<u64> = got.iter().map(|m| m["data"]["n"].as_u64().unwrap()).collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "survivor {i}: a Tick twice or out of order: {ns:?}");
        assert_eq!(end, got.len() as u64 + 1, "survivor {i}: seqs were spent on duplicates");
        assert_eq!(s.message()["seq"], end);
    }
}

#[test]
fn presence_members_are_the_union_over_nodes_and_changes_reach_every_node_within_2_s() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 3, &[]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let ch = "presence-room";
    let member = |id: &str| format!(r#"{{"user_id":"{id}","user_info":{{"name":"{id}"}}}}"#);
    let expect = |p: &mut Pusher, who: &str, event: &str, d: Value| {
        let e = p.recv_within(PRESENCE_WITHIN).unwrap_or_else(|| panic!("{who}: no {event} within 2 s"));
        assert_eq!(e["event"], format!("pusher_internal:{event}"), "{who}: {e}");
        assert_eq!(e["channel"], ch, "{who}: {e}");
        assert_eq!(data(&e), d, "{who}");
    };
    let added = |id: &str| json!({"user_id": id, "user_info": {"name": id}});
    let removed = |id: &str| json!({"user_id": id});
    let mut alice_a = Pusher::connect(a.addr);
    assert_eq!(ids(&alice_a.subscribe(ch, Some(&member("alice")))), ["alice"]);
    let mut bob_b = Pusher::connect(b.addr);
    let reply = bob_b.subscribe(ch, Some(&member("bob")));
    assert_eq!(ids(&reply), ["alice", "bob"], "members on other nodes are listed");
    assert_eq!(data(&reply)["presence"]["hash"], json!({"alice": {"name": "alice"}, "bob": {"name": "bob"}}));
    expect(&mut alice_a, "alice on A", "member_added", added("bob"));
    let mut carol_c = Pusher::connect(c.addr);
    assert_eq!(ids(&carol_c.subscribe(ch, Some(&member("carol")))), ["alice", "bob", "carol"]);
    expect(&mut alice_a, "alice on A", "member_added", added("carol"));
    expect(&mut bob_b, "bob on B", "member_added", added("carol"));
    // Alice again, on C: one member in the union, nobody hears of it.
    let mut alice_c = Pusher::connect(c.addr);
    assert_eq!(ids(&alice_c.subscribe(ch, Some(&member("alice")))), ["alice", "bob", "carol"]);
    bob_b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": ch}}));
    expect(&mut alice_a, "alice on A", "member_removed", removed("bob"));
    expect(&mut carol_c, "carol on C", "member_removed", removed("bob"));
    expect(&mut alice_c, "alice on C", "member_removed", removed("bob"));
    // Alice's connection on A goes: she is still on C, so she stays a member.
    drop(alice_a);
    wait_for("A to see its connection close", Duration::from_secs(10), || a.metric("fanout_websockets") == Some(0.0));
    let mut dave_b = Pusher::connect(b.addr);
    assert_eq!(ids(&dave_b.subscribe(ch, Some(&member("dave")))), ["alice", "carol", "dave"]);
    expect(&mut carol_c, "carol on C", "member_added", added("dave"));
    expect(&mut alice_c, "alice on C", "member_added", added("dave"));
    // Her last connection goes: now she leaves, for every node.
    drop(alice_c);
    expect(&mut carol_c, "carol on C", "member_removed", removed("alice"));
    expect(&mut dave_b, "dave on B", "member_removed", removed("alice"));
    let mut eve_a = Pusher::connect(a.addr);
    assert_eq!(ids(&eve_a.subscribe(ch, Some(&member("eve")))), ["carol", "dave", "eve"]);
}

#[test]
fn a_node_stopped_gracefully_takes_its_presence_members_out_at_once() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2, &["--drain-window", "1"]);
    let mut watcher = Pusher::connect(nodes[0].addr);
    watcher.subscribe("presence-bye", Some(r#"{"user_id":"watcher"}"#));
    let mut leaving = Pusher::connect(nodes[1].addr);
    assert_eq!(ids(&leaving.subscribe("presence-bye", Some(r#"{"user_id":"leaving"}"#))), ["leaving", "watcher"]);
    let added = pusher_event(&mut watcher, PRESENCE_WITHIN, "member_added");
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    nodes[1].signal("TERM");
    // Closed within the drain window, then the change reaches the other node like any other;
    // the node timeout (30 s by default) is only for nodes that die without a goodbye.
    let within = Duration::from_secs(1) + PRESENCE_WITHIN;
    let removed = pusher_event(&mut watcher, within, "member_removed after a graceful stop");
    assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
    assert_eq!(data(&removed), json!({"user_id": "leaving"}));
}

#[test]
fn clusters_with_different_prefixes_share_one_redis_without_seeing_each_other() {
    let redis = Redis::start();
    let one = cluster(&redis, 2, &[]);
    let other = cluster(&redis, 1, &["--redis-prefix", "other"]);
    let mut in_one = Native::connect(one[1].addr);
    in_one.subscribe("news");
    let mut in_other = Native::connect(other[0].addr);
    in_other.subscribe("news");
    assert_eq!(one[0].publish_seq("news", json!("one")), 1);
    assert_eq!(in_one.message()["data"], "one");
    assert_eq!(other[0].publish_seq("news", json!("other")), 1, "the other cluster has its own seqs");
    assert_eq!(in_other.message(), json!({"op": "message", "channel": "news", "seq": 1, "data": "other"}));
    assert_eq!(one[0].publish_seq("news", json!("one again")), 2);
    assert_eq!(in_one.message()["seq"], 2, "nothing of the other cluster came in between");
}

#[test]
fn redis_settings_come_from_the_environment_and_the_file_too() {
    let redis = Redis::start();
    let url = format!("{}/3", redis.url());
    let mut from_env = node::command(&[]);
    from_env.env("FANOUT_REDIS_URL", &url).env("FANOUT_REDIS_PREFIX", "envfile");
    let from_env = Node::spawn(from_env);
    let dir = std::env::temp_dir().join(format!("fanout-cluster-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("redis.toml");
    std::fs::write(&file, format!("redis_url = \"{url}\"\nredis_prefix = \"envfile\"\n")).unwrap();
    let from_file = Node::start(&["--config".into(), file.to_str().unwrap().into()]);
    for node in [&from_env, &from_file] {
        node.wait_redis("up", LINK_WITHIN);
    }
    let mut sub = Native::connect(from_env.addr);
    sub.subscribe("news");
    assert_eq!(from_file.publish_seq("news", json!("x")), 1);
    assert_eq!(sub.message()["data"], "x", "one cluster: the same URL and prefix");
    // The database of the URL holds the cluster's keys; database 0 holds none.
    let in_db = |db: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        redis::write_command(&mut stream, &["SELECT", db]).unwrap();
        redis::write_command(&mut stream, &["DBSIZE"]).unwrap();
        let mut reader = std::io::BufReader::new(stream);
        assert_eq!(redis::read_reply(&mut reader).unwrap(), redis::Resp::Simple("OK".into()));
        match redis::read_reply(&mut reader).unwrap() {
            redis::Resp::Int(n) => n,
            other => panic!("DBSIZE: {other:?}"),
        }
    };
    assert!(in_db("3") > 0, "no key in database 3");
    assert_eq!(in_db("0"), 0, "keys in database 0");
}

#[test]
fn without_a_redis_url_nothing_changes() {
    let node = Node::start(&[]);
    assert_eq!(node.healthz(), (200, json!({"status": "ok"})), "no redis field");
    let mut sub = Native::connect(node.addr);
    sub.subscribe("news");
    assert_eq!(node.publish_seq("news", json!(1)), 1);
    assert_eq!(sub.message(), json!({"op": "message", "channel": "news", "seq": 1, "data": 1}));
}

#[test]
fn after_redis_lost_its_data_presence_is_counted_again_from_the_connections_still_open() {
    let mut redis = Redis::start();
    let nodes = cluster(&redis, 2, &[]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let ch = "presence-lobby";
    let member = |id: &str| format!(r#"{{"user_id":"{id}","user_info":null}}"#);
    let mut alice_a = Pusher::connect(a.addr);
    assert_eq!(ids(&alice_a.subscribe(ch, Some(&member("alice")))), ["alice"]);
    redis.restart(); // no persistence: every member, count and epoch is gone
    a.wait_redis("up", LINK_WITHIN);
    b.wait_redis("up", LINK_WITHIN);
    // Node A counts Alice again once it is back; Bob, joining on B, sees her in the union.
    let mut listed = Vec::new();
    wait_for("Alice counted again in Redis", Duration::from_secs(10), || {
        let mut bob_b = Pusher::connect(b.addr);
        listed = ids(&bob_b.subscribe(ch, Some(&member("bob"))));
        listed.contains(&"alice".to_owned())
    });
    assert_eq!(listed, ["alice", "bob"]);
}

/// A Pusher client of the webhook app (`hook-key`, second in the apps list), on a presence or
/// a public channel.
fn hook_member(node: &Node, channel: &str, user: Option<&str>) -> clients::Json {
    use fanout_gateway::pusher::signature::sign;
    let mut json = clients::Json::connect(node.addr, "/app/hook-key?protocol=7");
    let socket_id = data(&json.recv())["socket_id"].as_str().expect("socket_id").to_owned();
    let mut d = json!({"channel": channel});
    if let Some(user) = user {
        let channel_data = format!(r#"{{"user_id":"{user}"}}"#);
        d["auth"] =
            format!("hook-key:{}", sign("hook-secret", &format!("{socket_id}:{channel}:{channel_data}"))).into();
        d["channel_data"] = channel_data.into();
    }
    json.send(json!({"event": "pusher:subscribe", "data": d}));
    let reply = json.recv();
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded", "{reply}");
    json
}

#[test]
fn webhooks_are_sent_once_per_cluster_by_the_node_that_decided() {
    let (hook_addr, hooks) = receiver::receiver();
    let dir = std::env::temp_dir().join(format!("fanout-cluster-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hooks.toml");
    let app = format!(
        "[[pusher.apps]]\nid = \"2\"\nkey = \"hook-key\"\nsecret = \"hook-secret\"\nwebhook_url = \"http://{hook_addr}/hook\"\n"
    );
    std::fs::write(&file, app).unwrap();
    let redis = Redis::start();
    let nodes = cluster(&redis, 2, &["--config", file.to_str().unwrap()]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let ch = "presence-hooks";
    let alice = hook_member(a, ch, Some("alice"));
    let bob = hook_member(b, ch, Some("bob"));
    drop((alice, bob));
    // Markers: one more channel occupied on each node. Each node sends its webhooks in order,
    // so once both markers are in, a duplicate from either node would have come before.
    let (_marker_a, _marker_b) = (hook_member(a, "marker-a", None), hook_member(b, "marker-b", None));
    let mut events: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = |events: &[Value], name: &str, channel: &str| {
        events.iter().filter(|e| e["name"] == name && e["channel"] == channel).count()
    };
    while seen(&events, "channel_occupied", "marker-a") == 0
        || seen(&events, "channel_occupied", "marker-b") == 0
        || seen(&events, "channel_vacated", ch) == 0
        || seen(&events, "member_removed", ch) < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let hook = hooks.recv_timeout(left).unwrap_or_else(|_| panic!("webhooks so far: {events:?}"));
        let key = hook.headers.iter().find(|(n, _)| n == "x-pusher-key").map(|(_, v)| v.as_str());
        assert_eq!(key, Some("hook-key"), "sent for the app that has the webhook");
        let body: Value = serde_json::from_str(&hook.body).unwrap();
        events.extend(body["events"].as_array().unwrap().iter().cloned());
    }
    let names = |name: &str| {
        let mut users: Vec<String> = events
            .iter()
            .filter(|e| e["name"] == name && e["channel"] == ch)
            .map(|e| e["user_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        users.sort();
        users
    };
    assert_eq!(seen(&events, "channel_occupied", ch), 1, "one channel_occupied for the cluster: {events:?}");
    assert_eq!(seen(&events, "channel_vacated", ch), 1, "one channel_vacated for the cluster: {events:?}");
    assert_eq!(names("member_added"), ["alice", "bob"], "{events:?}");
    assert_eq!(names("member_removed"), ["alice", "bob"], "{events:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unsubscribe_while_a_resume_is_checked_in_redis_stands() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 1, &[]);
    let a = &nodes[0];
    let mut first = Native::connect(a.addr);
    let epoch = epoch(&first.subscribe("held"));
    assert_eq!(a.publish_seq("held", json!(1)), 1);
    first.message();
    // Redis answers nothing while stopped: the resume's epoch check stays out.
    redis.signal("STOP");
    let mut resumer = Native::connect(a.addr);
    resumer.0.send(json!({"op": "subscribe", "channel": "held", "since": 0, "epoch": epoch}));
    resumer.0.send(json!({"op": "unsubscribe", "channel": "held"}));
    let reply = resumer.0.recv();
    assert_eq!(reply["op"], "unsubscribed", "{reply}");
    redis.signal("CONT");
    // Once the check is answered, a publish reaches the other subscriber and not this one.
    assert_eq!(a.publish_seq("held", json!(2)), 2);
    assert_eq!(first.message()["seq"], 2);
    let after = resumer.0.recv_within(Duration::from_millis(500));
    assert!(after.is_none(), "nothing after unsubscribed: {after:?}");
}
