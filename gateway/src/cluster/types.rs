//! The Redis engine's vocabulary, shared by the workers' handle (`Cluster`, in `mod.rs`) and
//! the engine's thread: its settings, the requests and their answers, what the cluster decides
//! once for all nodes, and the link's state and figures.
//!
//! Owns: `Settings`, `Unavailable`, `Side`, `Member`, `Joined`, `Happened`, `Query`, the
//! callbacks' types, `Request` and `Link`. A leaf: it imports nothing of the cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fanout::{ConnId, Remote, Response};

use crate::space::Event;

/// The engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel name, so that clusters can share one Redis.
    pub prefix: String,
    /// Redis channel patterns of Laravel's broadcaster to publish from (`PSUBSCRIBE`).
    pub ingest: Vec<String>,
    /// Removed from an ingested Redis channel's name to get the channel.
    pub ingest_strip: Option<String>,
    /// How long the ingest lease lasts unrenewed: the longest gap when its holder dies.
    pub lease: Duration,
    /// Silence after which a node counts as dead and the others undo its presence.
    pub node_timeout: Duration,
    /// Requests waiting for Redis at most; more are refused.
    pub queue: usize,
    /// Messages kept per channel in Redis.
    pub history_size: usize,
    /// Age after which a message leaves the history (and an idle channel its seq and epoch).
    pub history_ttl: Duration,
    /// Largest ingested message.
    pub max_message: usize,
}

impl Settings {
    /// Defaults for everything but the URL.
    pub fn new(url: &str) -> Settings {
        Settings {
            url: url.to_owned(),
            prefix: "fanout".into(),
            ingest: Vec::new(),
            ingest_strip: None,
            lease: Duration::from_secs(5),
            node_timeout: Duration::from_secs(30),
            queue: 10_000,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_message: 64 * 1024,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        redis::Client::open(self.url.as_str()).map_err(|e| format!("redis_url {:?}: {e}", self.url))?;
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err("redis_prefix must be a non-empty word".into());
        }
        if self.lease < Duration::from_secs(1) || self.node_timeout < Duration::from_secs(2) {
            return Err("redis_ingest_lease must be at least 1 s and redis_node_timeout at least 2 s".into());
        }
        if self.queue == 0 {
            return Err("redis_queue must be greater than 0".into());
        }
        Ok(())
    }
}

/// Redis cannot take the request now: it is unreachable, or too much is waiting for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl Unavailable {
    /// 503 `{"error":...}` with `Retry-After`, the HTTP answer to it.
    pub fn response(&self) -> Response {
        let body = serde_json::json!({"error": format!("unavailable: {}", self.0)}).to_string();
        Response::new(503).header("Content-Type", "application/json").header("Retry-After", "1").body(body)
    }
}

/// Which protocol a join is for, and what a native one resumes from.
#[derive(Debug, Clone)]
pub enum Side {
    Native {
        since: Option<u64>,
        epoch: Option<String>,
    },
    /// `member`: on a presence channel, who joins; `max_members` its limit there (0: none).
    Pusher {
        member: Option<Member>,
        max_members: usize,
    },
}

/// A presence channel's member: the user id and its `user_info` (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: String,
    pub info: String,
}

/// What the cluster decided once for all its nodes, for the Pusher webhooks (fired by the node
/// that made the change, so once per cluster). Keys are channel keys (`space::app_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    Occupied { key: String },
    Vacated { key: String },
    MemberAdded { key: String, user: String },
    MemberRemoved { key: String, user: String },
}

/// Called on the engine thread for each `Happened`.
pub type Hook = Box<dyn Fn(Happened) + Send + Sync>;

/// What a join found: where the channel is, and what to send before the live messages.
#[derive(Debug)]
pub struct Joined {
    /// The last seq delivered to this node's subscribers: the replay ends there.
    pub seq: u64,
    pub epoch: String,
    /// Native: the messages after `since`, oldest first. Pusher: the channel's last kept event.
    pub replay: Vec<Arc<Event>>,
    /// Native with `since`: the replay is exactly everything after it.
    pub recovered: bool,
    /// Pusher on a presence channel: every member over the cluster (this one included).
    pub members: Vec<Member>,
    /// Pusher on a presence channel: refused, the channel has `max_members` users.
    pub full: bool,
}

/// Called on the engine thread with the seq a publish got, or why it got none.
pub type PublishDone = Box<dyn FnOnce(Result<u64, Unavailable>) + Send>;
/// Called on the engine thread with the seqs of a batch's publishes, in its order, or why it
/// got none (a batch is published whole or not at all).
pub type BatchDone = Box<dyn FnOnce(Result<Vec<u64>, Unavailable>) + Send>;
/// Called on the engine thread when a join completes: sends the reply and the replay, and says
/// whether the connection is to join the channel's topic (after them, on the same thread).
pub type JoinDone = Box<dyn FnOnce(&Remote, Result<Joined, Unavailable>) -> bool + Send>;

pub(crate) enum Request {
    Publish {
        key: Box<str>,
        body: String,
        keep_last: bool,
        done: PublishDone,
    },
    /// Publishes in one Redis transaction: (key, body, keep_last) each, in order.
    PublishBatch {
        items: Vec<(Box<str>, String, bool)>,
        done: BatchDone,
    },
    Join {
        conn: ConnId,
        key: Box<str>,
        name: Box<str>,
        side: Side,
        done: JoinDone,
    },
    /// `member`: the user id a Pusher connection is a presence member as.
    Leave {
        conn: ConnId,
        key: Box<str>,
        pusher: bool,
        member: Option<Box<str>>,
    },
    Query {
        query: Query,
        done: QueryDone,
    },
}

/// A question about the cluster's channels (the Pusher HTTP API's channel queries).
#[derive(Debug, Clone)]
pub enum Query {
    /// A channel's Pusher subscriptions and presence members, by key.
    Channel(String),
    /// A presence channel's user ids, by key.
    Users(String),
    /// The channels with subscriptions whose key starts with this.
    Occupied(String),
}

/// The answer to a `Query`: `Channel` gives one `Occupied` row, `Users` one row per user (its
/// id, 0, 0), `Occupied` one row per channel (key, subscriptions, members).
pub type QueryDone = Box<dyn FnOnce(Result<Vec<(String, u64, u64)>, Unavailable>) + Send>;

/// The link's state and figures, shared by the handle and the engine.
#[derive(Default)]
pub(crate) struct Link {
    pub(super) up: AtomicBool,
    pub(super) reconnects: AtomicU64,
    /// Publishes and joins queued or in flight.
    pub(super) waiting: AtomicUsize,
    pub(super) in_flight: AtomicU64,
    pub(super) publishes: AtomicU64,
    pub(super) publish_us: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) lease: AtomicBool,
    pub(super) ingested: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) channels: AtomicU64,
    pub(super) reaped: AtomicU64,
    pub(super) hook: OnceLock<Hook>,
}
