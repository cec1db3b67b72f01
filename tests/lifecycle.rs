//! Connections end cleanly on every path: a peer that vanishes mid-frame, one that stops
//! reading, one that half-closes, an idle one, a server-side close and a server shutdown. In
//! each case the connection count returns to zero and `on_close` runs once with the right code.

mod common;

use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fanout::proto::frame::OpCode;
use fanout::{CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Request, Server};

fn closes(events: &mpsc::Receiver<Seen>, n: usize) -> Vec<u16> {
    (0..n)
        .filter_map(|_| loop {
            match events.recv_timeout(IO_TIMEOUT).expect("an on_close event") {
                Seen::Close { code, .. } => break Some(code),
                Seen::Open { .. } => continue,
            }
        })
        .collect()
}

#[test]
fn peer_that_disappears_mid_frame_is_removed() {
    let (server, events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    // The header promises 1000 bytes; only 10 arrive before the socket is dropped.
    c.send_raw(&[0x82, 0xFE, 0x03, 0xE8, 1, 2, 3, 4]);
    c.send_raw(&[0; 10]);
    wait_for_connections(&server, 1);
    drop(c);
    wait_for_connections(&server, 0);
    assert_eq!(closes(&events, 1), [1006]);
}

#[test]
fn half_closed_peer_is_removed() {
    let (server, events) = echo_server(test_config());
    let c = RawClient::connect(server.local_addr(), "/");
    c.stream.shutdown(Shutdown::Write).unwrap();
    wait_for_connections(&server, 0);
    assert_eq!(closes(&events, 1), [1006]);
    drop(c);
}

/// Sends 64 KiB back for every message, to a client that never reads.
struct Flood(mpsc::Sender<u16>);

impl Handler for Flood {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), _: Message) {
        ctx.send_binary(id, vec![0u8; 64 * 1024]);
    }
    fn on_close(&mut self, _: &mut Ctx<'_>, _: ConnId, _: (), code: CloseCode, _: &str) {
        let _ = self.0.send(code.get());
    }
}

#[test]
fn peer_that_stops_reading_is_closed_as_slow_consumer_and_removed() {
    let config = Config { max_queued_bytes: 256 * 1024, close_timeout: Duration::from_secs(1), ..test_config() };
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = Server::new(config).start(move || Flood(tx.lock().unwrap().clone())).unwrap();
    let mut c = RawClient::connect(server.local_addr(), "/");
    // 400 requests ask for 25 MiB in all: more than the kernel buffers on both sides hold.
    for _ in 0..400 {
        c.send_frame(true, OpCode::Text, b"more");
    }
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), 1008);
    // The client still never reads; the close timeout frees the slot.
    wait_for_connections(&server, 0);
    let stats = server.stats();
    assert_eq!(stats.slow_consumers, 1);
    drop(c);
}

#[test]
fn pinging_without_reading_the_pongs_is_a_slow_consumer() {
    let config = Config { max_queued_bytes: 64 * 1024, close_timeout: Duration::from_secs(1), ..test_config() };
    let (server, events) = echo_server(config);
    let mut c = RawClient::connect(server.local_addr(), "/");
    let ping = fanout::proto::frame::encode_masked_frame(true, OpCode::Ping, &[b'p'; 125], [1, 2, 3, 4]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    // 100k pings ask for 12.7 MB of pongs. Writes fail once the server has closed: stop then.
    for _ in 0..100 {
        if std::io::Write::write_all(&mut c.stream, &burst).is_err() {
            break;
        }
        if server.stats().slow_consumers == 1 {
            break;
        }
    }
    assert_eq!(closes(&events, 1), [1008]);
    wait_for_connections(&server, 0);
}

#[test]
fn idle_connection_gets_a_ping_then_a_1001_close() {
    let config =
        Config { idle_timeout: Duration::from_secs(1), close_timeout: Duration::from_secs(1), ..test_config() };
    let (server, events) = echo_server(config);
    let mut c = RawClient::connect(server.local_addr(), "/");
    let ping = c.recv_frame();
    assert_eq!(ping.opcode, OpCode::Ping, "a ping at half the idle timeout");
    // Not answering the ping: the idle timeout closes the connection.
    assert_eq!(c.recv_close(), (1001, "idle timeout".to_string()));
    c.send_frame(true, OpCode::Close, &1001u16.to_be_bytes());
    assert!(c.read_to_eof().is_empty());
    wait_for_connections(&server, 0);
    assert_eq!(closes(&events, 1), [1001]);
    assert_eq!(server.stats().idle_timeouts, 1);
}

#[test]
fn a_client_that_answers_pings_is_never_idle() {
    let config = Config { idle_timeout: Duration::from_secs(1), ..test_config() };
    let (server, _events) = echo_server(config);
    let mut c = RawClient::connect(server.local_addr(), "/");
    for _ in 0..3 {
        let ping = c.recv_frame();
        assert_eq!(ping.opcode, OpCode::Ping);
        c.send_frame(true, OpCode::Pong, &ping.payload);
    }
    c.send_frame(true, OpCode::Text, b"alive");
    assert_eq!(&c.recv_frame().payload[..], b"alive");
    assert_eq!(server.stats().idle_timeouts, 0);
}

/// Closes every connection with 4001 when it says "bye".
struct Closer;

impl Handler for Closer {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), m: Message) {
        if m.as_text() == Some("bye") {
            ctx.send_text(id, "see you");
            ctx.close(id, CloseCode::new(4001), "done");
            ctx.send_text(id, "never sent: the connection is closing");
        }
    }
}

#[test]
fn server_initiated_close_completes_the_handshake() {
    let server = Server::new(test_config()).start(|| Closer).unwrap();
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Text, b"bye");
    assert_eq!(&c.recv_frame().payload[..], b"see you");
    assert_eq!(c.recv_close(), (4001, "done".to_string()));
    c.send_frame(true, OpCode::Close, &4001u16.to_be_bytes());
    assert!(c.read_to_eof().is_empty(), "the server closes TCP after the close handshake");
    wait_for_connections(&server, 0);
}

#[test]
fn shutdown_closes_clients_with_1001_and_the_workers_exit() {
    let (server, events) = echo_server(test_config());
    let mut clients: Vec<RawClient> = (0..3).map(|_| RawClient::connect(server.local_addr(), "/")).collect();
    wait_for_connections(&server, 3);
    server.shutdown();
    for c in &mut clients {
        assert_eq!(c.recv_close(), (1001, "server shutting down".to_string()));
        c.send_frame(true, OpCode::Close, &1001u16.to_be_bytes());
    }
    server.join().unwrap();
    assert_eq!(closes(&events, 3), [1001, 1001, 1001]);
}

#[test]
fn many_connections_come_and_go_without_leaking() {
    let (server, _events) = echo_server(test_config());
    for round in 0..5 {
        let mut clients: Vec<RawClient> = (0..50).map(|_| RawClient::connect(server.local_addr(), "/")).collect();
        for c in &mut clients {
            c.send_frame(true, OpCode::Binary, &[round; 3]);
            assert_eq!(&c.recv_frame().payload[..], &[round; 3]);
        }
        drop(clients);
        wait_for_connections(&server, 0);
    }
    assert_eq!(server.stats().handshakes, 250);
}

/// Echoes, except that the message `wait` parks the worker until the test opens the gate.
struct Gated {
    gate: std::sync::Arc<std::sync::Mutex<mpsc::Receiver<()>>>,
}

impl Handler for Gated {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), message: Message) {
        if message.as_text() == Some("wait") {
            let _ = self.gate.lock().unwrap().recv_timeout(IO_TIMEOUT);
        }
        ctx.send(id, message);
    }
}

/// The worker skips the read that would only return WouldBlock after a short read. That is
/// safe only because an event that already carries the FIN makes it read on to EOF: here the
/// message and the FIN both arrive while the worker is busy, so one event reports both and no
/// later edge would announce the EOF.
#[test]
fn a_message_and_fin_that_arrive_together_are_both_seen() {
    let (open_gate, gate) = mpsc::channel();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
    let config = Config { workers: 1, ..test_config() };
    let server = Server::new(config).start(move || Gated { gate: gate.clone() }).unwrap();
    let mut busy = RawClient::connect(server.local_addr(), "/");
    let mut last_words = RawClient::connect(server.local_addr(), "/");
    wait_for_connections(&server, 2);
    busy.send_frame(true, OpCode::Text, b"wait");
    wait_until("the worker to take the parked message", IO_TIMEOUT, || server.stats().messages_in >= 1);
    last_words.send_frame(true, OpCode::Text, b"bye");
    last_words.stream.shutdown(Shutdown::Write).unwrap();
    open_gate.send(()).unwrap();
    assert_eq!(&busy.recv_frame().payload[..], b"wait");
    assert_eq!(&last_words.recv_frame().payload[..], b"bye");
    last_words.read_to_eof();
    wait_for_connections(&server, 1);
}
