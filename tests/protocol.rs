//! RFC 6455 framing over real sockets with exact bytes: echo, ping/pong, reserved bits and
//! opcodes, fragmentation, UTF-8 fail-fast, close codes and size limits.

mod common;

use common::*;
use fanout::proto::frame::OpCode;
use fanout::Config;

fn small_limits() -> Config {
    Config { max_frame_size: 1024, max_message_size: 4096, ..test_config() }
}

#[test]
fn echoes_text_and_binary_as_unmasked_final_frames() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Text, "héllo".as_bytes());
    let f = c.recv_frame();
    assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, OpCode::Text, "héllo".as_bytes()));
    c.send_frame(true, OpCode::Binary, &[0, 1, 2, 255]);
    let f = c.recv_frame();
    assert_eq!((f.opcode, &f.payload[..]), (OpCode::Binary, &[0u8, 1, 2, 255][..]));
    let big = vec![7u8; 100_000]; // 64-bit length, shared-payload path
    c.send_frame(true, OpCode::Binary, &big);
    assert_eq!(&c.recv_frame().payload[..], &big[..]);
    c.send_frame(true, OpCode::Text, b"");
    assert_eq!(c.recv_frame().payload.len(), 0);
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Ping, b"are you there");
    let f = c.recv_frame();
    assert_eq!((f.opcode, &f.payload[..]), (OpCode::Pong, &b"are you there"[..]));
    // An unsolicited pong needs no answer; the next echo proves the connection is still fine.
    c.send_frame(true, OpCode::Pong, b"x");
    c.send_frame(true, OpCode::Text, b"still here");
    assert_eq!(&c.recv_frame().payload[..], b"still here");
}

#[test]
fn fragments_reassemble_with_a_ping_between_them() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(false, OpCode::Text, b"Hel");
    c.send_frame(true, OpCode::Ping, b"mid");
    c.send_frame(false, OpCode::Continuation, b"l");
    c.send_frame(true, OpCode::Continuation, b"o");
    let pong = c.recv_frame();
    assert_eq!((pong.opcode, &pong.payload[..]), (OpCode::Pong, &b"mid"[..]));
    let msg = c.recv_frame();
    assert_eq!((msg.opcode, &msg.payload[..]), (OpCode::Text, &b"Hello"[..]));
}

/// Sends `bytes` on a fresh connection and returns the close code the server answers with,
/// after checking that the server also closes the TCP connection.
fn close_code_for(config: Config, bytes: &[u8]) -> (u16, Vec<Seen>) {
    let (server, events) = echo_server(config);
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_raw(bytes);
    let (code, _) = c.recv_close();
    c.read_to_eof();
    drop(c); // our FIN ends the server's drain at once instead of at the close timeout
    wait_for_connections(&server, 0);
    (code, events.try_iter().collect())
}

#[test]
fn protocol_violations_close_with_1002() {
    let masked = |b0: u8, b1: u8| vec![b0, b1 | 0x80, 1, 2, 3, 4];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("RSV1", masked(0xC1, 0)),
        ("RSV2", masked(0xA1, 0)),
        ("RSV3", masked(0x91, 0)),
        ("opcode 3", masked(0x83, 0)),
        ("opcode 7", masked(0x87, 0)),
        ("opcode B", masked(0x8B, 0)),
        ("opcode F", masked(0x8F, 0)),
        ("unmasked", vec![0x81, 0x01, b'a']),
        ("fragmented ping", masked(0x09, 0)),
        ("ping of 126 bytes", vec![0x89, 0xFE, 0, 126, 1, 2, 3, 4]),
        ("continuation first", masked(0x80, 0)),
        ("64-bit length top bit", vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]),
        ("close of one byte", {
            let mut f = masked(0x88, 1);
            f.push(0x03 ^ 1);
            f
        }),
    ];
    for (name, bytes) in cases {
        let (code, seen) = close_code_for(test_config(), &bytes);
        assert_eq!(code, 1002, "{name}");
        assert!(
            seen.iter().any(|s| matches!(s, Seen::Close { code: 1002, .. })),
            "{name}: on_close must see 1002, saw {seen:?}"
        );
    }
}

#[test]
fn new_message_inside_a_fragmented_one_is_1002() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(false, OpCode::Text, b"a");
    c.send_frame(true, OpCode::Text, b"b");
    assert_eq!(c.recv_close().0, 1002);
}

#[test]
fn invalid_utf8_fails_fast_with_1007_before_the_message_ends() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(false, OpCode::Text, "κόσμε".as_bytes());
    c.send_frame(false, OpCode::Continuation, &[0xed, 0xa0, 0x80]); // a surrogate
                                                                    // No final fragment is sent: the close must come anyway.
    assert_eq!(c.recv_close().0, 1007);
    c.read_to_eof();
    // Invalid UTF-8 in a single frame and in a close reason.
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Text, &[0xce, 0xba, 0xff]);
    assert_eq!(c.recv_close().0, 1007);
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Close, &[0x03, 0xE8, 0xc0, 0xaf]);
    assert_eq!(c.recv_close().0, 1007);
}

#[test]
fn invalid_utf8_fails_fast_inside_a_frame_whose_rest_never_arrives() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect(server.local_addr(), "/");
    let mut payload = b"hello ".to_vec();
    payload.push(0xff); // never valid in UTF-8
    payload.resize(1000, b'x');
    let frame = fanout::proto::frame::encode_masked_frame(true, OpCode::Text, &payload, [5, 6, 7, 8]);
    c.send_raw(&frame[..8 + 20]); // header (8 bytes) and the first 20 payload bytes only
    assert_eq!(c.recv_close().0, 1007);
}

#[test]
fn valid_close_codes_are_echoed_then_tcp_closes() {
    let (server, events) = echo_server(test_config());
    for code in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let mut c = RawClient::connect(server.local_addr(), "/");
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        c.send_frame(true, OpCode::Close, &payload);
        assert_eq!(c.recv_close(), (code, "bye".to_string()));
        assert!(c.read_to_eof().is_empty(), "nothing after the close frame");
    }
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Close, b"");
    assert_eq!(c.recv_close().0, 1005, "an empty close is answered with an empty close");
    c.read_to_eof();
    drop(c);
    wait_for_connections(&server, 0);
    let closes: Vec<u16> = events
        .try_iter()
        .filter_map(|s| match s {
            Seen::Close { code, .. } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(closes, [1000, 1001, 1003, 1011, 3000, 4999, 1005]);
}

#[test]
fn invalid_close_codes_are_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2000, 2999, 5000] {
        let mut frame =
            fanout::proto::frame::encode_masked_frame(true, OpCode::Close, &code.to_be_bytes(), [1, 2, 3, 4]).to_vec();
        let (got, _) = close_code_for(test_config(), &std::mem::take(&mut frame));
        assert_eq!(got, 1002, "code {code}");
    }
}

#[test]
fn frame_over_the_limit_is_1009_from_its_header_alone() {
    // Only the header of a 1 TiB frame is sent: the server must answer without the payload.
    let header = [0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    let (code, _) = close_code_for(small_limits(), &header);
    assert_eq!(code, 1009);
    let (server, _events) = echo_server(small_limits());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(true, OpCode::Binary, &[0; 1024]);
    assert_eq!(c.recv_frame().payload.len(), 1024, "exactly the limit passes");
    c.send_frame(true, OpCode::Binary, &[0; 1025]);
    assert_eq!(c.recv_close().0, 1009);
}

#[test]
fn message_over_the_limit_is_1009_on_the_fragment_that_passes_it() {
    let (server, _events) = echo_server(small_limits());
    let mut c = RawClient::connect(server.local_addr(), "/");
    c.send_frame(false, OpCode::Binary, &[1; 1000]);
    c.send_frame(false, OpCode::Continuation, &[1; 1000]);
    c.send_frame(false, OpCode::Continuation, &[1; 1000]);
    c.send_frame(false, OpCode::Continuation, &[1; 1000]);
    c.send_frame(false, OpCode::Continuation, &[1; 1000]);
    assert_eq!(c.recv_close().0, 1009);
}

#[test]
fn frames_pipelined_behind_the_handshake_are_processed() {
    let (server, _events) = echo_server(test_config());
    let addr = server.local_addr();
    let mut c = RawClient::connect_tcp(addr);
    let (request, _accept) = fanout::proto::client::client_request(&addr.to_string(), "/", rand_nonce(), &[], &[]);
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(&fanout::proto::frame::encode_masked_frame(true, OpCode::Text, b"early", [9, 8, 7, 6]));
    c.send_raw(&bytes);
    let all = {
        c.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
        c.read_to_eof()
    };
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(all.windows(7).any(|w| w == [0x81, 5, b'e', b'a', b'r', b'l', b'y']), "echo follows the 101");
}
