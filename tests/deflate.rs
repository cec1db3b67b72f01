//! permessage-deflate (RFC 7692) end to end over real sockets: the negotiation, compressed
//! publishes made once per worker whatever the number of subscribers, compressed sends and
//! echoes, and bad compressed input answered with its close code while the server goes on.
//! The independent client's view (Python `websockets`) is in tests/python/test_deflate.py;
//! tungstenite, the Rust client the other tests use, has no permessage-deflate (none in 0.24,
//! nor in its latest release, 0.30), so the client here is the raw one of tests/common.

mod common;

use bytes::Bytes;
use common::{say, test_config, text, wait_until, RawClient, IO_TIMEOUT};
use fanout::proto::deflate::{Compressor, Inflater};
use fanout::proto::frame::{encode_masked_frame, OpCode, RSV1};
use fanout::{Config, ConnId, Ctx, Handler, Message, Reject, Request, Server, ServerHandle};

const OFFER: (&str, &str) = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits");
const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// `sub:T` subscribes, `bcast:P` broadcasts; anything else is echoed.
struct App;

impl Handler for App {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), m: Message) {
        let text = m.as_text().unwrap_or_default().to_owned();
        if let Some(topic) = text.strip_prefix("sub:") {
            ctx.subscribe(id, topic);
            ctx.send_text(id, "ok");
        } else if let Some(payload) = text.strip_prefix("bcast:") {
            ctx.broadcast(Message::Text(payload.to_owned().into()));
        } else {
            ctx.send(id, m);
        }
    }
}

fn start(config: Config) -> ServerHandle {
    Server::new(Config { compression: true, ..config }).start(|| App).unwrap()
}

/// A client that offered permessage-deflate and got it.
fn compressed_client(server: &ServerHandle) -> RawClient {
    let (c, accepted) = RawClient::connect_with(server.local_addr(), "/", &[OFFER]);
    let extensions = accepted.extensions.expect("permessage-deflate accepted");
    assert_eq!(extensions, format!("{RESPONSE}; client_max_window_bits=15"));
    c
}

/// The next data message: whether it came compressed (RSV1), and its data.
fn message(c: &mut RawClient, inflater: &mut Inflater) -> (bool, Bytes) {
    let f = c.recv_frame();
    assert!(f.fin && matches!(f.opcode, OpCode::Text | OpCode::Binary), "{f:?}");
    if f.rsv & RSV1 != 0 {
        (true, inflater.inflate(&f.payload, 1 << 24).expect("valid DEFLATE data"))
    } else {
        (false, f.payload)
    }
}

/// A JSON text of about 1 KiB, like a market-data event.
fn json(i: usize) -> String {
    let items: Vec<String> = (0..16)
        .map(|k| {
            format!(r#"{{"symbol":"SYM{k:03}","bid":{}.25,"ask":{}.5,"volume":{}}}"#, 100 + k, 101 + k, 1000 * k + i)
        })
        .collect();
    format!(r#"{{"channel":"prices","seq":{i},"data":[{}]}}"#, items.join(","))
}

/// Sends one compressed message (RSV1 on its first frame), fragmented into `pieces` frames.
fn send_compressed(c: &mut RawClient, opcode: OpCode, data: &[u8], pieces: usize) {
    let compressed = Compressor::new(6).compress(data).unwrap().to_vec();
    let size = compressed.len().div_ceil(pieces).max(1);
    let chunks: Vec<&[u8]> = compressed.chunks(size).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 { opcode } else { OpCode::Continuation };
        let mut frame = encode_masked_frame(i + 1 == chunks.len(), op, chunk, [1, 2, 3, 4]).to_vec();
        if i == 0 {
            frame[0] |= RSV1 << 4;
        }
        c.send_raw(&frame);
    }
}

#[test]
fn the_first_offer_that_can_be_honoured_is_accepted_and_the_rest_declined() {
    let server = start(test_config());
    let addr = server.local_addr();
    let cases: &[(&str, Option<&str>)] = &[
        ("permessage-deflate", Some(RESPONSE)),
        (
            "permessage-deflate; mystery, permessage-deflate; client_max_window_bits=10",
            Some("client_max_window_bits=10"),
        ),
        ("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9", Some("server_max_window_bits=9")),
        ("permessage-deflate; server_max_window_bits=20", None),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
        ("permessage-deflate; ;;", None),
    ];
    for (offer, want) in cases {
        let (mut c, accepted) = RawClient::connect_with(addr, "/", &[("Sec-WebSocket-Extensions", offer)]);
        match (want, accepted.extensions.as_deref()) {
            (Some(part), Some(got)) => assert!(got.starts_with(RESPONSE) && got.contains(part), "{offer}: {got}"),
            (None, None) => {}
            (want, got) => panic!("{offer}: want {want:?}, got {got:?}"),
        }
        // Declined or not, the connection works.
        say(&mut c, "still here");
        assert_eq!(text(&mut c), "still here");
    }
    // Compression off: the offer is declined.
    let plain = Server::new(test_config()).start(|| App).unwrap();
    let (_, accepted) = RawClient::connect_with(plain.local_addr(), "/", &[OFFER]);
    assert_eq!(accepted.extensions, None);
}

#[test]
fn a_publish_is_compressed_once_whatever_the_number_of_subscribers() {
    let server = start(test_config());
    let mut inflater = Inflater::new();
    let mut compressed: Vec<RawClient> = (0..40).map(|_| compressed_client(&server)).collect();
    let mut plain: Vec<RawClient> = (0..10).map(|_| RawClient::connect(server.local_addr(), "/")).collect();
    for c in compressed.iter_mut().chain(plain.iter_mut()) {
        say(c, "sub:prices");
        assert_eq!(message(c, &mut inflater).1, "ok");
    }
    let remote = server.remote();
    for round in 1..=3u64 {
        let payload = json(round as usize);
        assert!(payload.len() > 900, "{}", payload.len());
        remote.publish("prices", Message::Text(payload.clone().into()));
        let mut wire = None;
        for c in &mut compressed {
            let f = c.recv_frame();
            assert_ne!(f.rsv & RSV1, 0, "compressed for a client that negotiated it");
            assert!(f.payload.len() < payload.len() / 2, "{} bytes", f.payload.len());
            assert_eq!(inflater.inflate(&f.payload, 1 << 20).unwrap(), payload);
            // The same compressed bytes for every subscriber.
            assert_eq!(wire.get_or_insert_with(|| f.payload.clone()), &f.payload);
        }
        for c in &mut plain {
            assert_eq!(message(c, &mut inflater), (false, Bytes::from(payload.clone())));
        }
        assert_eq!(server.stats().compressions, round, "one compression per publish, not per subscriber");
    }
    // Below the threshold: plain for everyone, nothing compressed.
    remote.publish("prices", Message::Text("short".into()));
    for c in compressed.iter_mut().chain(plain.iter_mut()) {
        assert_eq!(message(c, &mut inflater), (false, Bytes::from_static(b"short")));
    }
    // A broadcast: once too.
    let big = json(99);
    say(&mut plain[0], &format!("bcast:{big}"));
    for c in compressed.iter_mut() {
        assert_eq!(message(c, &mut inflater), (true, Bytes::from(big.clone())));
    }
    for c in plain.iter_mut() {
        assert_eq!(message(c, &mut inflater), (false, Bytes::from(big.clone())));
    }
    assert_eq!(server.stats().compressions, 4);
}

#[test]
fn large_publishes_are_shared_compressed_too() {
    let server = start(test_config());
    let mut inflater = Inflater::new();
    let mut subscribers: Vec<RawClient> = (0..3).map(|_| compressed_client(&server)).collect();
    for c in &mut subscribers {
        say(c, "sub:big");
        assert_eq!(text(c), "ok");
    }
    let big: String = (0..40).map(json).collect(); // about 40 KiB: past the shared-frame threshold
    server.remote().publish("big", Message::Text(big.clone().into()));
    server.remote().publish("big", Message::Text("after".into()));
    for c in &mut subscribers {
        assert_eq!(message(c, &mut inflater), (true, Bytes::from(big.clone())));
        assert_eq!(message(c, &mut inflater), (false, Bytes::from_static(b"after")), "order kept");
    }
    assert_eq!(server.stats().compressions, 1);
}

#[test]
fn compressed_messages_in_and_out_fragmented_or_not() {
    let server = start(Config { workers: 2, ..test_config() });
    let mut inflater = Inflater::new();
    let mut c = compressed_client(&server);
    for (i, pieces) in [1, 2, 7].into_iter().enumerate() {
        let data = json(i);
        send_compressed(&mut c, OpCode::Text, data.as_bytes(), pieces);
        assert_eq!(message(&mut c, &mut inflater), (true, Bytes::from(data)), "{pieces} fragments");
    }
    let binary: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
    send_compressed(&mut c, OpCode::Binary, &binary, 3);
    assert_eq!(message(&mut c, &mut inflater), (true, Bytes::from(binary)));
    // An uncompressed message on the same connection is fine, and a short echo goes plain.
    say(&mut c, "plain");
    assert_eq!(message(&mut c, &mut inflater), (false, Bytes::from_static(b"plain")));
    send_compressed(&mut c, OpCode::Text, b"tiny", 1);
    assert_eq!(message(&mut c, &mut inflater), (false, Bytes::from_static(b"tiny")));
    wait_until("counters", IO_TIMEOUT, || server.stats().decompressions == 5);
    assert_eq!(server.stats().compressions, 4);
}

#[test]
fn bad_compressed_input_gets_its_close_code_and_the_server_goes_on() {
    let server = start(Config { max_message_size: 1 << 20, max_frame_size: 1 << 20, ..test_config() });
    let mut inflater = Inflater::new();
    let rsv1 = |fin: bool, opcode: OpCode, payload: &[u8]| {
        let mut frame = encode_masked_frame(fin, opcode, payload, [9, 8, 7, 6]).to_vec();
        frame[0] |= RSV1 << 4;
        frame
    };
    let bomb = Compressor::new(9).compress(&vec![0u8; 64 << 20]).unwrap().to_vec();
    assert!(bomb.len() < 128 * 1024, "64 MiB of zeros in {} bytes", bomb.len());
    let first = encode_masked_frame(false, OpCode::Text, b"abc", [1; 4]).to_vec();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a decompression bomb", rsv1(true, OpCode::Binary, &bomb), 1009),
        ("a compressed ping", rsv1(true, OpCode::Ping, b""), 1002),
        ("a compressed close", rsv1(true, OpCode::Close, &[3, 232]), 1002),
        ("RSV1 on a continuation", [first, rsv1(true, OpCode::Continuation, b"d")].concat(), 1002),
        ("invalid DEFLATE data", rsv1(true, OpCode::Binary, &[0xff, 0xff, 0xff]), 1007),
        (
            "text that inflates to bad UTF-8",
            rsv1(true, OpCode::Text, Compressor::new(1).compress(&[0xff]).unwrap()),
            1007,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = compressed_client(&server);
        c.send_raw(&bytes);
        assert_eq!(c.recv_close().0, code, "{what}");
        // The server goes on serving compressed clients.
        let mut next = compressed_client(&server);
        send_compressed(&mut next, OpCode::Text, json(1).as_bytes(), 2);
        assert_eq!(message(&mut next, &mut inflater).1, json(1), "after {what}");
    }
    // RSV1 from a client that did not negotiate compression.
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_raw(&rsv1(true, OpCode::Text, Compressor::new(1).compress(b"hello").unwrap()));
    assert_eq!(c.recv_close().0, 1002);
    assert_eq!(server.stats().protocol_errors, 7);
}
