//! The admin endpoints (issue 13, item 4) end to end: `--admin-listen` moves `/metrics` and
//! `/api/stats` to a second listener that reports on the main server (404 on the main one),
//! `--admin-token` guards them wherever they are served while `/healthz` stays open, the admin
//! listener takes no WebSocket and stops with the main server, a non-loopback admin address
//! without a token refuses to start, and `--no-demo` turns the demo page off.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::*;
use fanout_gateway::admin::Servers;
use fanout_gateway::app::{self as gateway, GatewayConfig};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

fn http(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    let response = http_exchange(addr, request.as_bytes());
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

const TOKEN: &str = "Authorization: Bearer adm1n\r\n";

fn admin_config() -> GatewayConfig {
    GatewayConfig {
        api_key: Some("key".into()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_token: Some("adm1n".into()),
        ..GatewayConfig::default()
    }
}

fn start(gateway: GatewayConfig) -> Servers {
    gateway::start_servers(test_config(), gateway).expect("gateway starts")
}

fn subscriber(addr: SocketAddr, channel: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).expect("upgrade");
    ws.send(Message::text(json!({"op": "subscribe", "channel": channel}).to_string())).unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => assert_eq!(json_of(&t)["op"], "subscribed", "{t}"),
        other => panic!("{other:?}"),
    }
    ws
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_admin_listener_serves_the_main_servers_figures_and_the_main_one_no_longer_does() {
    let servers = start(admin_config());
    let (main, admin) = (servers.main.local_addr(), servers.admin_addr().expect("an admin listener"));
    assert_ne!(main, admin);
    let _news = subscriber(main, "news");
    let _news2 = subscriber(main, "news");

    for path in ["/metrics", "/api/stats"] {
        let (status, body) = http(main, "GET", path, TOKEN);
        assert_eq!(status, 404, "{path} on the main listener: {body}");
    }

    let (status, text) = http(admin, "GET", "/metrics", TOKEN);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        metric(&text, "fanout_websockets"),
        Some(2.0),
        "the main server's connections, not the admin's:\n{text}"
    );
    assert_eq!(metric(&text, "fanout_channels"), Some(1.0), "the application's gauge:\n{text}");

    let (status, stats) = http(admin, "GET", "/api/stats", TOKEN);
    assert_eq!(status, 200, "{stats}");
    let stats = json_of(&stats);
    assert_eq!(stats["top_channels"], json!([{"channel": "news", "subscribers": 2}]), "{stats}");
    assert_eq!(stats["workers"][0]["connections"], 2, "{stats}");

    // Not the admin listener's business: other paths, methods, WebSocket upgrades.
    assert_eq!(http(admin, "GET", "/", TOKEN).0, 404);
    assert_eq!(http(admin, "POST", "/metrics", TOKEN).0, 405);
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let refused = http_exchange(admin, format!("GET / HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n").as_bytes());
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    // The main listener still serves everything else.
    assert_eq!(http(main, "GET", "/healthz", "").0, 200);
    assert_eq!(http(main, "GET", "/", "").0, 200, "the demo page is on by default");
    servers.stop().expect("both stop");
}

#[test]
fn the_admin_token_guards_metrics_and_stats_but_not_healthz() {
    let servers = start(admin_config());
    let admin = servers.admin_addr().unwrap();
    for path in ["/metrics", "/api/stats"] {
        let (status, body) = http(admin, "GET", path, "");
        assert_eq!(status, 401, "{path} without a token");
        assert!(json_of(&body)["error"].as_str().unwrap().contains("missing admin token"), "{body}");
        let (status, body) = http(admin, "GET", path, "Authorization: Bearer adm1N\r\n");
        assert_eq!((status, json_of(&body)["error"].as_str()), (401, Some("invalid admin token")), "{path}");
        let (status, body) = http(admin, "GET", path, "Authorization: Bearer key\r\n");
        assert_eq!(status, 401, "the API key is not the admin token: {body}");
        assert!(!body.contains("adm1n"), "the token is never echoed");
    }
    let (status, body) = http(admin, "GET", "/healthz", "");
    assert_eq!((status, json_of(&body)), (200, json!({"status": "ok"})), "load balancers probe without a token");
    servers.stop().unwrap();
}

#[test]
fn without_an_admin_listener_the_token_guards_the_main_listeners_metrics_and_stats() {
    let config = GatewayConfig { admin_listen: None, ..admin_config() };
    let server = gateway::start(test_config(), config).unwrap();
    let addr = server.local_addr();
    assert_eq!(http(addr, "GET", "/metrics", "").0, 401);
    assert_eq!(http(addr, "GET", "/api/stats", "Authorization: Bearer key\r\n").0, 401, "the admin token, not the key");
    let (status, text) = http(addr, "GET", "/metrics", TOKEN);
    assert!(status == 200 && metric(&text, "fanout_websockets").is_some(), "{text}");
    assert_eq!(http(addr, "GET", "/api/stats", TOKEN).0, 200);
    assert_eq!(http(addr, "GET", "/healthz", "").0, 200);

    // No token, no admin listener: as before, /metrics open, /api/stats behind the API key.
    let plain =
        gateway::start(test_config(), GatewayConfig { api_key: Some("key".into()), ..GatewayConfig::default() })
            .unwrap();
    let addr = plain.local_addr();
    assert_eq!(http(addr, "GET", "/metrics", "").0, 200);
    assert_eq!(http(addr, "GET", "/api/stats", "").0, 401);
    assert_eq!(http(addr, "GET", "/api/stats", "Authorization: Bearer key\r\n").0, 200);
}

#[test]
fn an_admin_listener_without_a_token_is_open_and_says_when_the_main_server_drains() {
    let servers = start(GatewayConfig { admin_token: None, ..admin_config() });
    let admin = servers.admin_addr().unwrap();
    assert_eq!(http(admin, "GET", "/metrics", "").0, 200, "a loopback admin listener is its own protection");
    assert_eq!(http(admin, "GET", "/api/stats", "").0, 200);
    let _client = subscriber(servers.main.local_addr(), "news");
    servers.main.shutdown();
    let (status, body) = http(admin, "GET", "/healthz", "");
    assert_eq!((status, json_of(&body)["status"].as_str()), (503, Some("draining")), "the main server's state");
    let stats = json_of(&http(admin, "GET", "/api/stats", "").1);
    assert_eq!(stats["draining"], true, "{stats}");
    servers.join().expect("the main server drains, then the admin one stops");
    assert!(TcpStream::connect(admin).is_err(), "the admin listener is closed once join returns");
}

#[test]
fn start_without_servers_refuses_an_admin_listener() {
    let err = gateway::start(test_config(), admin_config()).err().expect("refused");
    assert!(err.to_string().contains("start_servers"), "{err}");
}

#[test]
fn no_demo_turns_the_demo_page_off() {
    let server = gateway::start(test_config(), GatewayConfig { demo: false, ..GatewayConfig::default() }).unwrap();
    let addr = server.local_addr();
    for path in ["/", "/index.html"] {
        let (status, body) = http(addr, "GET", path, "");
        assert_eq!((status, json_of(&body)), (404, json!({"error": "not found"})), "{path}");
    }
    assert_eq!(http(addr, "GET", "/healthz", "").0, 200);
    assert!(tungstenite::connect(format!("ws://{addr}/")).is_ok(), "WebSocket clients still connect at /");
}

fn fanout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fanout"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANOUT_")) {
        c.env_remove(key);
    }
    c
}

#[test]
fn the_binary_serves_the_admin_listener_and_stops_it_on_sigterm() {
    let mut command = fanout();
    command.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--no-demo"]);
    command.env("FANOUT_ADMIN_TOKEN", "adm1n");
    let (mut child, main, log) = spawn_logged(command);
    let line = log.lock().unwrap().iter().find(|l| l.contains("admin listener at")).cloned().expect("the admin line");
    let admin: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert_eq!(http(main, "GET", "/metrics", TOKEN).0, 404);
    assert_eq!(http(main, "GET", "/", "").0, 404, "--no-demo");
    assert_eq!(http(admin, "GET", "/metrics", "").0, 401, "the token from FANOUT_ADMIN_TOKEN");
    assert_eq!(http(admin, "GET", "/metrics", TOKEN).0, 200);
    let status = Command::new("kill").args(["-s", "TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "drained and stopped, the admin listener with it");
    assert!(TcpStream::connect(admin).is_err(), "nothing listens on the admin address any more");
}

#[test]
fn a_public_admin_listener_without_a_token_refuses_to_start() {
    let out = fanout().args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--admin-token"), "{said}");
    let help = fanout().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in ["--admin-listen", "--admin-token", "--no-demo", "--publish-batch-max", "--max-body-size"] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}
