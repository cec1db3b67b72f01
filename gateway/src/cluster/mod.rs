//! The Redis engine (`--redis-url`): several gateway processes form one cluster. A publish on
//! any node reaches every subscriber on every node once, numbered by one seq per channel kept in
//! Redis, with the history there too, so a client resumes on any node.
//!
//! Owns: `Cluster`, the handle every worker's handler holds (a request queue into the engine and
//! the link's figures), the requests, and `Settings`. The engine itself (`engine`) runs on a
//! thread of its own with its own single-threaded async runtime; the event loops never wait on
//! Redis: a request is queued (never blocking) and its answer comes back through the library's
//! `Remote` (a send to the connection, a topic publish) or a deferred HTTP response.
//!
//! Invariants:
//! - While Redis is unreachable, `publish` and `join` refuse at once (`Unavailable`), so a
//!   client gets an error instead of silence; `/healthz` says `"redis":"down"`.
//! - Requests waiting for Redis are bounded (`Settings::queue`); past it, `Unavailable`. A leave
//!   is never refused (it undoes a join, so their number is bounded by the joins).
//! - A channel's messages reach a node's workers from the engine thread alone, in seq order, and
//!   a join (the replay, then the topic subscribe) is applied on that thread between two
//!   deliveries: a subscriber misses nothing and gets nothing twice.
//!
//! The text format in Redis is `wire`, the scripts are `script`, Laravel's messages `ingest`.

mod engine;
pub mod ingest;
pub mod script;
pub mod wire;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use fanout::{ConnId, Remote, Response};
use tokio::sync::mpsc;

use serde_json::value::RawValue;

use crate::space::{is_cache_channel, Event, Origin, Publish};

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
    up: AtomicBool,
    reconnects: AtomicU64,
    /// Publishes and joins queued or in flight.
    waiting: AtomicUsize,
    in_flight: AtomicU64,
    publishes: AtomicU64,
    publish_us: AtomicU64,
    refused: AtomicU64,
    lease: AtomicBool,
    ingested: AtomicU64,
    malformed: AtomicU64,
    gaps: AtomicU64,
    channels: AtomicU64,
    reaped: AtomicU64,
    hook: OnceLock<Hook>,
}

/// The workers' handle on the engine.
pub struct Cluster {
    tx: mpsc::UnboundedSender<Request>,
    link: Arc<Link>,
    node: u32,
    queue: usize,
    /// The server, once it runs (`Starter::start`): how a refused join is answered.
    remote: OnceLock<Remote>,
}

/// The engine, built but not running until the server (and so `Remote`) exists.
pub struct Starter {
    rx: mpsc::UnboundedReceiver<Request>,
    link: Arc<Link>,
    settings: Settings,
    node: u32,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).field("up", &self.up()).finish()
    }
}

impl Cluster {
    /// The handle and the engine it will talk to (`Starter::start`, once the server runs).
    pub fn new(settings: Settings) -> (Cluster, Starter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link::default());
        let node = random_node();
        let cluster = Cluster { tx, link: link.clone(), node, queue: settings.queue, remote: OnceLock::new() };
        (cluster, Starter { rx, link, settings, node })
    }

    /// True while the engine is linked to Redis.
    pub fn up(&self) -> bool {
        self.link.up.load(Ordering::Acquire)
    }

    /// This node's number (in Pusher `socket_id`s, so they name one connection cluster-wide).
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Takes a place in the queue, or says why not.
    fn admit(&self) -> Result<(), Unavailable> {
        if !self.up() {
            self.link.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable("redis is unreachable".into()));
        }
        if self.link.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.link.waiting.fetch_sub(1, Ordering::AcqRel);
            self.link.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable(format!("{} requests are waiting for redis", self.queue)));
        }
        Ok(())
    }

    /// Publishes `body` (`wire::Body`, encoded) to channel `key`; `done` gets its seq, or the
    /// refusal (at once when Redis is down or the queue full). A cache channel (`keep_last`)
    /// keeps its last event even without history.
    fn publish(&self, key: &str, body: String, keep_last: bool, done: PublishDone) {
        if let Err(e) = self.admit() {
            return done(Err(e));
        }
        if let Err(refused) = self.tx.send(Request::Publish { key: key.into(), body, keep_last, done }) {
            self.link.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Request::Publish { done, .. } = refused.0 {
                done(Err(Unavailable("the redis engine has stopped".into())));
            }
        }
    }

    /// A native publish (`fanout.v1` or `POST /api/publish`) of `data` on `channel`.
    pub fn publish_native(&self, channel: &str, event: Option<&str>, data: &RawValue, done: PublishDone) {
        let body = wire::Body {
            channel: channel.into(),
            event: event.map(Into::into),
            data,
            pusher: None,
            user_id: None,
            except: None,
        };
        self.publish(channel, body.encode(), is_cache_channel(channel), done)
    }

    /// A publish as the space describes it (a Pusher trigger or client event), except to the
    /// connection `except` names (a `socket_id`, of any node); `p.except` is not used.
    pub fn publish_space(&self, p: &Publish<'_>, except: Option<&str>, done: PublishDone) {
        let data: &RawValue = match serde_json::from_str(p.data) {
            Ok(data) => data,
            Err(e) => return done(Err(Unavailable(format!("data is not JSON: {e}")))),
        };
        let body = wire::Body {
            channel: p.channel.into(),
            event: p.event.map(Into::into),
            data,
            pusher: (p.origin == Origin::Pusher).then_some(1),
            user_id: p.user_id.map(Into::into),
            except: except.map(Into::into),
        };
        self.publish(p.key, body.encode(), is_cache_channel(p.channel), done)
    }

    /// Joins `conn` to channel `key` (named `name` to its subscribers) once this node receives
    /// the channel from Redis; `done` sends the reply.
    /// A refusal is answered at once, through `done` too.
    pub fn join(&self, conn: ConnId, key: &str, name: &str, side: Side, done: JoinDone) {
        let refuse = |done: JoinDone, why: Unavailable| {
            if let Some(remote) = self.remote.get() {
                done(remote, Err(why));
            }
        };
        if let Err(e) = self.admit() {
            return refuse(done, e);
        }
        if let Err(refused) = self.tx.send(Request::Join { conn, key: key.into(), name: name.into(), side, done }) {
            self.link.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Request::Join { done, .. } = refused.0 {
                refuse(done, Unavailable("the redis engine has stopped".into()));
            }
        }
    }

    /// Takes `conn` out of channel `key` (a join still waiting is cancelled); `member`: the
    /// presence user it joined as.
    pub fn leave(&self, conn: ConnId, key: &str, pusher: bool, member: Option<&str>) {
        let _ = self.tx.send(Request::Leave { conn, key: key.into(), pusher, member: member.map(Into::into) });
    }

    /// Asks Redis about channels; `done` gets the answer (at once when Redis is down).
    pub fn query(&self, query: Query, done: QueryDone) {
        if let Err(e) = self.admit() {
            return done(Err(e));
        }
        if let Err(refused) = self.tx.send(Request::Query { query, done }) {
            self.link.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Request::Query { done, .. } = refused.0 {
                done(Err(Unavailable("the redis engine has stopped".into())));
            }
        }
    }

    /// Sets what is called for each decision taken once for the cluster (the webhooks).
    pub fn on_change(&self, hook: Hook) {
        let _ = self.link.hook.set(hook);
    }

    /// `/metrics` lines: (name, help, type, value).
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let l = &self.link;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("redis_up", "1 while linked to Redis.", "gauge", u64::from(self.up())),
            ("redis_reconnects_total", "Links to Redis made again after one was lost.", "counter", get(&l.reconnects)),
            ("redis_pipeline_depth", "Redis commands sent and not answered yet.", "gauge", get(&l.in_flight)),
            (
                "redis_waiting",
                "Publishes and joins queued for Redis.",
                "gauge",
                l.waiting.load(Ordering::Relaxed) as u64,
            ),
            ("redis_publishes_total", "Publishes Redis numbered.", "counter", get(&l.publishes)),
            (
                "redis_publish_latency_us_sum",
                "Time from queueing a publish to its seq, summed (us).",
                "counter",
                get(&l.publish_us),
            ),
            (
                "redis_refused_total",
                "Publishes and joins refused: Redis down or the queue full.",
                "counter",
                get(&l.refused),
            ),
            (
                "redis_gaps_total",
                "Seq gaps seen on a channel (messages lost while relinking).",
                "counter",
                get(&l.gaps),
            ),
            ("redis_channels", "Channels this node receives from Redis.", "gauge", get(&l.channels)),
            ("redis_nodes_reaped_total", "Dead nodes whose presence this node undid.", "counter", get(&l.reaped)),
            (
                "redis_ingest_lease",
                "1 while this node holds the ingest lease.",
                "gauge",
                u64::from(l.lease.load(Ordering::Relaxed)),
            ),
            ("redis_ingest_messages_total", "Laravel messages published from the ingest.", "counter", get(&l.ingested)),
            ("redis_ingest_malformed_total", "Ingested messages refused as malformed.", "counter", get(&l.malformed)),
        ]
    }
}

impl Starter {
    /// Runs the engine on its own thread, acting on the server through `remote`. It ends when
    /// every `Cluster` handle is gone (the server stopped).
    pub fn start(self, cluster: &Cluster, remote: Remote) -> io::Result<JoinHandle<()>> {
        let _ = cluster.remote.set(remote.clone());
        std::thread::Builder::new().name("fanout-redis".into()).spawn(move || engine::run(self, remote))
    }
}

/// A random nonzero node number (RandomState is seeded from the OS).
fn random_node() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    (h.finish() as u32).max(1)
}
