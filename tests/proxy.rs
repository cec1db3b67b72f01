//! Trusted proxies end to end: the client address from `X-Forwarded-For` and from PROXY
//! headers (v1, v2, over TLS too) reaches `on_open`, `on_request` and the per-address limit when
//! the peer is trusted (127.0.0.1 here), and is ignored when it is not (a client bound to
//! 127.0.0.2); a malformed or missing PROXY header from a trusted peer closes the connection
//! unanswered and is counted.

mod common;
mod tls_common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Mutex;

use common::*;
use fanout::proto::client::client_request;
use fanout::{CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Request, Response, Server, ServerHandle};
use socket2::{Domain, Socket, Type};
use tungstenite::client::IntoClientRequest;

/// Reports the peer address `on_open` and `on_request` see; echoes messages.
struct Peers {
    opened: mpsc::Sender<(ConnId, SocketAddr)>,
    closed: mpsc::Sender<ConnId>,
}

impl Handler for Peers {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, id: ConnId, req: &Request<'_>) -> Result<(), Reject> {
        let _ = self.opened.send((id, req.peer()));
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), message: Message) {
        ctx.send(id, message);
    }

    fn on_close(&mut self, _: &mut Ctx<'_>, id: ConnId, _: (), _: CloseCode, _: &str) {
        let _ = self.closed.send(id);
    }

    fn on_request(&mut self, _: &mut Ctx<'_>, req: &Request<'_>) -> Response {
        Response::text(200, req.peer().to_string())
    }
}

struct Fixture {
    server: ServerHandle,
    opened: mpsc::Receiver<(ConnId, SocketAddr)>,
    closed: mpsc::Receiver<ConnId>,
}

impl Fixture {
    fn start(config: Config) -> Fixture {
        let (opened_tx, opened) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        let senders = Mutex::new((opened_tx, closed_tx));
        let server = Server::new(config)
            .start(move || {
                let senders = senders.lock().unwrap();
                Peers { opened: senders.0.clone(), closed: senders.1.clone() }
            })
            .expect("server starts");
        Fixture { server, opened, closed }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The peer address the next `on_open` saw.
    fn next_open(&self) -> SocketAddr {
        self.opened.recv_timeout(IO_TIMEOUT).expect("on_open").1
    }
}

/// 127.0.0.1 trusted, PROXY headers expected from it when `proxy_protocol`.
fn trusting_loopback(proxy_protocol: bool) -> Config {
    Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], proxy_protocol, ..test_config() }
}

/// A TCP connection to `addr` from 127.0.0.2, an address the tests never trust.
fn connect_from_untrusted(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// The upgrade request for `addr` with `extra` header lines (each ending in CRLF).
fn upgrade_request(addr: SocketAddr, extra: &str) -> Vec<u8> {
    let headers: Vec<(&str, &str)> =
        extra.split("\r\n").filter(|l| !l.is_empty()).map(|l| l.split_once(": ").expect("Name: value")).collect();
    client_request(&addr.to_string(), "/", rand_nonce(), &[], &headers).0.to_vec()
}

/// tungstenite over `stream`, with `X-Forwarded-For: xff`: a real client through a proxy.
fn tungstenite_via(stream: TcpStream, addr: SocketAddr, xff: &str) -> tungstenite::WebSocket<TcpStream> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request.headers_mut().insert("X-Forwarded-For", xff.parse().unwrap());
    let (ws, response) = tungstenite::client(request, stream).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn echo_once(ws: &mut tungstenite::WebSocket<TcpStream>) {
    ws.send(tungstenite::Message::text("ping?")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("ping?"));
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn x_forwarded_for_from_a_trusted_peer_names_the_client() {
    let f = Fixture::start(trusting_loopback(false));
    let stream = TcpStream::connect(f.addr()).unwrap();
    // The rightmost hop, 127.0.0.1, is trusted too and skipped; 1.1.1.1 is whatever the client wrote.
    let mut ws = tungstenite_via(stream, f.addr(), "1.1.1.1, 203.0.113.9, 127.0.0.1");
    assert_eq!(f.next_open(), "203.0.113.9:0".parse().unwrap());
    echo_once(&mut ws);

    // Plain HTTP requests see it too.
    let response = http_exchange(
        f.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: [2001:db8::5]:443\r\n\r\n",
    );
    assert!(response.ends_with("[2001:db8::5]:443"), "{response}");
    // An entry that is no address falls back to the proxy's own.
    let response =
        http_exchange(f.addr(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: unknown\r\n\r\n");
    assert!(response.contains("\r\n\r\n127.0.0.1:"), "{response}");
}

#[test]
fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let f = Fixture::start(trusting_loopback(false));
    let mut ws = tungstenite_via(connect_from_untrusted(f.addr()), f.addr(), "203.0.113.9");
    assert_eq!(f.next_open().ip().to_string(), "127.0.0.2");
    echo_once(&mut ws);
    // Nobody is trusted by default: the header means nothing.
    let f = Fixture::start(test_config());
    let _ws = tungstenite_via(TcpStream::connect(f.addr()).unwrap(), f.addr(), "203.0.113.9");
    assert_eq!(f.next_open().ip().to_string(), "127.0.0.1");
}

#[test]
fn proxy_v1_from_a_trusted_peer_names_the_client() {
    let f = Fixture::start(trusting_loopback(true));
    let mut c = RawClient::connect_tcp(f.addr());
    c.send_raw(b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 8080\r\n");
    c.send_raw(&upgrade_request(f.addr(), ""));
    assert!(c.read_head().starts_with("HTTP/1.1 101"));
    assert_eq!(f.next_open(), "198.51.100.4:40000".parse().unwrap());
    say(&mut c, "through haproxy");
    assert_eq!(text(&mut c), "through haproxy");

    // UNKNOWN (a health check) keeps the real peer.
    let mut c = RawClient::connect_tcp(f.addr());
    c.send_raw(b"PROXY UNKNOWN\r\n");
    c.send_raw(&upgrade_request(f.addr(), ""));
    assert!(c.read_head().starts_with("HTTP/1.1 101"));
    assert_eq!(f.next_open().ip().to_string(), "127.0.0.1");
}

/// A version 2 header: PROXY over TCP from `src` (IPv6) to [::1]:443.
fn proxy_v2_tcp6(src: [u8; 16], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36 + 7]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    // A TLV (PP2_TYPE_AUTHORITY) the server skips.
    h.extend_from_slice(&[0x02, 0, 4]);
    h.extend_from_slice(b"host");
    h
}

#[test]
fn proxy_v2_from_a_trusted_peer_names_the_client_even_in_pieces() {
    let f = Fixture::start(trusting_loopback(true));
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 9;
    let header = proxy_v2_tcp6(src, 5555);
    let mut c = RawClient::connect_tcp(f.addr());
    // The header arrives in two pieces, the second with the request behind it.
    c.send_raw(&header[..10]);
    // The first piece is most likely read alone (the unit tests cover every split).
    wait_for_connections(&f.server, 1);
    let mut rest = header[10..].to_vec();
    rest.extend_from_slice(&upgrade_request(f.addr(), "X-Forwarded-For: 203.0.113.1\r\n"));
    c.send_raw(&rest);
    assert!(c.read_head().starts_with("HTTP/1.1 101"));
    // The header's source is no trusted proxy, so X-Forwarded-For from it is ignored.
    assert_eq!(f.next_open(), "[2001:db8::9]:5555".parse().unwrap());
    say(&mut c, "v2");
    assert_eq!(text(&mut c), "v2");

    // LOCAL: the proxy's own connection, the real peer stands.
    let mut c = RawClient::connect_tcp(f.addr());
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(&upgrade_request(f.addr(), ""));
    c.send_raw(&local);
    assert!(c.read_head().starts_with("HTTP/1.1 101"));
    assert_eq!(f.next_open().ip().to_string(), "127.0.0.1");
}

#[test]
fn proxy_headers_from_an_untrusted_peer_are_http_and_refused() {
    let f = Fixture::start(trusting_loopback(true));
    for header in [b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 8080\r\n".to_vec(), proxy_v2_tcp6([1; 16], 1)] {
        let mut stream = connect_from_untrusted(f.addr());
        stream.write_all(&header).unwrap();
        stream.write_all(&upgrade_request(f.addr(), "")).unwrap();
        let response = String::from_utf8_lossy(&RawClient::connect_tcp_with(stream).read_to_eof()).into_owned();
        assert_eq!(status_of(&response), 400, "{response}");
    }
    // Without one, an untrusted peer is served as itself.
    let mut ws = tungstenite_via(connect_from_untrusted(f.addr()), f.addr(), "203.0.113.9");
    assert_eq!(f.next_open().ip().to_string(), "127.0.0.2");
    echo_once(&mut ws);
    assert_eq!(f.server.stats().proxy_header_errors, 0);
}

#[test]
fn a_malformed_or_missing_proxy_header_from_a_trusted_peer_closes_unanswered() {
    let f = Fixture::start(trusting_loopback(true));
    let cases: [&[u8]; 4] = [
        b"PROXY TCP4 198.51.100.4 127.0.0.1 99999 8080\r\n",
        b"PROXY TCP9 a b c d\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x02ab",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for (n, bytes) in cases.iter().enumerate() {
        let mut c = RawClient::connect_tcp(f.addr());
        c.send_raw(bytes);
        assert_eq!(c.read_to_eof(), b"", "case {n}: closed with nothing said");
        wait_until("the error counted", IO_TIMEOUT, || f.server.stats().proxy_header_errors == n as u64 + 1);
    }
    // A v1 line without its CRLF by byte 107 is refused too, not waited on.
    let mut c = RawClient::connect_tcp(f.addr());
    c.send_raw(&[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat());
    assert_eq!(c.read_to_eof(), b"");
    drop(c);
    assert!(f.opened.try_recv().is_err(), "no connection opened");
    wait_for_connections(&f.server, 0);
}

#[test]
fn proxy_header_before_tls_names_the_client() {
    let pki = tls_common::Pki::new("proxy");
    let (cert, key) = pki.install(&pki.issue(3, 2040));
    let f = Fixture::start(Config { tls_cert: Some(cert), tls_key: Some(key), ..trusting_loopback(true) });
    let mut stream = TcpStream::connect(f.addr()).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"PROXY TCP6 2001:db8::77 ::1 6000 443\r\n").unwrap();
    let url = format!("wss://localhost:{}/", f.addr().port());
    let connector = tungstenite::Connector::Rustls(pki.client_config());
    let (mut ws, _) = tungstenite::client_tls_with_config(url, stream, None, Some(connector)).expect("wss upgrade");
    assert_eq!(f.next_open(), "[2001:db8::77]:6000".parse().unwrap());
    ws.send(tungstenite::Message::text("tls")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("tls"));
}

#[test]
fn the_per_address_limit_counts_the_forwarded_address_and_balances_on_close() {
    let f = Fixture::start(Config { max_connections_per_ip: 1, ..trusting_loopback(false) });
    let upgrade_as = |xff: &str| {
        let mut c = RawClient::connect_tcp(f.addr());
        c.send_raw(&upgrade_request(f.addr(), &format!("X-Forwarded-For: {xff}\r\n")));
        let head = c.read_head();
        (c, status_of(&head))
    };
    let (mut first, status) = upgrade_as("203.0.113.1");
    assert_eq!(status, 101);
    let (id, _) = f.opened.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(upgrade_as("203.0.113.1").1, 503, "the same client behind the same proxy");
    let (_second, status) = upgrade_as("203.0.113.2");
    assert_eq!(status, 101, "another client behind the same proxy");
    assert_eq!(f.server.stats().rejected_per_ip, 1);
    // Closing the first gives its address its slot back.
    first.send_frame(true, fanout::proto::OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(first.recv_close().0, 1000);
    assert_eq!(f.closed.recv_timeout(IO_TIMEOUT).unwrap(), id);
    let (_again, status) = upgrade_as("203.0.113.1");
    assert_eq!(status, 101, "the count for 203.0.113.1 went back to zero");
}
