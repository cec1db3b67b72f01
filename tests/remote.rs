//! Acting on a running server from threads that are no worker: `Remote` (publish, send, close,
//! subscribe by `ConnId`, in the order one thread made them).

mod common;

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use common::*;
use fanout::{CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Remote, Request, Server, ServerHandle};

/// What the handler saw, for the test to wait on.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Open(ConnId),
    Close(ConnId, u16, String),
}

/// Subscribes a connection to `T` when it opens on `/sub/T`; on the message `later`, hands its
/// `Remote` to a thread of its own that answers `from a thread`.
struct App {
    events: mpsc::Sender<Event>,
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
}

fn start(workers: usize) -> (ServerHandle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Server::new(Config { workers, ..test_config() })
        .start(move || App { events: tx.lock().unwrap().clone() })
        .expect("server starts");
    (server, rx)
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
fn remote_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Remote>();
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
