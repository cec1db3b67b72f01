//! The server as an independent client library (tungstenite) sees it: echo, ping, close codes,
//! limits, rejection, subprotocols, and the chat example run as its own process.

mod common;

use std::net::{SocketAddr, TcpStream};

use common::*;
use fanout::Config;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{client::IntoClientRequest, Message, WebSocket};

type Client = WebSocket<TcpStream>;

fn connect(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let config = WebSocketConfig { max_message_size: None, max_frame_size: None, ..Default::default() };
    let (ws, _) = tungstenite::client::client_with_config(format!("ws://{addr}{path}"), stream, Some(config)).unwrap();
    ws
}

fn next_data(ws: &mut Client) -> Message {
    loop {
        match ws.read().expect("a message") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            _ => continue,
        }
    }
}

#[test]
fn echo_text_binary_and_large() {
    let config =
        Config { max_frame_size: 4 << 20, max_message_size: 4 << 20, max_queued_bytes: 8 << 20, ..test_config() };
    let (server, _events) = echo_server(config);
    let mut ws = connect(server.local_addr(), "/");
    ws.send(Message::text("héllo wörld")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("héllo wörld"));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(next_data(&mut ws), Message::binary(big));
    for i in 0..100 {
        ws.write(Message::text(format!("m{i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..100 {
        assert_eq!(next_data(&mut ws), Message::text(format!("m{i}")), "order kept");
    }
}

#[test]
fn ping_is_answered_and_close_code_echoed() {
    let (server, _events) = echo_server(test_config());
    let mut ws = connect(server.local_addr(), "/");
    ws.send(Message::Ping(b"tp".to_vec())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"tp"),
        other => panic!("expected pong, got {other:?}"),
    }
    ws.close(Some(tungstenite::protocol::CloseFrame { code: CloseCode::Library(4321), reason: "later".into() }))
        .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!((u16::from(frame.code), &*frame.reason), (4321, "later"));
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn message_over_the_limit_is_closed_with_1009() {
    let config = Config { max_frame_size: 1000, max_message_size: 1000, ..test_config() };
    let (server, _events) = echo_server(config);
    let mut ws = connect(server.local_addr(), "/");
    ws.send(Message::binary(vec![0u8; 1001])).unwrap();
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
            Ok(_) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(code, 1009);
}

#[test]
fn rejection_and_subprotocol_as_a_client_library_sees_them() {
    let config = Config { subprotocols: vec!["v2.fanout".into()], ..test_config() };
    let (server, _events) = echo_server(config);
    let addr = server.local_addr();
    let stream = TcpStream::connect(addr).unwrap();
    match tungstenite::client(format!("ws://{addr}/reject"), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status().as_u16(), 403);
            assert_eq!(response.body().as_deref(), Some(&b"not here"[..]));
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    // tungstenite splits the offer on "," without trimming, so no space after the comma.
    request.headers_mut().insert("Sec-WebSocket-Protocol", "v1.fanout,v2.fanout".parse().unwrap());
    let (_ws, response) = tungstenite::client(request, TcpStream::connect(addr).unwrap()).unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "v2.fanout");
}

#[test]
fn chat_example_sends_each_message_to_every_other_member() {
    let (_chat, addr) = start_example("chat");
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    let mut c = connect(addr, "/");
    // Each client's first send is ordered after all three joined: the server handles a
    // connection's upgrade before any later frame, and c's upgrade completed above.
    a.send(Message::text("hi from a")).unwrap();
    assert_eq!(next_data(&mut b), Message::text("hi from a"));
    assert_eq!(next_data(&mut c), Message::text("hi from a"));
    b.send(Message::text("hi from b")).unwrap();
    assert_eq!(next_data(&mut a), Message::text("hi from b"), "a never gets its own message");
    assert_eq!(next_data(&mut c), Message::text("hi from b"));
    drop(c);
    a.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(next_data(&mut b), Message::binary(vec![1, 2, 3]));
}

#[test]
fn broadcast_example_sends_every_message_to_every_connection_including_the_sender() {
    let (_server, addr) = start_example("broadcast");
    let mut clients: Vec<Client> = (0..3).map(|_| connect(addr, "/")).collect();
    clients[1].send(Message::text("one")).unwrap();
    for c in &mut clients {
        assert_eq!(next_data(c), Message::text("one"));
    }
    clients[2].send(Message::binary(vec![9u8; 70_000])).unwrap();
    for c in &mut clients {
        assert_eq!(next_data(c), Message::binary(vec![9u8; 70_000]));
    }
}

#[test]
fn shootout_example_speaks_the_websocket_shootout_protocol() {
    let (_server, addr) = start_example("shootout");
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    let echo = r#"{"type":"echo","payload":{"n":2.50,"s":"\u00e9"}}"#;
    a.send(Message::text(echo)).unwrap();
    assert_eq!(next_data(&mut a), Message::text(echo), "echo returns the message byte for byte");
    a.send(Message::text(r#"{"type":"broadcast","payload":[1,2]}"#)).unwrap();
    let mut to_a: Vec<String> = (0..2).map(|_| next_data(&mut a).into_text().unwrap().to_string()).collect();
    to_a.sort();
    assert_eq!(
        to_a,
        [r#"{"type":"broadcast","payload":[1,2]}"#, r#"{"type":"broadcastResult","payload":[1,2],"listenerCount":2}"#]
    );
    assert_eq!(next_data(&mut b), Message::text(r#"{"type":"broadcast","payload":[1,2]}"#));
}
