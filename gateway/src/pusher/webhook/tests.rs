//! The webhook sender's tests, against a tiny HTTP receiver on 127.0.0.1:0 run by each test.
//!
//! Owns: nothing but tests. Invariants: they wait on channels (the receiver reports each request
//! before answering it, and `stop` joins the sender thread), never on sleeps; batching is made
//! deterministic by count (`max_batch_events`) except in the one test that is about the window.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// What the test receiver answers to one request, in order.
enum Reply {
    Status(u16),
    /// Hold the request unanswered until the sender side of this channel sends or is dropped,
    /// then answer 200.
    Stall(Receiver<()>),
}

/// One request as the receiver read it.
#[derive(Debug)]
struct Got {
    head: String,
    key: String,
    signature: String,
    content_type: String,
    body: serde_json::Value,
    raw_body: Vec<u8>,
}

/// A tiny HTTP server on 127.0.0.1:0 answering one connection per `Reply`, then ending.
/// Every request it reads is sent on the returned channel before it is answered.
fn receiver(replies: Vec<Reply>) -> (String, Receiver<Got>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/pusher", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for reply in replies {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            reader.read_line(&mut head).unwrap();
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let Some((name, value)) = line.trim_end().split_once(':') else { break };
                headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
            }
            let length: usize = headers["content-length"].parse().unwrap();
            let mut raw_body = vec![0; length];
            reader.read_exact(&mut raw_body).unwrap();
            let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
            let got = Got {
                head: head.trim_end().to_string(),
                key: header("x-pusher-key"),
                signature: header("x-pusher-signature"),
                content_type: header("content-type"),
                body: serde_json::from_slice(&raw_body).unwrap(),
                raw_body,
            };
            let _ = tx.send(got);
            let status = match reply {
                Reply::Status(status) => status,
                Reply::Stall(release) => {
                    let _ = release.recv();
                    200
                }
            };
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = (&stream).write_all(answer.as_bytes());
        }
    });
    (url, rx)
}

fn target(url: &str, events: &[&str]) -> Arc<WebhookTarget> {
    Arc::new(WebhookTarget {
        url: url.into(),
        app_key: "app-key".into(),
        app_secret: "app-secret".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
    })
}

/// Settings where batching depends on counts, not on time: a batch goes when it is full.
fn by_count(max_batch_events: usize) -> WebhookSettings {
    WebhookSettings {
        batch_window: Duration::from_secs(60),
        max_batch_events,
        request_timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(5),
        ..WebhookSettings::default()
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn a_batch_has_the_pusher_shape_headers_and_signature() {
    let (url, got) = receiver(vec![Reply::Status(200)]);
    let hooks = Webhooks::start(by_count(6));
    let t = target(&url, &[]);
    let before = now_ms();
    hooks.send(&t, WebhookEvent::channel_occupied("presence-room"));
    hooks.send(&t, WebhookEvent::member_added("presence-room", "u1"));
    hooks.send(&t, WebhookEvent::client_event("presence-room", "client-typing", r#"{"a":1}"#, "1.2", Some("u1")));
    hooks.send(&t, WebhookEvent::client_event("private-x", "client-typing", "{}", "3.4", None));
    hooks.send(&t, WebhookEvent::member_removed("presence-room", "u1"));
    hooks.send(&t, WebhookEvent::channel_vacated("presence-room"));
    let got = got.recv_timeout(WAIT).expect("one request with the six events");
    let after = now_ms();

    assert_eq!(got.head, "POST /hooks/pusher HTTP/1.1");
    assert_eq!(got.content_type, "application/json");
    assert_eq!(got.key, "app-key");
    assert_eq!(got.signature, webhook_signature("app-secret", &got.raw_body));
    let time_ms = got.body["time_ms"].as_u64().unwrap();
    assert!((before..=after).contains(&time_ms), "{before} <= {time_ms} <= {after}");
    assert_eq!(
        got.body["events"],
        serde_json::json!([
            {"name": "channel_occupied", "channel": "presence-room"},
            {"name": "member_added", "channel": "presence-room", "user_id": "u1"},
            {"name": "client_event", "channel": "presence-room", "event": "client-typing",
             "data": "{\"a\":1}", "socket_id": "1.2", "user_id": "u1"},
            {"name": "client_event", "channel": "private-x", "event": "client-typing", "data": "{}",
             "socket_id": "3.4"},
            {"name": "member_removed", "channel": "presence-room", "user_id": "u1"},
            {"name": "channel_vacated", "channel": "presence-room"},
        ])
    );
    hooks.stop();
    let m = hooks.metrics();
    assert_eq!((m.sent_batches, m.failed_batches, m.retries, m.dropped, m.queued), (1, 0, 0, 0, 0));
}

#[test]
fn two_quick_events_go_in_one_request_when_the_window_closes() {
    let (url, got) = receiver(vec![Reply::Status(200)]);
    let settings = WebhookSettings { batch_window: Duration::from_millis(300), ..by_count(100) };
    let hooks = Webhooks::start(settings);
    let t = target(&url, &[]);
    hooks.send(&t, WebhookEvent::channel_occupied("a"));
    hooks.send(&t, WebhookEvent::cache_miss("cache-b"));
    let got = got.recv_timeout(WAIT).expect("the window's batch");
    let names: Vec<_> = got.body["events"].as_array().unwrap().iter().map(|e| e["name"].clone()).collect();
    assert_eq!(names, ["channel_occupied", "cache_miss"]);
    hooks.stop();
    assert_eq!(hooks.metrics().sent_batches, 1);
}

#[test]
fn a_target_gets_only_the_events_it_asked_for() {
    let (url, got) = receiver(vec![Reply::Status(200)]);
    let hooks = Webhooks::start(by_count(2));
    let t = target(&url, &["member_added", "member_removed"]);
    for event in [
        WebhookEvent::channel_occupied("presence-r"),
        WebhookEvent::member_added("presence-r", "u1"),
        WebhookEvent::client_event("presence-r", "client-x", "{}", "1.1", Some("u1")),
        WebhookEvent::member_removed("presence-r", "u1"),
        WebhookEvent::channel_vacated("presence-r"),
    ] {
        hooks.send(&t, event);
    }
    let got = got.recv_timeout(WAIT).expect("the member events");
    let names: Vec<_> = got.body["events"].as_array().unwrap().iter().map(|e| e["name"].clone()).collect();
    assert_eq!(names, ["member_added", "member_removed"]);
    hooks.stop();
    let m = hooks.metrics();
    assert_eq!((m.sent_batches, m.dropped, m.queued), (1, 0, 0), "the others were never queued");
}

#[test]
fn a_500_is_retried_with_the_same_body_then_succeeds() {
    let (url, got) = receiver(vec![Reply::Status(500), Reply::Status(200)]);
    let hooks = Webhooks::start(by_count(1));
    hooks.send(&target(&url, &[]), WebhookEvent::channel_occupied("a"));
    let first = got.recv_timeout(WAIT).expect("the first attempt");
    let second = got.recv_timeout(WAIT).expect("the retry");
    assert_eq!(first.raw_body, second.raw_body);
    assert_eq!(first.signature, second.signature);
    hooks.stop();
    let m = hooks.metrics();
    assert_eq!((m.sent_batches, m.retries, m.failed_batches, m.queued), (1, 1, 0, 0));
}

#[test]
fn a_batch_is_given_up_after_its_retries_and_the_next_one_follows_in_order() {
    let replies = vec![Reply::Status(500), Reply::Status(503), Reply::Status(404), Reply::Status(200)];
    let (url, got) = receiver(replies);
    let hooks = Webhooks::start(WebhookSettings { retries: 2, ..by_count(1) });
    let t = target(&url, &[]);
    hooks.send(&t, WebhookEvent::channel_occupied("first"));
    hooks.send(&t, WebhookEvent::channel_occupied("second"));
    let channels: Vec<_> =
        (0..4).map(|_| got.recv_timeout(WAIT).expect("a request").body["events"][0]["channel"].clone()).collect();
    assert_eq!(channels, ["first", "first", "first", "second"]);
    hooks.stop();
    let m = hooks.metrics();
    assert_eq!((m.sent_batches, m.failed_batches, m.retries, m.queued), (1, 1, 2, 0));
}

#[test]
fn a_full_queue_drops_and_counts_and_a_hanging_receiver_never_blocks_send() {
    let (release, stall) = mpsc::channel();
    let (url, got) = receiver(vec![Reply::Stall(stall), Reply::Status(200), Reply::Status(200)]);
    let hooks = Webhooks::start(WebhookSettings { queue_capacity: 3, ..by_count(1) });
    let t = target(&url, &[]);
    hooks.send(&t, WebhookEvent::channel_occupied("0"));
    got.recv_timeout(WAIT).expect("the first request, now stalled");

    let started = Instant::now();
    for i in 1..=1000 {
        hooks.send(&t, WebhookEvent::channel_occupied(&i.to_string()));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "1000 sends took {took:?} while the receiver hangs");
    let m = hooks.metrics();
    assert_eq!((m.queued, m.dropped, m.sent_batches), (3, 998, 0));

    release.send(()).unwrap();
    let later: Vec<_> =
        (0..2).map(|_| got.recv_timeout(WAIT).expect("a queued event").body["events"][0]["channel"].clone()).collect();
    assert_eq!(later, ["1", "2"]);
    hooks.stop();
    let m = hooks.metrics();
    assert_eq!((m.queued, m.dropped, m.sent_batches, m.failed_batches), (0, 998, 3, 0));
}

#[test]
fn a_hanging_endpoint_costs_one_timeout_and_stop_is_bounded() {
    let (_release, stall) = mpsc::channel::<()>();
    let (url, got) = receiver(vec![Reply::Stall(stall)]);
    let settings = WebhookSettings {
        request_timeout: Duration::from_millis(200),
        retries: 5,
        backoff: Duration::from_secs(30),
        stop_timeout: Duration::from_millis(300),
        ..by_count(1)
    };
    let hooks = Webhooks::start(settings);
    hooks.send(&target(&url, &[]), WebhookEvent::channel_occupied("a"));
    got.recv_timeout(WAIT).expect("the request reached the endpoint");
    let started = Instant::now();
    hooks.stop();
    assert!(started.elapsed() < Duration::from_secs(5), "stop took {:?}", started.elapsed());
    let m = hooks.metrics();
    assert_eq!((m.sent_batches, m.failed_batches, m.queued), (0, 1, 0));
    hooks.send(&target(&url, &[]), WebhookEvent::channel_occupied("late"));
    assert_eq!(hooks.metrics().dropped, 1, "a send after stop is dropped and counted");
    hooks.stop();
}

#[test]
fn stop_flushes_an_open_batch_and_a_dropped_handle_ends_the_thread() {
    let (url, got) = receiver(vec![Reply::Status(200), Reply::Status(204)]);
    let hooks = Webhooks::start(by_count(100));
    let t = target(&url, &[]);
    hooks.send(&t, WebhookEvent::channel_occupied("a"));
    hooks.stop();
    assert_eq!(got.try_recv().expect("flushed by stop").body["events"][0]["channel"], "a");
    assert_eq!(hooks.metrics().sent_batches, 1);

    let hooks = Webhooks::start(by_count(100));
    hooks.clone().send(&t, WebhookEvent::channel_vacated("b"));
    drop(hooks);
    assert_eq!(got.recv_timeout(WAIT).expect("flushed on drop").body["events"][0]["channel"], "b");
}

#[test]
fn targets_batch_apart_and_urls_are_checked() {
    let (url_a, got_a) = receiver(vec![Reply::Status(200)]);
    let (url_b, got_b) = receiver(vec![Reply::Status(200)]);
    let hooks = Webhooks::start(by_count(2));
    let (a, b) = (target(&url_a, &[]), target(&url_b, &[]));
    for (t, name) in [(&a, "a1"), (&b, "b1"), (&a, "a2"), (&b, "b2")] {
        hooks.send(t, WebhookEvent::channel_occupied(name));
    }
    let channels =
        |got: Got| got.body["events"].as_array().unwrap().iter().map(|e| e["channel"].clone()).collect::<Vec<_>>();
    assert_eq!(channels(got_a.recv_timeout(WAIT).unwrap()), ["a1", "a2"]);
    assert_eq!(channels(got_b.recv_timeout(WAIT).unwrap()), ["b1", "b2"]);
    hooks.stop();

    for (url, ok) in [
        ("http://127.0.0.1:9/x", true),
        ("http://hooks.example", true),
        ("https://h/x", false),
        ("http:///x", false),
        ("ftp://h", false),
    ] {
        assert_eq!(target(url, &[]).check_url().is_ok(), ok, "{url}");
    }
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Webhooks>();
}
