//! The `fanout` binary behind a proxy: `--trusted-proxies`, `--proxy-protocol` and
//! `--handshake-rate-per-ip` (and their `FANOUT_*` variables) reach the server: the PROXY
//! header's source is the client the handshake rate counts, a malformed header is logged and
//! closed, X-Forwarded-For names the client from a trusted peer, and `/metrics` counts both.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

fn fanout() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"]);
    command
}

/// Opens a connection, sends `prefix` (a PROXY header or nothing), then the upgrade with
/// `X-Forwarded-For: xff` when given. Ok: the WebSocket; Err: the refusal's status.
fn connect(addr: SocketAddr, prefix: &[u8], xff: Option<&str>) -> Result<tungstenite::WebSocket<TcpStream>, u16> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(prefix).unwrap();
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(xff) = xff {
        request.headers_mut().insert("X-Forwarded-For", xff.parse().unwrap());
    }
    match tungstenite::client(request, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade: {e}"),
    }
}

/// A subscribe answered: the connection is a working gateway session.
fn subscribes(ws: &mut tungstenite::WebSocket<TcpStream>) {
    ws.send(Message::text(json!({"op": "subscribe", "channel": "news"}).to_string())).unwrap();
    let reply: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(reply["op"], "subscribed", "{reply}");
}

fn metrics(addr: SocketAddr, prefix: &str) -> String {
    http_exchange(addr, format!("{prefix}GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
}

#[test]
fn proxy_protocol_and_handshake_rate_flags_work() {
    let mut command = fanout();
    command.args(["--trusted-proxies", "127.0.0.1", "--proxy-protocol", "--handshake-rate-per-ip", "1/m:2"]);
    let (_fanout, addr, log) = spawn_logged(command);
    let from_a = b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 8080\r\n";
    let mut first = connect(addr, from_a, None).expect("first upgrade from A");
    subscribes(&mut first);
    let _second = connect(addr, from_a, None).expect("second upgrade from A, the burst");
    assert_eq!(connect(addr, from_a, None).err(), Some(429), "A is over its rate");
    let mut other = connect(addr, b"PROXY TCP4 198.51.100.2 127.0.0.1 40001 8080\r\n", None).expect("B is not");
    subscribes(&mut other);

    // A trusted peer without a valid header: closed unanswered, and the reason logged.
    let mut c = RawClient::connect_tcp(addr);
    c.send_raw(b"PROXY TCP4 198.51.100.1 nowhere 1 2\r\n");
    assert_eq!(c.read_to_eof(), b"");
    wait_until("the bad header logged", IO_TIMEOUT, || {
        log.lock().unwrap().iter().any(|l| l.contains("bad destination address"))
    });

    let text = metrics(addr, "PROXY UNKNOWN\r\n");
    assert!(text.contains("reason=\"handshake_rate\"} 1\n"), "{text}");
    assert!(text.contains("fanout_proxy_header_errors_total{worker=\"0\"} 1\n"), "{text}");
}

#[test]
fn trusted_proxies_and_the_rate_from_the_environment_with_x_forwarded_for() {
    let mut command = fanout();
    command.env("FANOUT_TRUSTED_PROXIES", "127.0.0.0/8").env("FANOUT_HANDSHAKE_RATE_PER_IP", "1/h:1");
    let (_fanout, addr) = spawn_listening(command);
    let mut ws = connect(addr, b"", Some("203.0.113.1")).expect("client 1");
    subscribes(&mut ws);
    assert_eq!(connect(addr, b"", Some("203.0.113.1")).err(), Some(429));
    assert!(connect(addr, b"", Some("203.0.113.2")).is_ok(), "client 2 behind the same proxy");
    let text = metrics(addr, "");
    assert!(text.contains("reason=\"handshake_rate\"} 1\n"), "{text}");
}

#[test]
fn serve_help_lists_the_proxy_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--trusted-proxies",
        "FANOUT_TRUSTED_PROXIES",
        "--proxy-protocol",
        "FANOUT_PROXY_PROTOCOL",
        "--handshake-rate-per-ip",
        "FANOUT_HANDSHAKE_RATE_PER_IP",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}

/// `fanout config check` on a file holding `text`: whether it passed, and what it said.
fn config_check(name: &str, text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("fanout-proxy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fanout")).args(["config", "check"]).arg(&path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_file_takes_the_proxy_settings_and_names_bad_ones() {
    let (ok, said) = config_check(
        "good.toml",
        "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nproxy_protocol = true\nhandshake_rate_per_ip = \"5/m:10\"\n",
    );
    assert!(ok, "{said}");
    for (name, text, named) in [
        ("cidr.toml", "trusted_proxies = [\"10.0.0.0/40\"]\n", "trusted_proxies"),
        ("rate.toml", "handshake_rate_per_ip = \"fast\"\n", "handshake_rate_per_ip"),
        ("alone.toml", "proxy_protocol = true\n", "trusted_proxies"),
    ] {
        let (ok, said) = config_check(name, text);
        assert!(!ok && said.contains(name) && said.contains(named), "{text}: {said}");
    }
}
