//! Small WebSocket clients for the cluster tests (tungstenite): the native `fanout.v1` protocol
//! and the Pusher protocol 7 with signed private and presence subscriptions.
//!
//! Owns: connecting, JSON frames out, JSON frames in with a deadline (`recv_within` answers
//! None on silence, so a test can wait for an event or prove its absence for a bounded time),
//! and telling a dead server (`Next::Closed`) from a quiet one. Must not: sleep.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use fanout_gateway::pusher::signature::sign;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::common::IO_TIMEOUT;
use crate::node::{KEY, SECRET};

/// What the next read gave.
#[derive(Debug)]
pub enum Next {
    Frame(Value),
    /// Nothing within the time asked for.
    Silent,
    /// The connection is gone (close frame, EOF, reset): its node died or closed it.
    Closed(String),
}

/// A WebSocket carrying JSON text frames.
pub struct Json {
    ws: WebSocket<TcpStream>,
}

impl Json {
    pub fn connect(addr: SocketAddr, path: &str) -> Json {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream)
            .unwrap_or_else(|e| panic!("upgrade to ws://{addr}{path}: {e}"));
        Json { ws }
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    /// Queues a frame without flushing (for pipelining; `flush` sends them).
    pub fn write(&mut self, v: Value) {
        self.ws.write(Message::text(v.to_string())).expect("write");
    }

    pub fn flush(&mut self) {
        self.ws.flush().expect("flush");
    }

    /// The next JSON frame within `within`.
    pub fn next(&mut self, within: Duration) -> Next {
        self.ws.get_mut().set_read_timeout(Some(within.max(Duration::from_millis(1)))).unwrap();
        let next = loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    break Next::Frame(serde_json::from_str(&t).unwrap_or_else(|e| panic!("{t:?}: {e}")))
                }
                Ok(Message::Close(frame)) => break Next::Closed(format!("close frame {frame:?}")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    break Next::Silent
                }
                Err(e) => break Next::Closed(e.to_string()),
            }
        };
        if !matches!(next, Next::Closed(_)) {
            self.ws.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        }
        next
    }

    /// The next frame within `within`, None on silence; a closed connection fails the test.
    pub fn recv_within(&mut self, within: Duration) -> Option<Value> {
        match self.next(within) {
            Next::Frame(v) => Some(v),
            Next::Silent => None,
            Next::Closed(why) => panic!("connection closed: {why}"),
        }
    }

    /// The next frame; fails the test after `IO_TIMEOUT` of silence.
    pub fn recv(&mut self) -> Value {
        self.recv_within(IO_TIMEOUT).unwrap_or_else(|| panic!("no frame within {IO_TIMEOUT:?}"))
    }
}

/// A native-protocol client.
pub struct Native(pub Json);

impl Native {
    pub fn connect(addr: SocketAddr) -> Native {
        Native(Json::connect(addr, "/"))
    }

    /// Subscribes and returns the `subscribed` answer.
    pub fn subscribe(&mut self, channel: &str) -> Value {
        self.0.send(json!({"op": "subscribe", "channel": channel}));
        let reply = self.0.recv();
        assert_eq!((reply["op"].as_str(), reply["channel"].as_str()), (Some("subscribed"), Some(channel)), "{reply}");
        reply
    }

    /// Subscribes with `since` and `epoch`; returns the `subscribed` answer.
    pub fn resume(&mut self, channel: &str, since: u64, epoch: &str) -> Value {
        self.0.send(json!({"op": "subscribe", "channel": channel, "since": since, "epoch": epoch}));
        let reply = self.0.recv();
        assert_eq!((reply["op"].as_str(), reply["channel"].as_str()), (Some("subscribed"), Some(channel)), "{reply}");
        reply
    }

    /// Publishes over the WebSocket with request id `id`; returns the answer (ack or error).
    pub fn publish(&mut self, channel: &str, data: Value, id: u64) -> Value {
        self.0.send(json!({"op": "publish", "channel": channel, "data": data, "id": id}));
        self.0.recv()
    }

    /// The next frame, which must be a message.
    pub fn message(&mut self) -> Value {
        let m = self.0.recv();
        assert_eq!(m["op"], "message", "{m}");
        m
    }
}

/// A Pusher-protocol client and its socket id.
pub struct Pusher {
    pub json: Json,
    pub socket_id: String,
}

/// `data` of a Pusher event, parsed (it is a JSON string).
pub fn data(event: &Value) -> Value {
    let text = event["data"].as_str().unwrap_or_else(|| panic!("data is not a string: {event}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// `KEY:signature` for a private or presence subscription.
pub fn channel_auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let message = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{KEY}:{}", sign(SECRET, &message))
}

impl Pusher {
    pub fn connect(addr: SocketAddr) -> Pusher {
        let mut json = Json::connect(addr, &format!("/app/{KEY}?protocol=7&client=js&version=8.4.0&flash=false"));
        let hello = json.recv();
        assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
        let socket_id = data(&hello)["socket_id"].as_str().expect("socket_id").to_owned();
        Pusher { json, socket_id }
    }

    /// Sends `pusher:subscribe` (signed for private and presence channels); returns the reply.
    pub fn try_subscribe(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let mut d = json!({"channel": channel});
        if channel.starts_with("private-") || channel.starts_with("presence-") {
            d["auth"] = channel_auth(&self.socket_id, channel, channel_data).into();
        }
        if let Some(cd) = channel_data {
            d["channel_data"] = cd.into();
        }
        self.json.send(json!({"event": "pusher:subscribe", "data": d}));
        self.json.recv()
    }

    /// Subscribes; the reply must be `subscription_succeeded`, which is returned.
    pub fn subscribe(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let reply = self.try_subscribe(channel, channel_data);
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded", "{reply}");
        assert_eq!(reply["channel"], channel, "{reply}");
        reply
    }

    pub fn send(&mut self, v: Value) {
        self.json.send(v)
    }

    pub fn recv(&mut self) -> Value {
        self.json.recv()
    }

    pub fn recv_within(&mut self, within: Duration) -> Option<Value> {
        self.json.recv_within(within)
    }
}
