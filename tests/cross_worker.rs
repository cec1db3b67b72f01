//! Acting on a connection of another worker, publishing to all but one connection, and the
//! application's own idle ping: the library support protocols such as Pusher need
//! (`Ctx::send` and `Ctx::close` for any `ConnId`, `Ctx::publish_except`, `Handler::on_idle`).

mod common;

use std::time::Duration;

use common::*;
use fanout::proto::frame::OpCode;
use fanout::{CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Request, Server, ServerClose, ServerHandle};

/// Text commands: `who` (answers `WORKER HIGH.LOW`), `sub:T`, `except:T:payload` (publish to T
/// but not to the sender), `send:HIGH.LOW:text`, `close:HIGH.LOW`.
struct App;

fn parse_id(s: &str) -> ConnId {
    let (high, low) = s.split_once('.').expect("HIGH.LOW");
    ConnId::from_parts(high.parse().unwrap(), low.parse().unwrap())
}

impl Handler for App {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), m: Message) {
        let text = m.as_text().unwrap_or_default().to_owned();
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("who"), None, None) => {
                let (high, low) = id.to_parts();
                assert_eq!(id.worker(), ctx.worker(), "a connection's id names its own worker");
                ctx.send_text(id, &format!("{} {high}.{low}", id.worker()));
            }
            (Some("sub"), Some(t), None) => {
                ctx.subscribe(id, t);
                ctx.send_text(id, "ok");
            }
            (Some("except"), Some(t), Some(p)) => ctx.publish_except(t, Message::Text(p.to_owned().into()), id),
            (Some("send"), Some(to), Some(p)) => ctx.send_text(parse_id(to), p),
            (Some("close"), Some(to), None) => ctx.close(parse_id(to), CloseCode::new(4000), "from afar"),
            _ => ctx.send_text(id, "?"),
        }
    }
    fn on_idle(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut ()) {
        ctx.send_text(id, "still there?");
    }
}

fn start(config: Config) -> ServerHandle {
    Server::new(config).start(|| App).unwrap()
}

/// Connects until there is one client on worker 0 and one on worker 1; returns them with
/// their ids, and the extra clients (kept open so the kernel's spreading stays as it was).
fn one_on_each_worker(server: &ServerHandle) -> ((RawClient, String), (RawClient, String), Vec<RawClient>) {
    let (mut first, mut second, mut extra) = (None, None, Vec::new());
    for _ in 0..64 {
        let mut c = RawClient::connect(server.local_addr(), "/");
        say(&mut c, "who");
        let answer = text(&mut c);
        let (worker, id) = answer.split_once(' ').unwrap();
        match (worker, &first, &second) {
            ("0", None, _) => first = Some((c, id.to_owned())),
            ("1", _, None) => second = Some((c, id.to_owned())),
            _ => extra.push(c),
        }
        if let (Some(_), Some(_)) = (&first, &second) {
            return (first.take().unwrap(), second.take().unwrap(), extra);
        }
    }
    panic!("64 connections all landed on one worker");
}

#[test]
fn send_and_close_reach_a_connection_of_another_worker() {
    let server = start(Config { workers: 2, ..test_config() });
    let ((mut a, a_id), (mut b, b_id), _extra) = one_on_each_worker(&server);
    say(&mut a, &format!("send:{b_id}:hello from worker 0"));
    assert_eq!(text(&mut b), "hello from worker 0");
    say(&mut b, &format!("send:{a_id}:and back"));
    assert_eq!(text(&mut a), "and back");
    say(&mut a, &format!("close:{b_id}"));
    assert_eq!(b.recv_close(), (4000, "from afar".to_string()));
    // An id that names no connection (a closed one, a made-up worker) is ignored.
    say(&mut a, &format!("send:{b_id}:too late"));
    say(&mut a, &format!("send:{}.1:nobody", 999u64 << 32));
    say(&mut a, "who");
    assert!(text(&mut a).starts_with("0 "), "a is unharmed and nothing else came back");
}

#[test]
fn publish_except_skips_only_the_sender_on_every_worker() {
    let server = start(Config { workers: 2, ..test_config() });
    let ((mut a, _), (mut b, _), extra) = one_on_each_worker(&server);
    let mut others: Vec<RawClient> = extra.into_iter().take(2).collect();
    for c in std::iter::once(&mut a).chain(std::iter::once(&mut b)).chain(others.iter_mut()) {
        say(c, "sub:room");
        assert_eq!(text(c), "ok");
    }
    say(&mut a, "except:room:from a");
    assert_eq!(text(&mut b), "from a", "the subscriber on the other worker gets it");
    for c in &mut others {
        assert_eq!(text(c), "from a");
    }
    // Had the publish reached a, it would come before the answer to this later request.
    say(&mut a, "who");
    assert!(text(&mut a).starts_with("0 "), "the sender never got its own publish");
    say(&mut b, "except:room:from b");
    assert_eq!(text(&mut a), "from b", "the sender's worker-mates get it too");
    say(&mut b, "who");
    assert!(text(&mut b).starts_with("1 "));
}

#[test]
fn on_idle_replaces_the_ping_and_an_answer_keeps_the_connection() {
    let server = start(Config { idle_timeout: Duration::from_secs(2), ..test_config() });
    let mut c = RawClient::connect(server.local_addr(), "/");
    let frame = c.recv_frame();
    assert_eq!((frame.opcode, &frame.payload[..]), (OpCode::Text, &b"still there?"[..]), "no WebSocket ping");
    say(&mut c, "who");
    assert!(text(&mut c).starts_with("0 "));
    assert_eq!(text(&mut c), "still there?", "the answer restarted the idle clock");
    let (code, _) = c.recv_close();
    assert_eq!(code, 1001, "silence after the idle call still closes");
}

/// Chooses its own codes for the closes the server makes itself.
struct OwnCodes;

impl Handler for OwnCodes {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &mut (), _: Message) {}
    fn on_server_close(&mut self, _: &(), why: ServerClose) -> (CloseCode, &'static str) {
        match why {
            ServerClose::IdleTimeout => (CloseCode::new(4201), "pong reply not received"),
            ServerClose::Stopping => (CloseCode::new(4200), "reconnect"),
            _ => why.default_close(),
        }
    }
}

#[test]
fn the_application_chooses_the_codes_of_the_closes_the_server_makes() {
    let server =
        Server::new(Config { idle_timeout: Duration::from_secs(2), ..test_config() }).start(|| OwnCodes).unwrap();
    let mut idle = RawClient::connect(server.local_addr(), "/");
    assert_eq!(idle.recv_frame().opcode, OpCode::Ping, "the default idle call is a ping");
    assert_eq!(idle.recv_close(), (4201, "pong reply not received".to_string()));
    let stopping =
        Server::new(Config { drain_window: Duration::from_secs(1), ..test_config() }).start(|| OwnCodes).unwrap();
    let mut open = RawClient::connect(stopping.local_addr(), "/");
    stopping.shutdown();
    assert_eq!(open.recv_close(), (4200, "reconnect".to_string()));
}
