//! The engine thread: one link to Redis (a multiplexed connection for commands, a Pub/Sub
//! connection for what this node receives), on a single-threaded async runtime of its own.
//!
//! Owns: the table of channels this node receives (`Channel`: its epoch, the last seq handed to
//! the workers, a mirror of the recent history, local subscribers, joins waiting for the
//! channel's subscription), the thread and its loop, relinking with backoff, the sink task that
//! subscribes, the ingest lease and the heartbeat. The other duties extend `Engine` from files of
//! their own, which import this one and never the reverse: `delivery.rs` (activation,
//! deliveries, native joins), `presence.rs` (Pusher joins counted over the cluster, reaping),
//! `requests.rs` (the workers' requests, the ingest's publishes).
//!
//! Invariants:
//! - A channel is `SUBSCRIBE`d while it has local subscribers or waiting joins, and only then;
//!   subscribes and unsubscribes go out in batches, in order, from one task that owns the sink.
//! - A channel becomes active only after its `SUBSCRIBE` is confirmed and its seq and history
//!   were read after that; from then on every message with a higher seq arrives on the Pub/Sub
//!   connection, and every lower one is in the mirror. So `delivered` splits a channel's
//!   messages exactly: at or below it from the mirror (a join's replay), above it live.
//! - Everything that touches the workers (deliveries, join replies and topic subscribes) runs on
//!   this thread between awaits, never interleaved: a join's replay and subscribe fall between
//!   two deliveries of the channel.
//! - A message whose epoch is not the channel's means Redis lost the history (flushed,
//!   restarted, expired while idle): native subscribers get a fresh `subscribed` with the new
//!   epoch, `recovered:false`, before any message of it.
//! - When the link is lost, waiting joins are refused and channels go inactive; relinked, every
//!   channel with subscribers is subscribed again, and what was published meanwhile (same
//!   epoch, still in the history) is delivered before anything newer.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout::{ConnId, Remote};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::mpsc;

use super::types::{JoinDone, Link, Member, Request, Settings, Side, Unavailable};
use super::{script, wire};
use crate::native::protocol as native;
use crate::space::Event;

/// First wait before linking again; doubled up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait for a connection or a reply before the link counts as lost.
pub(super) const TIMEOUT: Duration = Duration::from_secs(3);
/// Messages held for one channel while its activation read is out; more count as a gap.
pub(super) const EARLY_LIMIT: usize = 65_536;
/// Least time between two log lines about malformed ingested messages.
pub(super) const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(10);

/// A join waiting for its channel to be active.
pub(super) struct Waiting {
    pub(super) conn: ConnId,
    pub(super) side: Side,
    pub(super) done: JoinDone,
}

pub(super) struct Channel {
    /// The name subscribers see (the key differs for other Pusher apps' channels).
    pub(super) name: Box<str>,
    pub(super) active: bool,
    pub(super) epoch: Option<Box<str>>,
    /// The last seq handed to the workers.
    pub(super) delivered: u64,
    /// The last events up to `delivered`, oldest first, with when they were published (unix
    /// ms): the mirror of the channel's history in Redis.
    pub(super) recent: VecDeque<(u64, Arc<Event>)>,
    /// This node's subscribers of each protocol (a set: a join repeated, or a leave for a join
    /// that was refused, changes nothing).
    pub(super) native: HashSet<ConnId>,
    /// With the presence member each joined as, to count them again if Redis forgot them.
    pub(super) pusher: HashMap<ConnId, Option<Member>>,
    /// Messages received while the channel was being activated, handled once its read is in:
    /// the Pub/Sub connection may bring a publish made just after the read before the read's
    /// answer arrives on the command connection.
    pub(super) early: Vec<String>,
    /// Counts deliveries and epoch changes: a read sent before a change is not applied after it.
    pub(super) version: u64,
    /// Pusher joins counted in Redis and not answered yet (a leave meanwhile undoes them when
    /// the count comes back).
    pub(super) joining: HashSet<ConnId>,
    /// Native resumes whose epoch check in Redis is out (`delivery::verify`); a leave meanwhile
    /// takes the connection out, and the check's answer is then dropped.
    pub(super) resuming: HashSet<ConnId>,
    pub(super) waiting: Vec<Waiting>,
}

impl Channel {
    pub(super) fn new(name: &str) -> Channel {
        Channel {
            name: name.into(),
            active: false,
            epoch: None,
            delivered: 0,
            recent: VecDeque::new(),
            native: HashSet::new(),
            pusher: HashMap::new(),
            joining: HashSet::new(),
            resuming: HashSet::new(),
            early: Vec::new(),
            version: 0,
            waiting: Vec::new(),
        }
    }

    pub(super) fn unused(&self) -> bool {
        self.native.is_empty()
            && self.pusher.is_empty()
            && self.joining.is_empty()
            && self.resuming.is_empty()
            && self.waiting.is_empty()
    }
}

/// What the sink task is asked, in order.
pub(super) enum Subscription {
    Subscribe(Vec<Box<str>>),
    Unsubscribe(Vec<Box<str>>),
    Ingest(bool),
    /// The link is gone: the task ends.
    Stop,
}

pub(super) struct Engine {
    pub(super) settings: Settings,
    pub(super) names: wire::Names,
    pub(super) node: u32,
    pub(super) node_name: String,
    pub(super) link: Arc<Link>,
    pub(super) remote: Remote,
    pub(super) channels: RefCell<HashMap<Box<str>, Channel>>,
    pub(super) to_subscribe: RefCell<Vec<Box<str>>>,
    pub(super) to_unsubscribe: RefCell<Vec<Box<str>>>,
    pub(super) epochs: Cell<u64>,
    pub(super) epoch_base: String,
    pub(super) last_malformed_log: Cell<Option<Instant>>,
    pub(super) housekeeping: Cell<bool>,
    /// The current link's `Linked::generation`.
    pub(super) generation: Cell<u64>,
    /// Pusher leaves made while the link was down (key, name, member): undone in Redis when it
    /// is back, so no member outlives its connection.
    pub(super) to_uncount: RefCell<Vec<(String, String, Option<String>)>>,
}

/// Why `serve` returned.
enum Ended {
    /// Every handle is gone: the server stopped.
    Stopped,
    Lost(String),
}

/// The engine thread's body: links to Redis and serves until the server stops.
pub(super) fn run(
    rx: mpsc::UnboundedReceiver<Request>,
    link: Arc<Link>,
    settings: Settings,
    node: u32,
    remote: Remote,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return log::error!("redis: cannot start the engine's runtime: {e}"),
    };
    let engine = Rc::new(Engine {
        names: wire::Names::new(&settings.prefix),
        node_name: format!("{node:08x}"),
        epoch_base: format!("{:x}", unix_ms() & 0xFF_FFFF_FFFF),
        settings,
        node,
        link,
        remote,
        channels: RefCell::new(HashMap::new()),
        to_subscribe: RefCell::new(Vec::new()),
        to_unsubscribe: RefCell::new(Vec::new()),
        epochs: Cell::new(0),
        last_malformed_log: Cell::new(None),
        housekeeping: Cell::new(false),
        generation: Cell::new(0),
        to_uncount: RefCell::new(Vec::new()),
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, engine.run(rx));
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Engine {
    async fn run(self: Rc<Self>, mut rx: mpsc::UnboundedReceiver<Request>) {
        let client = match redis::Client::open(self.settings.url.as_str()) {
            Ok(client) => client,
            Err(e) => return log::error!("redis: {e}"),
        };
        let mut backoff = MIN_BACKOFF;
        let mut linked_before = false;
        let mut said_down = false;
        loop {
            match tokio::time::timeout(TIMEOUT, connect(&client)).await {
                Ok(Ok((con, sink, stream))) => {
                    if linked_before {
                        self.link.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    linked_before = true;
                    said_down = false;
                    backoff = MIN_BACKOFF;
                    log::info!("redis: linked (node {})", self.node_name);
                    let ended = self.clone().serve(con, sink, stream, &mut rx).await;
                    self.unlink();
                    match ended {
                        Ended::Stopped => return,
                        Ended::Lost(why) => {
                            log::warn!("redis: link lost ({why}); publishes are refused until it is back")
                        }
                    }
                }
                Ok(Err(e)) if !said_down => {
                    said_down = true;
                    log::warn!("redis: cannot link ({e}); retrying, publishes are refused meanwhile");
                }
                Err(_) if !said_down => {
                    said_down = true;
                    log::warn!("redis: no answer within {TIMEOUT:?}; retrying, publishes are refused meanwhile");
                }
                _ => {}
            }
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    request = rx.recv() => match request {
                        None => return,
                        Some(request) => self.handle(request, None),
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Serves one link until it is lost or the server stops.
    async fn serve(
        self: Rc<Self>,
        con: MultiplexedConnection,
        sink: PubSubSink,
        mut stream: redis::aio::PubSubStream,
        rx: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Ended {
        let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<String>();
        let (sub_tx, sub_rx) = mpsc::unbounded_channel::<Subscription>();
        self.generation.set(self.generation.get() + 1);
        let link = Linked { generation: self.generation.get(), con, lost: lost_tx, subscriptions: sub_tx };
        tokio::task::spawn_local(self.clone().subscriptions(sink, sub_rx, link.clone()));
        tokio::task::spawn_local(self.clone().count_again(link.clone()));
        // Everything this node received before, subscribed again (and caught up on).
        *self.to_subscribe.borrow_mut() = self.channels.borrow().keys().cloned().collect();
        self.to_unsubscribe.borrow_mut().clear();
        self.link.up.store(true, Ordering::Release);
        let every = (self.settings.lease / 3).min(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        let ended = self.turn(&link, &mut stream, rx, &mut lost_rx, &mut tick).await;
        // The sink task ends with its link (it holds a sender of its own queue).
        let _ = link.subscriptions.send(Subscription::Stop);
        ended
    }

    /// `serve`'s loop.
    async fn turn(
        self: &Rc<Self>,
        link: &Linked,
        stream: &mut redis::aio::PubSubStream,
        rx: &mut mpsc::UnboundedReceiver<Request>,
        lost_rx: &mut mpsc::UnboundedReceiver<String>,
        tick: &mut tokio::time::Interval,
    ) -> Ended {
        let link = link.clone();
        for (key, name, user) in self.to_uncount.take() {
            self.uncount(&link, &key, &name, user.as_deref());
        }
        loop {
            self.flush(&link);
            tokio::select! {
                request = rx.recv() => match request {
                    None => {
                        // Stopping: what this node still holds is undone now, not after the
                        // node timeout.
                        let mut con = link.con.clone();
                        if let Err(e) = tokio::time::timeout(TIMEOUT, self.reap(&mut con, &self.node_name)).await.unwrap_or(Ok(())) {
                            log::warn!("redis: could not undo this node's presence on stopping: {e}");
                        }
                        return Ended::Stopped;
                    }
                    Some(request) => self.handle(request, Some(&link)),
                },
                message = stream.next() => match message {
                    None => return Ended::Lost("the Pub/Sub connection closed".into()),
                    Some(message) => self.receive(&message, &link),
                },
                why = lost_rx.recv() => return Ended::Lost(why.unwrap_or_default()),
                _ = tick.tick() => self.housekeep(&link),
            }
        }
    }

    /// The link is gone: refuse waiting joins, mark channels inactive, forget unused ones.
    fn unlink(&self) {
        self.link.up.store(false, Ordering::Release);
        self.link.lease.store(false, Ordering::Relaxed);
        let mut refused = Vec::new();
        {
            let mut channels = self.channels.borrow_mut();
            for channel in channels.values_mut() {
                channel.active = false;
                channel.early.clear();
                refused.append(&mut channel.waiting);
            }
            channels.retain(|_, c| !c.unused());
            self.link.channels.store(channels.len() as u64, Ordering::Relaxed);
        }
        for w in refused {
            self.link.waiting.fetch_sub(1, Ordering::AcqRel);
            (w.done)(&self.remote, Err(Unavailable("the link to redis was lost".into())));
        }
    }

    /// Sends the batched subscription changes to the sink task.
    fn flush(&self, link: &Linked) {
        let unsubscribe = std::mem::take(&mut *self.to_unsubscribe.borrow_mut());
        if !unsubscribe.is_empty() {
            let _ = link.subscriptions.send(Subscription::Unsubscribe(unsubscribe));
        }
        let subscribe = std::mem::take(&mut *self.to_subscribe.borrow_mut());
        if !subscribe.is_empty() {
            let _ = link.subscriptions.send(Subscription::Subscribe(subscribe));
        }
    }

    /// The sink's one task: subscription changes in the order they were decided; each confirmed
    /// subscribe starts the channels' activation.
    async fn subscriptions(
        self: Rc<Self>,
        mut sink: PubSubSink,
        mut rx: mpsc::UnboundedReceiver<Subscription>,
        link: Linked,
    ) {
        let lost = link.lost.clone();
        while let Some(change) = rx.recv().await {
            let result = match &change {
                Subscription::Subscribe(keys) => {
                    let names: Vec<String> = keys.iter().map(|k| self.names.channel(k)).collect();
                    tokio::time::timeout(TIMEOUT, sink.subscribe(&names)).await
                }
                Subscription::Unsubscribe(keys) => {
                    let names: Vec<String> = keys.iter().map(|k| self.names.channel(k)).collect();
                    tokio::time::timeout(TIMEOUT, sink.unsubscribe(&names)).await
                }
                Subscription::Ingest(true) => {
                    tokio::time::timeout(TIMEOUT, sink.psubscribe(&self.settings.ingest)).await
                }
                Subscription::Ingest(false) => {
                    tokio::time::timeout(TIMEOUT, sink.punsubscribe(&self.settings.ingest)).await
                }
                Subscription::Stop => return,
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return drop(lost.send(format!("subscribe: {e}"))),
                Err(_) => return drop(lost.send("subscribe: no answer".into())),
            }
            if let Subscription::Subscribe(keys) = change {
                tokio::task::spawn_local(self.clone().activate(keys, link.clone()));
            }
        }
    }

    /// Every tick: the heartbeat, and the ingest lease taken or renewed (or given up).
    fn housekeep(self: &Rc<Self>, link: &Linked) {
        if self.housekeeping.replace(true) {
            return; // the last round is still waiting for Redis
        }
        let engine = self.clone();
        let mut con = link.con.clone();
        let lost = link.lost.clone();
        let subscriptions = link.subscriptions.clone();
        tokio::task::spawn_local(async move {
            let result = engine.housekeeping_round(&mut con, &subscriptions).await;
            engine.housekeeping.set(false);
            if let Err(e) = result {
                let _ = lost.send(format!("heartbeat: {e}"));
            }
        });
    }

    async fn housekeeping_round(
        &self,
        con: &mut MultiplexedConnection,
        subscriptions: &mpsc::UnboundedSender<Subscription>,
    ) -> redis::RedisResult<()> {
        let beat = redis::cmd("ZADD").arg(self.names.nodes()).arg(unix_ms()).arg(&self.node_name).to_owned();
        let _: () = tokio::time::timeout(TIMEOUT, beat.query_async(con))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "no answer")))??;
        let silent_since = unix_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.names.nodes())
            .arg("-inf")
            .arg(format!("({silent_since}"))
            .query_async(con)
            .await?;
        for node in dead {
            self.reap(con, &node).await?;
        }
        if self.settings.ingest.is_empty() {
            return Ok(());
        }
        let mut call = script::LEASE.prepare_invoke();
        call.key(self.names.lease()).arg(&self.node_name).arg(self.settings.lease.as_millis() as u64);
        let held: bool = tokio::time::timeout(TIMEOUT, call.invoke_async(con))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "no answer")))??;
        if held != self.link.lease.swap(held, Ordering::Relaxed) {
            log::info!("redis ingest: this node {} the lease", if held { "took" } else { "lost" });
            let _ = subscriptions.send(Subscription::Ingest(held));
        }
        Ok(())
    }

    pub(super) fn new_epoch(&self) -> String {
        let n = self.epochs.get() + 1;
        self.epochs.set(n);
        format!("{}-{}-{n:x}", self.epoch_base, self.node_name)
    }
}

/// What `serve` hands to the code that talks to Redis.
#[derive(Clone)]
pub(super) struct Linked {
    /// Which link this is (counted from 1): what an older link's tasks finish is dropped.
    pub(super) generation: u64,
    pub(super) con: MultiplexedConnection,
    pub(super) lost: mpsc::UnboundedSender<String>,
    pub(super) subscriptions: mpsc::UnboundedSender<Subscription>,
}

async fn connect(
    client: &redis::Client,
) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, redis::aio::PubSubStream)> {
    let config =
        redis::AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT));
    let con = client.get_multiplexed_async_connection_with_config(&config).await?;
    let (sink, stream) = client.get_async_pubsub().await?.split();
    Ok((con, sink, stream))
}

/// Whether channel `key` has native subscribers at all: the first app's channels (key = name)
/// whose name the native protocol allows.
pub(super) fn is_native(key: &str, name: &str) -> bool {
    key == name && native::validate_channel(name).is_ok()
}

pub(super) fn event_of(stored: &wire::Stored<'_>) -> Event {
    let body = &stored.body;
    Event::new(
        &body.channel,
        stored.seq,
        body.event.as_deref(),
        body.data.get(),
        body.origin(),
        body.user_id.as_deref(),
    )
}
