//! broadcast's HTTP publisher: the connections that `--via http` and `--protocol pusher` publish
//! over, the requests they write and the answers they read.
//!
//! Owns: `HttpPublisher` (its connections, each with the requests it has in flight, in order, and
//! the requests waiting for a connection), `Api` (fanout's `POST /api/publish` with a bearer key,
//! or Pusher's signed `POST /apps/ID/events`) and `Answer`. Everything runs on the reactor's
//! thread: a request is appended to a connection's write buffer, an answer is parsed from whatever
//! bytes arrived, nothing blocks.
//!
//! Keep-alive servers (fanout) get requests pipelined: a connection carries any number at once
//! and HTTP/1.1 answers them in order, so the k-th answer on a connection is for its k-th request;
//! a publish goes to the connection with the fewest in flight. A server that answers
//! `Connection: close` (sockudo does, on every API route) gets one request per connection: the
//! answered connection is closed and another opened in its place (same global index), requests
//! written behind the answer are sent again (the server never read them), and publishes wait in
//! a queue for a fresh connection. Latency and the ack time run from when a publish was due, so
//! the wait and the connects count against that server. A connection that ends with requests in
//! flight loses them (counted as errors) and is replaced too.
//!
//! Must not: know subscribers or the WebSocket dialects; broadcast decides when to publish and
//! what an answer means for its counts.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use crate::net::{Kind, Net};
use crate::pusher;
use crate::util::unix_now_ns;
use crate::wire::json_u64;

/// The HTTP API a publish goes to.
#[derive(Debug, Clone)]
pub enum Api {
    /// fanout's `POST /api/publish` (`{"channel":C,"data":{...}}`), with `Authorization: Bearer`.
    Fanout { key: Option<String> },
    /// Pusher's `POST /apps/ID/events` (`{"name":..,"channels":[C],"data":"<JSON string>"}`),
    /// signed with the app's key and secret; `path` is `/apps/ID/events`.
    Pusher { path: String, key: String, secret: String },
}

/// One request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// When the publish was due (it may have waited for a connection).
    pub sent: Instant,
    pub status: u16,
    /// The channel sequence number the server gave it: fanout's `seq`; Pusher has none, so `n`.
    pub seq: Option<u64>,
}

/// A publish: when it was due, its counter, its whole request.
#[derive(Debug)]
struct Request {
    at: Instant,
    n: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Conn {
    id: usize,
    /// Its global connection index (a replacement reuses it).
    index: u64,
    /// Bytes of an answer not complete yet.
    buf: Vec<u8>,
    /// Requests written and not answered yet, oldest first.
    in_flight: VecDeque<Request>,
}

/// The publisher's HTTP connections and its queue.
#[derive(Debug)]
pub struct HttpPublisher {
    api: Api,
    host: String,
    channel: String,
    conns: Vec<Conn>,
    /// Publishes waiting for a connection that may take them.
    queue: VecDeque<Request>,
    /// Replacement connections asked for and not open yet.
    reopening: u64,
    /// The server closes each connection after one answer.
    one_shot: bool,
    body: Vec<u8>,
    /// Answers parsed by the last `on_data`, for the caller to take.
    pub answers: Vec<Answer>,
}

impl HttpPublisher {
    pub fn new(api: Api, host: String, channel: String) -> HttpPublisher {
        HttpPublisher {
            api,
            host,
            channel,
            conns: Vec::new(),
            queue: VecDeque::new(),
            reopening: 0,
            one_shot: false,
            body: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Connection `id` is open: it takes what waits.
    pub fn add(&mut self, net: &mut Net, id: usize) {
        let Some(index) = net.index_of(id) else { return };
        self.reopening = self.reopening.saturating_sub(1);
        self.conns.push(Conn { id, index, buf: Vec::new(), in_flight: VecDeque::new() });
        self.flush(net);
    }

    /// Whether publishing can go on: a connection is open or on its way.
    pub fn ready(&self) -> bool {
        !self.conns.is_empty() || self.reopening > 0
    }

    /// Publishes number `n`, stamped `t` (the run's clock) and padded with `pad`, due at `now`:
    /// written at once if a connection can take it, queued otherwise. Returns the body's length.
    pub fn publish(&mut self, net: &mut Net, now: Instant, n: u64, t: u64, pad: &str) -> usize {
        let channel = &self.channel;
        self.body.clear();
        let query = match &self.api {
            Api::Fanout { .. } => {
                let _ = write!(self.body, r#"{{"channel":"{channel}","data":{{"t":{t},"n":{n},"p":"{pad}"}}}}"#);
                None
            }
            Api::Pusher { path, key, secret } => {
                let _ = write!(
                    self.body,
                    r#"{{"name":"{}","channels":["{channel}"],"data":"{{\"t\":{t},\"n\":{n},\"p\":\"{pad}\"}}"}}"#,
                    pusher::EVENT
                );
                let now_s = unix_now_ns() / 1_000_000_000;
                Some(pusher::signed_query("POST", path, key, secret, &self.body, now_s))
            }
        };
        let mut b = Vec::with_capacity(self.body.len() + 300);
        match (&self.api, &query) {
            (Api::Pusher { path, .. }, Some(q)) => {
                let _ = write!(b, "POST {path}?{q} HTTP/1.1\r\n");
            }
            _ => b.extend_from_slice(b"POST /api/publish HTTP/1.1\r\n"),
        }
        let _ = write!(
            b,
            "Host: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            self.body.len()
        );
        if let Api::Fanout { key: Some(key) } = &self.api {
            let _ = write!(b, "Authorization: Bearer {key}\r\n");
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(&self.body);
        self.queue.push_back(Request { at: now, n, bytes: b });
        self.flush(net);
        self.body.len()
    }

    /// Writes waiting requests to the connections that may take them: the least busy, and with
    /// a one-shot server only an idle one.
    fn flush(&mut self, net: &mut Net) {
        while !self.queue.is_empty() {
            let one_shot = self.one_shot;
            let free = (0..self.conns.len())
                .filter(|&i| !one_shot || self.conns[i].in_flight.is_empty())
                .min_by_key(|&i| self.conns[i].in_flight.len());
            let Some(at) = free else { return };
            let request = self.queue.pop_front().expect("not empty");
            let conn = &mut self.conns[at];
            if !net.send_raw(conn.id, |b| b.extend_from_slice(&request.bytes)) {
                self.queue.push_front(request);
                return;
            }
            conn.in_flight.push_back(request);
        }
    }

    /// Connection `id` ended (not by our doing): returns how many requests it took along
    /// unanswered (0 if it was not ours); a replacement is opened.
    pub fn on_end(&mut self, net: &mut Net, id: usize) -> u64 {
        let Some(at) = self.conns.iter().position(|c| c.id == id) else {
            return 0;
        };
        let conn = self.conns.swap_remove(at);
        let lost = conn.in_flight.len() as u64;
        if lost > 0 {
            net.stats.counters.errors += lost;
            net.stats.fail("publish: connection ended before answering");
        }
        self.reopen(net, conn.index);
        lost
    }

    fn reopen(&mut self, net: &mut Net, index: u64) {
        self.reopening += 1;
        net.open(index, Kind::Raw);
    }

    /// Bytes arrived on connection `id`: every complete answer goes to `self.answers`. An answer
    /// that cannot be read closes the connection (a failure; its requests are lost).
    pub fn on_data(&mut self, net: &mut Net, id: usize, data: &[u8]) {
        let Some(at) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let conn = &mut self.conns[at];
        conn.buf.extend_from_slice(data);
        let fanout = matches!(self.api, Api::Fanout { .. });
        loop {
            let (head, len, close) = match parse_head(&conn.buf) {
                Ok(Some(h)) => (h.status, h.len, h.close),
                Ok(None) => return,
                Err(why) => {
                    net.stats.fail(format!("publish: {why}"));
                    net.close(id, false);
                    return self.lose(net, id);
                }
            };
            let (status, head_len) = head;
            if conn.buf.len() < head_len + len {
                return;
            }
            let Some(request) = conn.in_flight.pop_front() else {
                net.stats.fail("publish: an HTTP answer to no request");
                net.close(id, false);
                return self.lose(net, id);
            };
            let seq = if fanout { json_u64(&conn.buf[head_len..head_len + len], "seq") } else { Some(request.n) };
            if status != 200 {
                net.stats.fail(format!("publish: HTTP {status}"));
            }
            self.answers.push(Answer { sent: request.at, status, seq });
            conn.buf.drain(..head_len + len);
            if close {
                // The server read nothing after this request: what was written behind it goes
                // first on the next connections, one at a time from now on.
                self.one_shot = true;
                let conn = self.conns.swap_remove(at);
                for request in conn.in_flight.into_iter().rev() {
                    self.queue.push_front(request);
                }
                net.close(id, false);
                self.reopen(net, conn.index);
                self.flush(net);
                return;
            }
        }
    }

    /// Connection `id` was closed over a bad answer: its requests are lost, a replacement opened.
    fn lose(&mut self, net: &mut Net, id: usize) {
        self.on_end(net, id);
    }
}

/// An answer's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// (status, head length)
    status: (u16, usize),
    /// Body length (Content-Length; 0 without).
    len: usize,
    /// `Connection: close`: the server closes after this answer.
    close: bool,
}

/// The head of the answer at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("unparsable HTTP response"),
    };
    let value = |name: &str| {
        resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if value("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Err("chunked HTTP responses are not supported");
    }
    let len = value("content-length").and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
    let close = value("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    Ok(Some(Head { status: (resp.code.unwrap_or(0), head), len, close }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_heads() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_head(ok), Ok(Some(Head { status: (200, ok.len() - 2), len: 2, close: false })));
        assert_eq!(parse_head(&ok[..20]), Ok(None));
        let refused = b"HTTP/1.1 401 Unauthorized\r\nConnection: keep-alive, Close\r\n\r\n";
        assert_eq!(parse_head(refused), Ok(Some(Head { status: (401, refused.len()), len: 0, close: true })));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
