//! broadcast's HTTP publisher: the keep-alive connections that `--via http` and `--protocol
//! pusher` publish over, the requests they write and the answers they read.
//!
//! Owns: `HttpPublisher` (its connections, each with the requests it has in flight, in order),
//! `Api` (fanout's `POST /api/publish` with a bearer key, or Pusher's signed
//! `POST /apps/ID/events`) and `Answer`. Requests are pipelined: a connection carries any number
//! at once and HTTP/1.1 answers them in order, so the k-th answer on a connection is for its k-th
//! request. A publish goes to the connection with the fewest requests in flight. Everything runs
//! on the reactor's thread: a request is appended to the connection's write buffer, an answer is
//! parsed from whatever bytes arrived, nothing blocks. Must not: know subscribers or the WebSocket
//! dialects; broadcast decides when to publish and what an answer means for its counts.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use crate::net::Net;
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
    /// When the request was written.
    pub sent: Instant,
    /// The publish's counter (`n` in the data).
    pub n: u64,
    pub status: u16,
    /// The channel sequence number the server gave it: fanout's `seq`; Pusher has none, so `n`.
    pub seq: Option<u64>,
}

#[derive(Debug)]
struct Conn {
    id: usize,
    /// Bytes of an answer not complete yet.
    buf: Vec<u8>,
    /// (written at, n) of each request not answered yet, oldest first.
    in_flight: VecDeque<(Instant, u64)>,
}

/// The publisher's HTTP connections.
#[derive(Debug)]
pub struct HttpPublisher {
    api: Api,
    host: String,
    channel: String,
    conns: Vec<Conn>,
    /// A connection that was open ended: publishing stops.
    broken: bool,
    body: Vec<u8>,
    /// Answers parsed by the last `on_data`, for the caller to take.
    pub answers: Vec<Answer>,
}

impl HttpPublisher {
    pub fn new(api: Api, host: String, channel: String) -> HttpPublisher {
        HttpPublisher { api, host, channel, conns: Vec::new(), broken: false, body: Vec::new(), answers: Vec::new() }
    }

    /// Connection `id` is open.
    pub fn add(&mut self, id: usize) {
        self.conns.push(Conn { id, buf: Vec::new(), in_flight: VecDeque::new() });
    }

    /// Connection `id` ended: returns how many of its requests will never be answered, or `None`
    /// if it is not one of ours.
    pub fn remove(&mut self, id: usize) -> Option<u64> {
        let at = self.conns.iter().position(|c| c.id == id)?;
        let conn = self.conns.swap_remove(at);
        self.broken = true;
        Some(conn.in_flight.len() as u64)
    }

    /// Whether a publish can be written: connections are open and none was lost.
    pub fn ready(&self) -> bool {
        !self.conns.is_empty() && !self.broken
    }

    /// Writes publish number `n`, stamped `t` (the run's clock) and padded with `pad`, on the
    /// least busy connection; returns the body's length, or `None` if no connection can take it.
    pub fn publish(&mut self, net: &mut Net, now: Instant, n: u64, t: u64, pad: &str) -> Option<usize> {
        if !self.ready() {
            return None;
        }
        let at = (0..self.conns.len()).min_by_key(|&i| self.conns[i].in_flight.len())?;
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
        let (body, host, api) = (&self.body, &self.host, &self.api);
        let written = net.send_raw(self.conns[at].id, |b| {
            match (api, &query) {
                (Api::Pusher { path, .. }, Some(q)) => {
                    let _ = write!(b, "POST {path}?{q} HTTP/1.1\r\n");
                }
                _ => b.extend_from_slice(b"POST /api/publish HTTP/1.1\r\n"),
            }
            let _ = write!(b, "Host: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
            if let Api::Fanout { key: Some(key) } = api {
                let _ = write!(b, "Authorization: Bearer {key}\r\n");
            }
            b.extend_from_slice(b"\r\n");
            b.extend_from_slice(body);
        });
        if !written {
            return None;
        }
        self.conns[at].in_flight.push_back((now, n));
        Some(self.body.len())
    }

    /// Bytes arrived on connection `id`: every complete answer goes to `self.answers`. An answer
    /// that cannot be read closes the connection (it is counted as a failure).
    pub fn on_data(&mut self, net: &mut Net, id: usize, data: &[u8]) {
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        conn.buf.extend_from_slice(data);
        let fanout = matches!(self.api, Api::Fanout { .. });
        loop {
            let (status, head, len) = match parse_head(&conn.buf) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(why) => {
                    net.stats.fail(format!("publish: {why}"));
                    net.close(id, false);
                    return;
                }
            };
            if conn.buf.len() < head + len {
                return;
            }
            let Some((sent, n)) = conn.in_flight.pop_front() else {
                net.stats.fail("publish: an HTTP answer to no request");
                net.close(id, false);
                return;
            };
            let seq = if fanout { json_u64(&conn.buf[head..head + len], "seq") } else { Some(n) };
            if status != 200 {
                net.stats.fail(format!("publish: HTTP {status}"));
            }
            self.answers.push(Answer { sent, n, status, seq });
            conn.buf.drain(..head + len);
        }
    }
}

/// The status, head length and body length of the answer at the start of `buf`; `None` while
/// the head is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, &'static str> {
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
    Ok(Some((resp.code.unwrap_or(0), head, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_heads() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_head(ok), Ok(Some((200, ok.len() - 2, 2))));
        assert_eq!(parse_head(&ok[..20]), Ok(None));
        assert_eq!(parse_head(b"HTTP/1.1 401 Unauthorized\r\n\r\n"), Ok(Some((401, 29, 0))));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
