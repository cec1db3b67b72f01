//! One `fanout` process of a test cluster, driven from outside: started with flags on port 0,
//! killed with SIGKILL, and asked over plain HTTP (publish, the Pusher API, health, metrics).
//!
//! Owns: the node's command line (always the Pusher app `1`/`key`/`secret`, the environment's
//! `FANOUT_*` variables removed so the flags alone decide), and waits on its health or metrics
//! with a deadline. Must not: sleep for correctness; every wait polls a condition.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout_gateway::pusher::signature::sign_rest;
use serde_json::{json, Value};

use crate::common::{http_exchange, spawn_listening, ChildProcess};

pub const APP_ID: &str = "1";
pub const KEY: &str = "key";
pub const SECRET: &str = "secret";

/// A running `fanout serve`.
pub struct Node {
    /// None once killed; behind a lock so that a test can kill a node its threads also borrow.
    child: Mutex<Option<ChildProcess>>,
    pub addr: SocketAddr,
}

/// `fanout serve` with the test's defaults and `args`, the environment's `FANOUT_*` removed.
pub fn command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fanout"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANOUT_")) {
        c.env_remove(key);
    }
    c.args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"]);
    c.args(["--pusher-app-id", APP_ID, "--pusher-app-key", KEY, "--pusher-app-secret", SECRET]);
    c.args(args);
    c
}

/// `["--redis-url", URL]` followed by `extra`.
pub fn redis_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--redis-url".to_owned(), url.to_owned()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Node {
    /// Starts a node with `args` after the defaults and waits for its "listening on" line.
    pub fn start(args: &[String]) -> Node {
        Node::spawn(command(args))
    }

    /// Starts a prepared command (see `command`).
    pub fn spawn(command: Command) -> Node {
        let (child, addr) = spawn_listening(command);
        Node { child: Mutex::new(Some(child)), addr }
    }

    /// Starts a node of the cluster on the Redis at `url`, with `extra` flags.
    pub fn clustered(url: &str, extra: &[&str]) -> Node {
        Node::start(&redis_args(url, extra))
    }

    /// SIGKILL: the node dies without a goodbye to Redis or to its clients.
    pub fn kill9(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            child.0.kill().unwrap();
            child.0.wait().unwrap();
        }
    }

    /// Sends signal `name` (`TERM`: a graceful stop) to the node.
    pub fn signal(&self, name: &str) {
        let pid = self.child.lock().unwrap().as_ref().expect("the node runs").0.id().to_string();
        let status = Command::new("kill").args(["-s", name, &pid]).status().unwrap();
        assert!(status.success(), "kill -s {name} {pid}");
    }

    /// One HTTP request on a fresh connection: status and body.
    pub fn http(&self, method: &str, target: &str, headers: &str, body: &str) -> (u16, String) {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = http_exchange(self.addr, request.as_bytes());
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// `POST /api/publish`: the status and the JSON answer.
    pub fn publish(&self, channel: &str, data: Value) -> (u16, Value) {
        self.publish_body(json!({"channel": channel, "data": data}))
    }

    /// `POST /api/publish` with a whole body (an `event` name, say).
    pub fn publish_body(&self, body: Value) -> (u16, Value) {
        let (status, body) = self.http("POST", "/api/publish", "", &body.to_string());
        (status, parse(&body))
    }

    /// `POST /api/publish` that must succeed: its seq.
    pub fn publish_seq(&self, channel: &str, data: Value) -> u64 {
        let (status, answer) = self.publish(channel, data);
        assert_eq!(status, 200, "{answer}");
        answer["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {answer}"))
    }

    /// A request to the Pusher HTTP API, signed as the SDKs sign it.
    pub fn pusher_api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let query = sign_rest(method, path, &[], body.as_bytes(), KEY, SECRET, now);
        let (status, body) = self.http(method, &format!("{path}?{query}"), "", body);
        (status, parse(&body))
    }

    /// `POST /apps/1/events`.
    pub fn trigger(&self, body: Value) -> (u16, Value) {
        self.pusher_api("POST", &format!("/apps/{APP_ID}/events"), &body.to_string())
    }

    /// `GET /healthz`: status and JSON.
    pub fn healthz(&self) -> (u16, Value) {
        let (status, body) = self.http("GET", "/healthz", "", "");
        (status, parse(&body))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.http("GET", "/metrics", "", "");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The sum of metric `name` over its label sets; None when it has no sample.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.metrics(), name)
    }

    /// Waits until `/healthz` says Redis is `up` (200) or `down` (503).
    pub fn wait_redis(&self, state: &str, timeout: Duration) {
        let want = if state == "up" { 200 } else { 503 };
        let deadline = Instant::now() + timeout;
        loop {
            let (status, health) = self.healthz();
            if status == want && health["redis"] == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: healthz did not say redis {state} within {timeout:?}: {status} {health}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A body as JSON, or the text as a JSON string when it is not JSON.
fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
}

/// The sum of metric `name` in Prometheus text over its label sets; None when it has no sample.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("bad sample {line:?}"));
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// Polls `cond` until it holds; fails after `timeout` with `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
