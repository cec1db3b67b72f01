//! Library pub/sub over real sockets: topics, batching into one write per subscriber per turn,
//! broadcast, and the slow-consumer policies.

mod common;

use std::time::Duration;

use common::*;
use fanout::proto::frame::OpCode;
use fanout::{
    CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Request, Server, ServerHandle, SlowConsumerPolicy,
};

/// Text commands: `sub:T`, `unsub:T`, `pub:T:payload`, `burst:T:N` (N publishes in one
/// callback), `bcast:payload`, `big:T:N` (a binary publish of N bytes).
struct App;

impl Handler for App {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), m: Message) {
        let text = m.as_text().unwrap_or_default().to_owned();
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("sub"), Some(t), None) => {
                ctx.subscribe(id, t);
                ctx.send_text(id, "ok");
            }
            (Some("unsub"), Some(t), None) => {
                ctx.unsubscribe(id, t);
                ctx.send_text(id, "ok");
            }
            (Some("pub"), Some(t), Some(p)) => ctx.publish_text(t, p),
            (Some("burst"), Some(t), Some(n)) => {
                for i in 0..n.parse::<u32>().unwrap() {
                    ctx.publish_text(t, &format!("{t}-{i}"));
                }
            }
            (Some("big"), Some(t), Some(n)) => ctx.publish(t, Message::Binary(vec![7u8; n.parse().unwrap()].into())),
            (Some("bcast"), Some(p), None) => ctx.broadcast(Message::Text(p.to_owned().into())),
            _ => ctx.send_text(id, "?"),
        }
    }
}

fn start(config: Config) -> ServerHandle {
    Server::new(config).start(|| App).unwrap()
}

fn subscribed(server: &ServerHandle, topic: &str) -> RawClient {
    let mut c = RawClient::connect(server.local_addr(), "/");
    say(&mut c, &format!("sub:{topic}"));
    assert_eq!(text(&mut c), "ok");
    c
}

#[test]
fn publishes_reach_subscribers_of_the_topic_only() {
    let server = start(test_config());
    let mut news = subscribed(&server, "news");
    let mut sport = subscribed(&server, "sport");
    let mut publisher = RawClient::connect(server.local_addr(), "/");
    say(&mut publisher, "pub:news:first");
    say(&mut publisher, "pub:sport:goal");
    assert_eq!(text(&mut news), "first");
    assert_eq!(text(&mut sport), "goal");
    say(&mut news, "unsub:news");
    assert_eq!(text(&mut news), "ok");
    say(&mut publisher, "pub:news:second");
    say(&mut publisher, "bcast:everyone");
    assert_eq!(text(&mut news), "everyone", "unsubscribed: no 'second', only the broadcast");
    assert_eq!(text(&mut sport), "everyone");
    assert_eq!(text(&mut publisher), "everyone");
}

#[test]
fn a_burst_in_one_turn_reaches_each_subscriber_in_order_in_one_write() {
    let server = start(test_config());
    let mut subs: Vec<RawClient> = (0..10).map(|_| subscribed(&server, "t")).collect();
    let mut publisher = RawClient::connect(server.local_addr(), "/");
    let before = server.stats();
    say(&mut publisher, "burst:t:100");
    for s in &mut subs {
        for i in 0..100 {
            assert_eq!(text(s), format!("t-{i}"));
        }
    }
    let after = server.stats();
    assert_eq!(after.publishes - before.publishes, 100);
    assert_eq!(after.deliveries - before.deliveries, 1000);
    // 100 frames to each of 10 subscribers: one writev each (plus slack for a short write).
    let writes = after.writev_calls - before.writev_calls;
    assert!(writes <= 12, "{writes} writev calls for 10 subscribers");
}

#[test]
fn large_publishes_are_delivered_intact_between_small_ones() {
    let server = start(test_config());
    let mut sub = subscribed(&server, "big");
    let mut publisher = RawClient::connect(server.local_addr(), "/");
    say(&mut publisher, "pub:big:before");
    say(&mut publisher, "big:big:100000");
    say(&mut publisher, "pub:big:after");
    assert_eq!(text(&mut sub), "before");
    let f = sub.recv_frame();
    assert_eq!((f.opcode, f.payload.len()), (OpCode::Binary, 100_000));
    assert!(f.payload.iter().all(|&b| b == 7));
    assert_eq!(text(&mut sub), "after");
}

#[test]
fn a_subscriber_that_never_reads_is_closed_while_the_others_get_everything() {
    let config = Config { max_queued_bytes: 64 * 1024, close_timeout: Duration::from_secs(1), ..test_config() };
    let server = start(config);
    let stalled = subscribed(&server, "feed");
    let mut healthy = subscribed(&server, "feed");
    let mut publisher = RawClient::connect(server.local_addr(), "/");
    let payload = "x".repeat(1000);
    // 20,000 messages of 1 KB: far more than the stalled client's socket buffers and its cap.
    for round in 0..200 {
        for i in 0..100 {
            say(&mut publisher, &format!("pub:feed:{round}-{i}-{payload}"));
        }
        for i in 0..100 {
            assert!(text(&mut healthy).starts_with(&format!("{round}-{i}-")), "healthy got every message in order");
        }
    }
    assert_eq!(server.stats().slow_consumers, 1);
    wait_for_connections(&server, 2);
    drop(stalled);
}

#[test]
fn drop_policy_skips_frames_for_a_slow_subscriber_without_closing_it() {
    let config = Config { max_queued_bytes: 64 * 1024, slow_consumer: SlowConsumerPolicy::Drop, ..test_config() };
    let server = start(config);
    let mut stalled = subscribed(&server, "feed");
    let mut publisher = RawClient::connect(server.local_addr(), "/");
    let payload = "y".repeat(1000);
    for i in 0..20_000 {
        say(&mut publisher, &format!("pub:feed:{i}-{payload}"));
    }
    wait_until("frames dropped", IO_TIMEOUT, || server.stats().dropped_frames > 0);
    assert_eq!(server.stats().slow_consumers, 0);
    // The stalled subscriber is still open: it receives a gap-free prefix, then later frames.
    let first = text(&mut stalled);
    assert!(first.starts_with("0-"), "{}", &first[..10]);
    assert_eq!(server.stats().connections, 2);
}

/// Publishes "gone" to topic "t" from `on_close`.
struct Farewell;

impl Handler for Farewell {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), m: Message) {
        match m.as_text() {
            Some("sub") => {
                ctx.subscribe(id, "t");
                ctx.send_text(id, "ok");
            }
            _ => ctx.send_text(id, "x"),
        }
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, _: ConnId, _: (), _: CloseCode, _: &str) {
        ctx.publish_text("t", "gone");
    }
}

#[test]
fn a_publish_from_on_close_reaches_the_subscribers() {
    // No idle timeout, so no timer ticks: each "gone" must be delivered without one.
    let server = Server::new(Config { idle_timeout: Duration::ZERO, ..test_config() }).start(|| Farewell).unwrap();
    let mut listener = RawClient::connect(server.local_addr(), "/");
    say(&mut listener, "sub");
    assert_eq!(text(&mut listener), "ok");
    for _ in 0..5 {
        let mut leaver = RawClient::connect(server.local_addr(), "/");
        say(&mut leaver, "x");
        assert_eq!(text(&mut leaver), "x");
        // Reset without a close frame: the server may learn it from a read or from a flush.
        let _ = socket2::SockRef::from(&leaver.stream).set_linger(Some(Duration::ZERO));
        drop(leaver);
        assert_eq!(text(&mut listener), "gone");
    }
}
