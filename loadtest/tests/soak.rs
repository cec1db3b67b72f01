//! `fanout-load soak` against the gateway binary (built by the test itself, see `common`): a short
//! mix passes and reports each malformed case's answer, and a history too small for the
//! flappers' resumes makes it fail with the reason.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::start_gateway;

/// Runs `fanout-load soak` with `args`; returns whether it passed and its stdout.
fn soak(args: &[&str]) -> (bool, String) {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_fanout-load")).arg("soak").args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    // The soak bounds itself (duration, then a drain of at most 10 s); reading to EOF waits for it.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fanout-load soak {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    out.push_str(&reader.join().unwrap());
    (status.success(), out)
}

fn csv_path(name: &str) -> String {
    std::env::temp_dir().join(format!("fanout-soak-test-{}-{name}.csv", std::process::id())).display().to_string()
}

#[test]
fn a_short_soak_passes_and_reports_every_answer() {
    let server = start_gateway(&["--api-key", "k", "--history-size", "1000"]);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let pid = server.pid().to_string();
    let csv = csv_path("pass");
    let (ok, out) = soak(&[
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--api-key",
        "k",
        "--duration",
        "8s",
        "--sample-every",
        "1s",
        "--conns",
        "20",
        "--flappers",
        "10",
        "--flap-hold",
        "1s",
        "--channels",
        "2",
        "--rate",
        "50",
        "--churn-rate",
        "5",
        "--churn-life",
        "1s",
        "--slow-percent",
        "5",
        "--malformed-rate",
        "5",
        "--handshake-timeout",
        "10s",
        "--csv",
        &csv,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("\nPASS\n"), "{out}");
    for (case, answer) in [
        ("unmasked frame", "close 1002"),
        ("bad UTF-8 text", "close 1007"),
        ("oversize frame", "close 1009"),
        ("garbage handshake", "HTTP 400"),
        ("no Sec-WebSocket-Key", "HTTP 400"),
    ] {
        let line = out.lines().find(|l| l.trim_start().starts_with(case)).unwrap_or_else(|| panic!("{case}: {out}"));
        assert!(line.contains(answer), "{line}");
    }
    assert!(out.contains("gaps 0, duplicates 0"), "{out}");
    // Every healthy subscriber got messages: 50/s for 8 s over 2 channels reach 30 subscribers.
    let delivered: u64 = out
        .split("delivered in order to healthy subscribers: ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(delivered > 2000, "{out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let _ = std::fs::remove_file(&csv);
    assert!(text.starts_with("t_s,rss_bytes,fds,"), "{text}");
    assert!(text.lines().count() >= 8, "a sample a second: {text}");
}

#[test]
fn a_resume_the_history_cannot_serve_fails_the_soak() {
    // One message of history: a flapper away for a fraction of a second at 100 publishes/s on
    // one channel misses more than that, and its resume comes back not recovered.
    let server = start_gateway(&["--api-key", "k", "--history-size", "1"]);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    let pid = server.pid().to_string();
    let csv = csv_path("fail");
    let (ok, out) = soak(&[
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--api-key",
        "k",
        "--duration",
        "6s",
        "--sample-every",
        "1s",
        "--conns",
        "2",
        "--flappers",
        "5",
        "--flap-hold",
        "2s",
        "--channels",
        "1",
        "--rate",
        "100",
        "--churn-rate",
        "0",
        "--slow-percent",
        "0",
        "--malformed-rate",
        "0",
        "--csv",
        &csv,
    ]);
    let _ = std::fs::remove_file(&csv);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL: "), "{out}");
    assert!(out.contains("not recovered"), "{out}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout-load"))
        .args(["soak", "--api-key", "k", "--duration", "10s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-pid"), "{out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_fanout-load"))
        .args(["soak", "--api-key", "k", "--server-pid", "1", "--duration", "10s", "--sample-every", "5s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sample-every"), "{out:?}");
}
