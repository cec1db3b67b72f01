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
//! The vocabulary is `types`, the text format in Redis `wire`, the scripts `script`, Laravel's
//! messages `ingest`; the engine is `engine` and the files that extend it (`delivery`,
//! `presence`, `requests`).

mod delivery;
mod engine;
pub mod ingest;
mod presence;
mod requests;
pub mod script;
mod types;
pub mod wire;

pub use types::{
    BatchDone, Happened, Hook, JoinDone, Joined, Member, PublishDone, Query, QueryDone, Settings, Side, Unavailable,
};
use types::{Link, Request};

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use fanout::{ConnId, Remote};
use tokio::sync::mpsc;

use serde_json::value::RawValue;

use crate::space::{is_cache_channel, Origin, Publish};

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
        self.publish(channel, native_body(channel, event, data), is_cache_channel(channel), done)
    }

    /// Native publishes of `(channel, event, data)` in one Redis transaction (one round trip):
    /// `done` gets their seqs in order, or the refusal; Redis applies all of them or none.
    pub fn publish_batch(&self, items: &[(&str, Option<&str>, &RawValue)], done: BatchDone) {
        if let Err(e) = self.admit() {
            return done(Err(e));
        }
        let items = items
            .iter()
            .map(|&(channel, event, data)| {
                (channel.into(), native_body(channel, event, data), is_cache_channel(channel))
            })
            .collect();
        if let Err(refused) = self.tx.send(Request::PublishBatch { items, done }) {
            self.link.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Request::PublishBatch { done, .. } = refused.0 {
                done(Err(Unavailable("the redis engine has stopped".into())));
            }
        }
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
        let Starter { rx, link, settings, node } = self;
        std::thread::Builder::new()
            .name("fanout-redis".into())
            .spawn(move || engine::run(rx, link, settings, node, remote))
    }
}

/// A random nonzero node number (RandomState is seeded from the OS).
fn random_node() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    (h.finish() as u32).max(1)
}

/// The wire body of a native publish: the channel, the optional event name and the data.
fn native_body(channel: &str, event: Option<&str>, data: &RawValue) -> String {
    wire::Body {
        channel: channel.into(),
        event: event.map(Into::into),
        data,
        pusher: None,
        user_id: None,
        except: None,
    }
    .encode()
}
