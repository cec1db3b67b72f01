//! fanout-load over `wss://`: the echo example serves TLS with a certificate from a test CA made
//! here, and the generator's scenarios run through it, trusting that CA only.

mod common;

#[path = "../../tests/tls_common/mod.rs"]
mod tls_common;

use std::process::Command;

use common::{num, run_load, start_echo_with, Server};
use tls_common::Pki;

/// The echo example on TLS, and the path of the CA file its certificate chains to.
fn start_tls_echo(pki: &Pki) -> (Server, String) {
    let (cert, key) = pki.install(&pki.issue(7, 2040));
    let ca = pki.dir.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let server = start_echo_with(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    (server, ca.to_str().unwrap().to_owned())
}

#[test]
fn echo_over_wss_echoes_everything() {
    let pki = Pki::new("load-echo");
    let (server, ca) = start_tls_echo(&pki);
    let url = format!("wss://localhost:{}/", server.port);
    let (r, table) =
        run_load(&["echo", "--url", &url, "--tls-ca", &ca, "--conns", "10", "--in-flight", "2", "--duration", "1s"]);
    let received = num(&r, &["counters", "received"]);
    assert!(received > 50, "only {received} echoes:\n{table}");
    assert_eq!(num(&r, &["counters", "sent"]), received, "{table}");
    assert_eq!(num(&r, &["counters", "errors"]), 0, "{table}");
    assert_eq!(num(&r, &["connections", "opened"]), 10, "{table}");
    assert_eq!(num(&r, &["connections", "failed"]), 0, "{table}");
}

/// Every upgrade of `connect` is a new TLS handshake; with --tls-resume they resume.
#[test]
fn connect_over_wss_completes_every_handshake_full_or_resumed() {
    let pki = Pki::new("load-connect");
    let (server, ca) = start_tls_echo(&pki);
    let url = format!("wss://127.0.0.1:{}/", server.port);
    for resume in [false, true] {
        let mut args = vec!["connect", "--url", &url, "--tls-ca", &ca, "--conns", "200", "--duration", "10s"];
        if resume {
            args.push("--tls-resume");
        }
        let (r, table) = run_load(&args);
        assert_eq!(num(&r, &["connections", "opened"]), 200, "{table}");
        assert_eq!(num(&r, &["connections", "failed"]), 0, "{table}");
    }
}

/// A server whose certificate the given CA did not sign fails every upgrade, counted under its
/// TLS reason; `--tls-insecure` takes it.
#[test]
fn an_untrusted_certificate_fails_with_its_reason_unless_insecure() {
    let pki = Pki::new("load-untrusted");
    let (server, _) = start_tls_echo(&pki);
    let other = Pki::new("load-other-ca");
    let other_ca = other.dir.join("ca.pem");
    std::fs::write(&other_ca, other.ca_pem()).unwrap();
    let url = format!("wss://localhost:{}/", server.port);
    let out = Command::new(env!("CARGO_BIN_EXE_fanout-load"))
        .args(["echo", "--url", &url, "--tls-ca", other_ca.to_str().unwrap(), "--conns", "3", "--duration", "1s"])
        .args(["--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tls: invalid peer certificate"), "{stdout}");
    assert!(stdout.contains("0 opened, 3 failed"), "{stdout}");
    let (r, table) = run_load(&["echo", "--url", &url, "--tls-insecure", "--conns", "3", "--duration", "1s"]);
    assert_eq!(num(&r, &["connections", "opened"]), 3, "{table}");
    assert!(num(&r, &["counters", "received"]) > 0, "{table}");
}

/// Plain `ws://` with a TLS flag is a mistake worth saying, as is `wss://` with no trust.
#[test]
fn tls_flags_without_wss_and_wss_without_trust_are_refused() {
    for args in
        [&["echo", "--url", "ws://127.0.0.1:1/", "--tls-insecure"][..], &["echo", "--url", "wss://127.0.0.1:1/"][..]]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_fanout-load")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--tls"), "{args:?}: {stderr}");
    }
}
