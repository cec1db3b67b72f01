//! Connection limits: total, per address and pending handshakes, each refused with its own
//! answer and counted by reason; and the Prometheus page that reports them.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use fanout::proto::frame::OpCode;
use fanout::Config;
use socket2::{Domain, Socket, Type};

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn upgrade_from(source: &str, addr: SocketAddr) -> (u16, String, TcpStream) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut c = RawClient::connect_tcp_with(stream);
    let (request, _) = fanout::proto::client::client_request("x", "/", rand_nonce(), &[], &[]);
    c.send_raw(&request);
    let head = c.read_head();
    (status_of(&head), head, c.stream)
}

#[test]
fn max_connections_refuses_with_503_and_admits_again_after_a_close() {
    let (server, _events) = echo_server(Config { max_connections: 2, ..test_config() });
    let addr = server.local_addr();
    let a = RawClient::connect(addr, "/");
    let _b = RawClient::connect(addr, "/");
    let (status, head, _) = upgrade_from("127.0.0.1", addr);
    assert_eq!(status, 503, "{head}");
    assert!(head.ends_with("too many connections"), "{head}");
    drop(a);
    wait_until("a slot frees", IO_TIMEOUT, || server.stats().connections <= 1);
    let mut c = RawClient::connect(addr, "/");
    c.send_frame(true, OpCode::Text, b"in");
    assert_eq!(&c.recv_frame().payload[..], b"in");
    assert_eq!(server.stats().rejected_max_connections, 1);
}

#[test]
fn per_address_limit_counts_each_source_address() {
    let (server, _events) = echo_server(Config { max_connections_per_ip: 2, ..test_config() });
    let addr = server.local_addr();
    let first: Vec<_> = (0..2).map(|_| upgrade_from("127.0.0.1", addr)).collect();
    assert!(first.iter().all(|(s, _, _)| *s == 101));
    let (status, head, _) = upgrade_from("127.0.0.1", addr);
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("from this address"));
    let (status, _, _) = upgrade_from("127.0.0.2", addr);
    assert_eq!(status, 101, "another address has its own allowance");
    assert_eq!(server.stats().rejected_per_ip, 1);
}

#[test]
fn pending_handshakes_over_the_limit_are_closed_unread() {
    let config = Config { max_pending_handshakes: 2, handshake_timeout: Duration::from_secs(5), ..test_config() };
    let (server, _events) = echo_server(config);
    let addr = server.local_addr();
    let _slow: Vec<RawClient> = (0..2).map(|_| RawClient::connect_tcp(addr)).collect();
    wait_for_connections(&server, 2);
    let mut third = RawClient::connect_tcp(addr);
    assert!(third.read_to_eof().is_empty(), "closed without a byte");
    assert_eq!(server.stats().rejected_pending_handshakes, 1);
}
