//! The `fanout` binary with a certificate: the demo page, the HTTP API and the expiry metric over
//! https, a second TLS listener, and certificate rotation without a restart: by SIGHUP, and by
//! changing the files alone. New connections see the new certificate's serial, an open one keeps
//! working, and a corrupt certificate leaves the serving one in place with the reason logged.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/tls_common/mod.rs"]
mod tls_common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{spawn_logged, wait_until, ChildProcess, Log};
use tls_common::{https_exchange, peer_serial, tls_of, wss_connect, Pki, Wss};
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

fn start(pki: &Pki, extra: &[&str]) -> (ChildProcess, SocketAddr, Log) {
    let (cert, key) = pki.paths();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--tls-cert"]);
    command.arg(&cert).arg("--tls-key").arg(&key).args(extra);
    spawn_logged(command)
}

fn hup(child: &ChildProcess) {
    let status = Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// The serial a new client (no session to resume) is shown.
fn serial_now(addr: SocketAddr, pki: &Pki) -> u64 {
    peer_serial(tls_of(&wss_connect(addr, "/", &pki.client_config())))
}

/// The open connection still answers: a ping gets its pong.
fn assert_alive(ws: &mut Wss) {
    ws.send(Message::Ping(b"still there".to_vec())).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(payload) => return assert_eq!(&payload[..], b"still there"),
            Message::Text(_) => {} // a protocol greeting, if any
            other => panic!("{other:?}"),
        }
    }
}

fn logged(log: &Log, what: &str) -> bool {
    log.lock().unwrap().iter().any(|line| line.contains(what))
}

#[test]
fn sighup_rotates_the_certificate_for_new_connections_and_a_corrupt_one_is_refused() {
    let pki = Pki::new("gateway-hup");
    pki.install(&pki.issue(11, 2031));
    let (fanout, addr, log) = start(&pki, &["--tls-watch", "0"]);
    let mut old = wss_connect(addr, "/", &pki.client_config());
    assert_eq!(peer_serial(tls_of(&old)), 11);

    pki.install(&pki.issue(12, 2032));
    hup(&fanout);
    wait_until("the new serial", WAIT, || serial_now(addr, &pki) == 12);
    assert_alive(&mut old);

    let (cert, _) = pki.paths();
    tls_common::replace(&cert, b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n");
    hup(&fanout);
    wait_until("the refusal logged", WAIT, || logged(&log, "keeping the serving TLS certificate"));
    assert!(logged(&log, "cert.pem"), "{:?}", log.lock().unwrap());
    assert_eq!(serial_now(addr, &pki), 12);
    assert_alive(&mut old);
}

#[test]
fn changed_files_alone_rotate_the_certificate() {
    let pki = Pki::new("gateway-watch");
    pki.install(&pki.issue(21, 2031));
    let (_fanout, addr, log) = start(&pki, &["--tls-watch", "1"]);
    let mut old = wss_connect(addr, "/", &pki.client_config());
    pki.install(&pki.issue(22, 2031));
    wait_until("the new serial", WAIT, || serial_now(addr, &pki) == 22);
    assert_alive(&mut old);
    let (cert, _) = pki.paths();
    tls_common::replace(&cert, b"not a certificate");
    wait_until("the refusal logged", WAIT, || logged(&log, "keeping the serving certificate"));
    assert_eq!(serial_now(addr, &pki), 22);
    assert_alive(&mut old);
}

#[test]
fn the_demo_page_api_and_expiry_metric_over_https_and_a_second_listener() {
    let pki = Pki::new("gateway-https");
    pki.install(&pki.issue(31, 2031));
    let (_fanout, addr, log) = start(&pki, &["--tls-listen", "127.0.0.1:0"]);
    // The listening line names the plain address; the TLS one follows it.
    let line = log.lock().unwrap().iter().find(|l| l.contains("TLS on https://")).cloned().unwrap();
    let tls: SocketAddr = line.split("TLS on https://").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let client = pki.client_config();
    let page = https_exchange(tls, &client, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 ") && page.contains("<html"), "{page}");
    let plain = common::http_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 200 "), "{plain}");
    let publish = "{\"channel\":\"news\",\"data\":1}";
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{publish}",
        publish.len()
    );
    let answer = https_exchange(tls, &client, &request);
    assert!(answer.starts_with("HTTP/1.1 200 ") && answer.contains("\"seq\":1"), "{answer}");
    let metrics = https_exchange(tls, &client, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(metrics.contains("\nfanout_tls_cert_expiry_seconds 1924992000\n"), "{metrics}");
    assert!(metrics.contains("fanout_tls_handshakes_total{worker=\"0\"} 3"), "{metrics}");
}
