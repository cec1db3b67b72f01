//! Acting on a running server from threads that are no worker: `Remote` (publish, send, close,
//! subscribe by `ConnId`, in the order one thread made them), and HTTP responses deferred by
//! `on_request` and given later from another thread (`Ctx::defer`, `Pending`).

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use fanout::{
    CloseCode, Config, ConnId, Ctx, Handler, Message, Pending, Reject, Remote, Request, Response, Server, ServerHandle,
};

/// What the handler saw, for the test to wait on.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Open(ConnId),
    Close(ConnId, u16, String),
    /// A plain request was deferred (its target).
    Deferred(String),
}

/// Subscribes a connection to `T` when it opens on `/sub/T`; on the message `later`, hands its
/// `Remote` to a thread of its own that answers `from a thread`. Plain requests are deferred:
/// `/defer` is answered by a thread of its own with the next text the test releases, `/drop`
/// is dropped by one, `/now` is answered at once through its `Pending`, and `/hold` hands its
/// `Pending` to the test.
struct App {
    events: mpsc::Sender<Event>,
    release: Arc<Mutex<mpsc::Receiver<String>>>,
    held: mpsc::Sender<Pending>,
}

impl Handler for App {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, req: &Request<'_>) -> Result<(), Reject> {
        if let Some(topic) = req.path().strip_prefix("/sub/") {
            ctx.subscribe(id, topic);
        }
        let _ = self.events.send(Event::Open(id));
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), message: Message) {
        if message.as_text() == Some("later") {
            let remote = ctx.remote();
            thread::spawn(move || remote.send_text(id, "from a thread"));
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_>, id: ConnId, _: (), code: CloseCode, reason: &str) {
        let _ = self.events.send(Event::Close(id, code.get(), reason.to_owned()));
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
        let pending = ctx.defer();
        match request.path() {
            "/defer" => {
                let release = self.release.clone();
                thread::spawn(move || {
                    let body = release.lock().unwrap().recv().expect("the test releases it");
                    pending.respond(Response::text(200, body));
                });
            }
            "/drop" => drop(thread::spawn(move || drop(pending))),
            "/now" => pending.respond(Response::text(200, "at once")),
            _ => self.held.send(pending).unwrap(),
        }
        let _ = self.events.send(Event::Deferred(request.target().to_owned()));
        Response::text(404, "discarded, since the request was deferred")
    }
}

/// A running `App` and the test's ends of its channels.
struct Test {
    server: ServerHandle,
    events: mpsc::Receiver<Event>,
    release: mpsc::Sender<String>,
    held: mpsc::Receiver<Pending>,
}

fn start_with(config: Config) -> Test {
    let (events_tx, events) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (held_tx, held) = mpsc::channel();
    let channels = Mutex::new((events_tx, held_tx));
    let release_rx = Arc::new(Mutex::new(release_rx));
    let server = Server::new(config)
        .start(move || {
            let (events, held) = channels.lock().unwrap().clone();
            App { events, release: release_rx.clone(), held }
        })
        .expect("server starts");
    Test { server, events, release, held }
}

fn start(workers: usize) -> (ServerHandle, mpsc::Receiver<Event>) {
    let t = start_with(Config { workers, ..test_config() });
    // Nothing here makes plain requests, so the other channels may close.
    (t.server, t.events)
}

impl Test {
    /// Waits until the handler has deferred the request for `target`.
    fn deferred(&self, target: &str) {
        match self.events.recv_timeout(IO_TIMEOUT).expect("a deferred request") {
            Event::Deferred(t) => assert_eq!(t, target),
            other => panic!("expected {target} to be deferred, got {other:?}"),
        }
    }
}

/// The body of an HTTP response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").expect("a head").1
}

/// Upgrades a client to `path` and returns it with the id its `on_open` saw (the 101 goes out
/// after `on_open` returned, so the event is already there).
fn open(server: &ServerHandle, events: &mpsc::Receiver<Event>, path: &str) -> (RawClient, ConnId) {
    let client = RawClient::connect(server.local_addr(), path);
    match events.recv_timeout(IO_TIMEOUT).expect("open event") {
        Event::Open(id) => (client, id),
        other => panic!("expected an open, got {other:?}"),
    }
}

/// Clients on one worker and on the other, with their ids.
type Pair = [(RawClient, ConnId); 2];

/// Opens clients to `path` until there is one on each of the 2 workers; returns them and the
/// others (kept open by the caller, so that the kernel's spreading stays as it was).
fn one_on_each_worker(server: &ServerHandle, events: &mpsc::Receiver<Event>, path: &str) -> (Pair, Vec<RawClient>) {
    let (mut on, mut extra) = ([None, None], Vec::new());
    for _ in 0..64 {
        let (client, id) = open(server, events, path);
        match &mut on[id.worker()] {
            slot @ None => *slot = Some((client, id)),
            Some(_) => extra.push(client),
        }
        if on.iter().all(Option::is_some) {
            return (on.map(Option::unwrap), extra);
        }
    }
    panic!("64 connections all landed on one worker");
}

#[test]
fn remote_is_send_sync_and_clone_and_pending_is_send() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    fn sent<T: Send + 'static>() {}
    shared::<Remote>();
    sent::<Pending>();
}

#[test]
fn a_publish_from_a_thread_reaches_subscribers_on_both_workers() {
    let (server, events) = start(2);
    let ([(mut a, _), (mut b, _)], mut extra) = one_on_each_worker(&server, &events, "/sub/news");
    let remote = server.remote();
    assert_eq!(remote.workers(), 2);
    thread::spawn(move || remote.publish("news", Message::Text("extra! extra!".into()))).join().unwrap();
    for client in [&mut a, &mut b].into_iter().chain(&mut extra) {
        assert_eq!(text(client), "extra! extra!");
    }
    assert_eq!(server.stats().deliveries, 2 + extra.len() as u64);
    assert_eq!(server.stats().publishes, 0, "a remote publish is counted on no worker");
}

#[test]
fn send_from_a_thread_reaches_one_connection_of_either_worker() {
    let (server, events) = start(2);
    let ([(mut a, a_id), (mut b, b_id)], _extra) = one_on_each_worker(&server, &events, "/");
    let remote = server.remote();
    thread::spawn(move || {
        remote.send_text(b_id, "to b");
        remote.send(a_id, Message::Binary(vec![1, 2, 3].into()));
    })
    .join()
    .unwrap();
    assert_eq!(text(&mut b), "to b");
    let frame = a.recv_frame();
    assert_eq!((frame.opcode, &frame.payload[..]), (fanout::proto::frame::OpCode::Binary, &[1u8, 2, 3][..]));

    // A handler hands its own `Remote` to a thread.
    say(&mut a, "later");
    assert_eq!(text(&mut a), "from a thread");
}

#[test]
fn send_subscribe_publish_from_one_thread_arrive_in_that_order() {
    let (server, events) = start(2);
    // Three clients, so two share a worker: `member` is subscribed from the start, `late`
    // joins in the middle, and a publish made before that must reach only `member`.
    let mut clients: Vec<(RawClient, ConnId)> = (0..3).map(|_| open(&server, &events, "/")).collect();
    let (i, j) = [(0, 1), (0, 2), (1, 2)]
        .into_iter()
        .find(|&(i, j)| clients[i].1.worker() == clients[j].1.worker())
        .expect("two of three share a worker");
    let (mut late, late_id) = clients.remove(j);
    let (mut member, member_id) = clients.remove(i);
    let remote = server.remote();
    thread::spawn(move || {
        remote.subscribe(member_id, "t");
        remote.publish("t", Message::Text("before".into()));
        remote.send_text(late_id, "replay");
        remote.subscribe(late_id, "t");
        remote.publish("t", Message::Text("live".into()));
        remote.unsubscribe(late_id, "t");
        remote.publish("t", Message::Text("after".into()));
        remote.send_text(late_id, "end");
    })
    .join()
    .unwrap();
    assert_eq!([text(&mut member), text(&mut member), text(&mut member)], ["before", "live", "after"]);
    assert_eq!([text(&mut late), text(&mut late), text(&mut late)], ["replay", "live", "end"]);
}

#[test]
fn close_from_a_thread_closes_with_its_code_and_draining_follows_the_stop() {
    let (server, events) = start(2);
    let ([(mut a, a_id), _b], _extra) = one_on_each_worker(&server, &events, "/");
    let remote = server.remote();
    let closer = remote.clone();
    thread::spawn(move || closer.close(a_id, CloseCode::new(4001), "from afar")).join().unwrap();
    assert_eq!(a.recv_close(), (4001, "from afar".to_owned()));
    let closed = events.iter().find(|e| matches!(e, Event::Close(id, ..) if *id == a_id)).expect("close event");
    assert_eq!(closed, Event::Close(a_id, 4001, "from afar".to_owned()));

    assert!(!remote.draining());
    server.shutdown();
    assert!(remote.draining());
}

#[test]
fn a_deferred_response_comes_from_another_thread_when_released() {
    let t = start_with(Config { workers: 2, ..test_config() });
    let mut c = RawClient::connect_tcp(t.server.local_addr());
    c.send_raw(b"GET /defer?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    t.deferred("/defer?n=1");
    t.release.send("released".into()).unwrap();
    let response = String::from_utf8(c.read_to_eof()).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Connection: close"), "{response}");
    assert_eq!(body(&response), "released");
    assert_eq!(t.server.stats().http_deferred, 1);
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let t = start_with(Config { workers: 2, ..test_config() });
    let mut c = RawClient::connect_tcp(t.server.local_addr());
    c.send_raw(b"GET /defer?n=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /defer?n=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    t.deferred("/defer?n=1");
    // The second request waits, unparsed, until the first is answered.
    assert!(t.events.try_recv().is_err(), "the second request was read before the first was answered");
    t.release.send("one".into()).unwrap();
    let first = c.read_head();
    assert!(first.starts_with("HTTP/1.1 200") && first.contains("keep-alive"), "{first}");
    assert_eq!(body(&first), "one");
    t.deferred("/defer?n=2");
    t.release.send("two".into()).unwrap();
    assert_eq!(body(&c.read_head()), "two");
    // Still kept alive: a third request on the same connection.
    c.send_raw(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(body(&c.read_head()), "at once");
}

#[test]
fn a_pending_dropped_unanswered_sends_500() {
    let t = start_with(Config { workers: 2, ..test_config() });
    let response = http_exchange(t.server.local_addr(), b"GET /drop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert_eq!(body(&response), "no response");
}

#[test]
fn a_deferred_request_not_answered_in_time_is_closed_and_a_late_answer_dropped() {
    let t = start_with(Config { workers: 1, handshake_timeout: Duration::from_millis(300), ..test_config() });
    let mut c = RawClient::connect_tcp(t.server.local_addr());
    c.send_raw(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    let pending = t.held.recv_timeout(IO_TIMEOUT).expect("the handler hands over its Pending");
    assert!(c.read_to_eof().is_empty(), "closed without a response");
    wait_until("the timeout counted", IO_TIMEOUT, || t.server.stats().http_deferred_timeouts == 1);
    pending.respond(Response::text(200, "too late")); // dropped by the worker; nothing breaks
                                                      // The server still answers.
    let response = http_exchange(t.server.local_addr(), b"GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(body(&response), "at once");
}
