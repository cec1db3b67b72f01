//! The engine thread: one link to Redis (a multiplexed connection for commands, a Pub/Sub
//! connection for what this node receives), on a single-threaded async runtime of its own.
//!
//! Owns: the table of channels this node receives (`Channel`: its epoch, the last seq handed to
//! the workers, a mirror of the recent history, local subscriber counts, joins waiting for the
//! channel's subscription), relinking with backoff, the ingest lease and the heartbeat.
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

use fanout::{ConnId, Message, Remote};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::mpsc;

use super::{
    ingest, script, wire, Happened, JoinDone, Joined, PublishDone, Request, Settings, Side, Starter, Unavailable,
};
use crate::native::protocol as native;
use crate::pusher::protocol::parse_socket_id;
use crate::space::{is_cache_channel, pusher_topic, Event};

/// First wait before linking again; doubled up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait for a connection or a reply before the link counts as lost.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Messages held for one channel while its activation read is out; more count as a gap.
const EARLY_LIMIT: usize = 65_536;
/// Least time between two log lines about malformed ingested messages.
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(10);

/// A join waiting for its channel to be active.
struct Waiting {
    conn: ConnId,
    side: Side,
    done: JoinDone,
}

struct Channel {
    /// The name subscribers see (the key differs for other Pusher apps' channels).
    name: Box<str>,
    active: bool,
    epoch: Option<Box<str>>,
    /// The last seq handed to the workers.
    delivered: u64,
    /// The last events up to `delivered`, oldest first, with when they were published (unix
    /// ms): the mirror of the channel's history in Redis.
    recent: VecDeque<(u64, Arc<Event>)>,
    /// This node's subscribers of each protocol (a set: a join repeated, or a leave for a join
    /// that was refused, changes nothing).
    native: HashSet<ConnId>,
    /// With the presence member each joined as, to count them again if Redis forgot them.
    pusher: HashMap<ConnId, Option<super::Member>>,
    /// Messages received while the channel was being activated, handled once its read is in:
    /// the Pub/Sub connection may bring a publish made just after the read before the read's
    /// answer arrives on the command connection.
    early: Vec<String>,
    /// Counts deliveries and epoch changes: a read sent before a change is not applied after it.
    version: u64,
    /// Pusher joins counted in Redis and not answered yet (a leave meanwhile undoes them when
    /// the count comes back).
    joining: HashSet<ConnId>,
    waiting: Vec<Waiting>,
}

impl Channel {
    fn new(name: &str) -> Channel {
        Channel {
            name: name.into(),
            active: false,
            epoch: None,
            delivered: 0,
            recent: VecDeque::new(),
            native: HashSet::new(),
            pusher: HashMap::new(),
            joining: HashSet::new(),
            early: Vec::new(),
            version: 0,
            waiting: Vec::new(),
        }
    }

    fn unused(&self) -> bool {
        self.native.is_empty() && self.pusher.is_empty() && self.joining.is_empty() && self.waiting.is_empty()
    }
}

/// What the sink task is asked, in order.
enum Subscription {
    Subscribe(Vec<Box<str>>),
    Unsubscribe(Vec<Box<str>>),
    Ingest(bool),
    /// The link is gone: the task ends.
    Stop,
}

struct Engine {
    settings: Settings,
    names: wire::Names,
    node: u32,
    node_name: String,
    link: Arc<super::Link>,
    remote: Remote,
    channels: RefCell<HashMap<Box<str>, Channel>>,
    to_subscribe: RefCell<Vec<Box<str>>>,
    to_unsubscribe: RefCell<Vec<Box<str>>>,
    epochs: Cell<u64>,
    epoch_base: String,
    last_malformed_log: Cell<Option<Instant>>,
    housekeeping: Cell<bool>,
    /// The current link's `Linked::generation`.
    generation: Cell<u64>,
    /// Pusher leaves made while the link was down (key, name, member): undone in Redis when it
    /// is back, so no member outlives its connection.
    to_uncount: RefCell<Vec<(String, String, Option<String>)>>,
}

/// Why `serve` returned.
enum Ended {
    /// Every handle is gone: the server stopped.
    Stopped,
    Lost(String),
}

/// The engine thread's body: links to Redis and serves until the server stops.
pub(super) fn run(starter: Starter, remote: Remote) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return log::error!("redis: cannot start the engine's runtime: {e}"),
    };
    let Starter { rx, link, settings, node } = starter;
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

fn unix_ms() -> u64 {
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

    /// Reads the seq and history of channels whose subscription is confirmed, and activates them.
    async fn activate(self: Rc<Self>, keys: Vec<Box<str>>, link: Linked) {
        let (con, lost) = (link.con.clone(), link.lost.clone());
        let ttl = self.settings.history_ttl.as_millis() as u64;
        let reads = keys.iter().map(|key| {
            let mut con = con.clone();
            let (meta, history, epoch) = (self.names.meta(key), self.names.history(key), self.new_epoch());
            async move {
                let mut call = script::READ.prepare_invoke();
                call.key(meta).key(history).arg(epoch).arg(ttl);
                call.invoke_async::<(u64, String, Vec<String>)>(&mut con).await
            }
        });
        self.link.in_flight.fetch_add(keys.len() as u64, Ordering::Relaxed);
        let results = futures_util::future::join_all(reads).await;
        self.link.in_flight.fetch_sub(keys.len() as u64, Ordering::Relaxed);
        if link.generation != self.generation.get() {
            return; // read on a link since lost: the new link subscribes and reads again
        }
        for (key, result) in keys.iter().zip(results) {
            match result {
                Ok((seq, epoch, entries)) => self.activated(key, seq, &epoch, &entries, &link),
                Err(e) => return drop(lost.send(format!("reading {key}: {e}"))),
            }
        }
    }

    /// A channel's subscription is active and its state read: catch up and complete its joins.
    fn activated(self: &Rc<Self>, key: &str, seq: u64, epoch: &str, entries: &[String], link: &Linked) {
        let mut channels = self.channels.borrow_mut();
        let Some(channel) = channels.get_mut(key) else {
            // Everyone left while it was being subscribed.
            self.to_unsubscribe.borrow_mut().push(key.into());
            return;
        };
        self.apply_read(key, channel, seq, epoch, entries);
        channel.active = true;
        for text in std::mem::take(&mut channel.early) {
            self.on_text(key, channel, &text);
        }
        for w in std::mem::take(&mut channel.waiting) {
            self.complete(key, channel, w, link);
        }
        self.link.channels.store(channels.len() as u64, Ordering::Relaxed);
    }

    /// Brings the channel up to what a read of Redis found (its seq, epoch and history): the
    /// first read sets the mirror; a later one (relinked, or a resume's check) delivers what was
    /// missed, after a fresh `subscribed` when the epoch changed.
    fn apply_read(&self, key: &str, channel: &mut Channel, seq: u64, epoch: &str, entries: &[String]) {
        let history: Vec<(u64, Arc<Event>)> = entries
            .iter()
            .filter_map(|text| match wire::parse(text) {
                Some(wire::Received::Event(stored)) if stored.epoch == epoch => {
                    Some((stored.at_ms, Arc::new(event_of(&stored))))
                }
                _ => None,
            })
            .collect();
        match channel.epoch.as_deref() {
            None => {
                channel.epoch = Some(epoch.into());
                channel.delivered = seq;
                channel.recent = history.into_iter().filter(|(_, e)| e.seq() <= seq).collect();
                self.trim(channel);
            }
            Some(known) => {
                if known != epoch {
                    let first = history.first().map_or(seq, |(_, e)| e.seq().saturating_sub(1));
                    self.new_epoch_under(key, channel, epoch, first);
                }
                for (at, event) in history {
                    if event.seq() > channel.delivered {
                        self.deliver(key, channel, at, event, None);
                    }
                }
                if seq > channel.delivered {
                    self.gap(key, channel.delivered, seq + 1);
                    channel.delivered = seq;
                }
            }
        }
        channel.version += 1;
    }

    /// Redis lost the channel's history: native subscribers hear of the new epoch first.
    fn new_epoch_under(&self, key: &str, channel: &mut Channel, epoch: &str, seq: u64) {
        channel.version += 1;
        channel.epoch = Some(epoch.into());
        channel.delivered = seq;
        channel.recent.clear();
        if !channel.native.is_empty() && is_native(key, &channel.name) {
            let text = native::subscribed(&channel.name, seq, epoch, Some(false));
            self.remote.publish(key, Message::Text(text.into()));
        }
    }

    fn gap(&self, key: &str, delivered: u64, next: u64) {
        self.link.gaps.fetch_add(1, Ordering::Relaxed);
        log::warn!("redis: channel {key}: messages {} to {} were lost while relinking", delivered + 1, next - 1);
    }

    /// Hands one event to this node's subscribers and records it in the mirror.
    fn deliver(&self, key: &str, channel: &mut Channel, at_ms: u64, event: Arc<Event>, except: Option<&str>) {
        let except = except.and_then(parse_socket_id).and_then(|(node, id)| (node == self.node).then_some(id));
        if !channel.native.is_empty() && is_native(key, &channel.name) {
            self.remote.publish(key, Message::Text(event.native_frame()));
        }
        if !channel.pusher.is_empty() {
            let topic = pusher_topic(key);
            match except {
                Some(id) => self.remote.publish_except(&topic, Message::Text(event.pusher_frame()), id),
                None => self.remote.publish(&topic, Message::Text(event.pusher_frame())),
            }
        }
        channel.delivered = event.seq();
        channel.version += 1;
        channel.recent.push_back((at_ms, event));
        self.trim(channel);
    }

    fn trim(&self, channel: &mut Channel) {
        // One kept even without history: a cache channel's last event.
        let keep = self.settings.history_size.max(1);
        while channel.recent.len() > keep {
            channel.recent.pop_front();
        }
    }

    /// A message on a subscribed channel (or, from a pattern, a Laravel broadcast).
    fn receive(self: &Rc<Self>, message: &redis::Msg, link: &Linked) {
        if message.from_pattern() {
            return self.ingest(message, link);
        }
        let Some(key) = self.names.key_of(message.get_channel_name()) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
            return log::warn!("redis: a message on {key} is not UTF-8; ignored");
        };
        let mut channels = self.channels.borrow_mut();
        let Some(channel) = channels.get_mut(key) else {
            return; // nobody here listens (an unsubscribe on its way)
        };
        if !channel.active {
            // Handled once the channel's read is in (`activated`); bounded by what a read can
            // take to come back, and dropped with the link.
            if channel.early.len() < EARLY_LIMIT {
                channel.early.push(text.to_owned());
            } else {
                self.link.gaps.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.on_text(key, channel, text);
    }

    /// One message of an active channel: a stored event (delivered unless it was already) or a
    /// presence frame.
    fn on_text(&self, key: &str, channel: &mut Channel, text: &str) {
        match wire::parse(text) {
            Some(wire::Received::Event(stored)) => {
                if channel.epoch.as_deref() != Some(stored.epoch) {
                    self.new_epoch_under(key, channel, stored.epoch, stored.seq.saturating_sub(1));
                }
                if stored.seq <= channel.delivered {
                    return; // delivered already, or in the history read at activation
                }
                if stored.seq > channel.delivered + 1 {
                    self.gap(key, channel.delivered, stored.seq);
                }
                let event = Arc::new(event_of(&stored));
                self.deliver(key, channel, stored.at_ms, event, stored.body.except.as_deref());
            }
            Some(wire::Received::Control(control)) => {
                if !channel.pusher.is_empty() {
                    let except = control.except.as_deref().and_then(parse_socket_id);
                    let frame = Message::Text(control.frame.into_owned().into());
                    match except.filter(|(node, _)| *node == self.node) {
                        Some((_, id)) => self.remote.publish_except(&pusher_topic(key), frame, id),
                        None => self.remote.publish(&pusher_topic(key), frame),
                    }
                }
            }
            None => log::warn!("redis: a malformed message on {key}; ignored"),
        }
    }

    fn handle(self: &Rc<Self>, request: Request, link: Option<&Linked>) {
        match request {
            Request::Publish { key, body, keep_last, done } => match link {
                Some(link) => self.publish(key, body, keep_last, done, link),
                None => {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    done(Err(Unavailable("redis is unreachable".into())));
                }
            },
            Request::Join { conn, key, name, side, done } => {
                if link.is_none() {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    (done)(&self.remote, Err(Unavailable("redis is unreachable".into())));
                    return;
                }
                let mut channels = self.channels.borrow_mut();
                let channel = channels.entry(key.clone()).or_insert_with(|| {
                    self.to_subscribe.borrow_mut().push(key.clone());
                    self.to_unsubscribe.borrow_mut().retain(|k| *k != key);
                    Channel::new(&name)
                });
                let waiting = Waiting { conn, side, done };
                if let (true, Some(link)) = (channel.active, link) {
                    self.complete(&key, channel, waiting, link);
                } else {
                    channel.waiting.push(waiting);
                }
                self.link.channels.store(channels.len() as u64, Ordering::Relaxed);
            }
            Request::Query { query, done } => match link {
                Some(link) => self.query(query, done, link),
                None => {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    done(Err(Unavailable("redis is unreachable".into())));
                }
            },
            Request::Leave { conn, key, pusher, member } => {
                let mut channels = self.channels.borrow_mut();
                let Some(channel) = channels.get_mut(&key) else {
                    return;
                };
                let pending = channel
                    .waiting
                    .iter()
                    .position(|w| w.conn == conn && matches!(w.side, Side::Pusher { .. }) == pusher);
                if let Some(at) = pending {
                    channel.waiting.remove(at);
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                } else if pusher && channel.joining.remove(&conn) {
                    // Counted in Redis already: undone when the count comes back.
                } else {
                    let removed =
                        if pusher { channel.pusher.remove(&conn).is_some() } else { channel.native.remove(&conn) };
                    if removed {
                        let topic = if pusher { pusher_topic(&key) } else { key.to_string() };
                        self.remote.unsubscribe(conn, &topic);
                        match (pusher, link) {
                            (true, Some(link)) => self.uncount(link, &key, &channel.name, member.as_deref()),
                            // Undone in Redis once the link is back.
                            (true, None) => self.to_uncount.borrow_mut().push((
                                key.to_string(),
                                channel.name.to_string(),
                                member.map(Into::into),
                            )),
                            _ => {}
                        }
                    }
                }
                if channel.unused() {
                    if link.is_some() {
                        self.to_unsubscribe.borrow_mut().push(key.clone());
                    }
                    self.to_subscribe.borrow_mut().retain(|k| *k != key);
                    channels.remove(&key);
                }
                self.link.channels.store(channels.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Completes a join on an active channel: the reply and replay, then the topic. A Pusher
    /// join is counted in Redis first (`count`).
    fn complete(self: &Rc<Self>, key: &str, channel: &mut Channel, w: Waiting, link: &Linked) {
        if let Side::Pusher { member, max_members } = &w.side {
            let (member, max_members) = (member.clone(), *max_members);
            // A connection subscribed already is answered again, not counted again.
            let again = channel.pusher.contains_key(&w.conn) || !channel.joining.insert(w.conn);
            return self.count(key, &channel.name, w, member, max_members, again, link);
        }
        if matches!(w.side, Side::Native { since: Some(_), .. }) {
            return self.verify(key, channel, w, link);
        }
        self.answer(key, channel, w);
    }

    /// A resume: the mirror may hold an epoch Redis has since lost (a flush, a restart) without
    /// a message having shown it yet, so the channel is read again first, and brought up to it
    /// unless a delivery came in meanwhile (which is newer than the read).
    fn verify(self: &Rc<Self>, key: &str, channel: &Channel, w: Waiting, link: &Linked) {
        let engine = self.clone();
        let (key, version, mut con) = (key.to_owned(), channel.version, link.con.clone());
        let (meta, history, epoch) = (self.names.meta(&key), self.names.history(&key), self.new_epoch());
        let (ttl, generation) = (self.settings.history_ttl.as_millis() as u64, link.generation);
        tokio::task::spawn_local(async move {
            let mut call = script::READ.prepare_invoke();
            call.key(meta).key(history).arg(epoch).arg(ttl);
            engine.link.in_flight.fetch_add(1, Ordering::Relaxed);
            let read = tokio::time::timeout(TIMEOUT, call.invoke_async::<(u64, String, Vec<String>)>(&mut con)).await;
            engine.link.in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut channels = engine.channels.borrow_mut();
            let current = generation == engine.generation.get();
            match (read, channels.get_mut(key.as_str())) {
                (Ok(Ok((seq, epoch, entries))), Some(channel)) if current && channel.active => {
                    if channel.version == version {
                        engine.apply_read(&key, channel, seq, &epoch, &entries);
                    }
                    engine.answer(&key, channel, w);
                }
                (Ok(Ok(_)), Some(channel)) if current && !channel.active => channel.waiting.push(w),
                _ => {
                    engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    (w.done)(&engine.remote, Err(Unavailable("the link to redis was lost".into())));
                }
            }
        });
    }

    /// Answers a native join from the mirror: the reply and replay, then the topic.
    fn answer(&self, key: &str, channel: &mut Channel, w: Waiting) {
        self.link.waiting.fetch_sub(1, Ordering::AcqRel);
        let Side::Native { since, epoch: asked } = w.side else { unreachable!("Pusher joins are counted first") };
        let epoch = channel.epoch.as_deref().unwrap_or_default().to_owned();
        let since = since.filter(|_| asked.as_deref().is_none_or(|e| e == epoch));
        let joined = match since {
            None => Joined {
                seq: channel.delivered,
                epoch,
                replay: Vec::new(),
                recovered: false,
                members: Vec::new(),
                full: false,
            },
            Some(since) => {
                let replay: Vec<Arc<Event>> = self.kept(channel).filter(|e| e.seq() > since).cloned().collect();
                let first = replay.first().map_or(channel.delivered + 1, |e| e.seq());
                let recovered = since <= channel.delivered && first == since + 1;
                Joined { seq: channel.delivered, epoch, replay, recovered, members: Vec::new(), full: false }
            }
        };
        if (w.done)(&self.remote, Ok(joined)) && channel.native.insert(w.conn) {
            self.remote.subscribe(w.conn, key);
        }
    }

    /// The mirror's events still within the history's age limit, oldest first.
    fn kept<'a>(&self, channel: &'a Channel) -> impl Iterator<Item = &'a Arc<Event>> + 'a {
        let oldest = unix_ms().saturating_sub(self.settings.history_ttl.as_millis() as u64);
        channel.recent.iter().filter(move |(at, _)| *at >= oldest).map(|(_, e)| e)
    }

    /// Counts a Pusher join over the cluster (`script::JOIN`), then answers it: members, the
    /// cache channel's last event, the topic; `member_added` to the other members on every
    /// node; the webhooks of what this join decided.
    #[allow(clippy::too_many_arguments)]
    fn count(
        self: &Rc<Self>,
        key: &str,
        name: &str,
        w: Waiting,
        member: Option<super::Member>,
        max: usize,
        again: bool,
        link: &Linked,
    ) {
        let engine = self.clone();
        let mut con = link.con.clone();
        let link = link.clone();
        let (key, name) = (key.to_owned(), name.to_owned());
        tokio::task::spawn_local(async move {
            let n = &engine.names;
            let (user, info) = member.as_ref().map_or(("", ""), |m| (m.user.as_str(), m.info.as_str()));
            let mut call = script::JOIN.prepare_invoke();
            call.key(n.subscriptions(&key))
                .key(n.held(&engine.node_name))
                .key(n.members(&key))
                .key(n.member_info(&key));
            call.arg(&engine.node_name).arg(&key).arg(user).arg(info).arg(max);
            engine.link.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = if again {
                // {not occupied, not added, the members}: nothing counted.
                let read = redis::cmd("HGETALL").arg(n.member_info(&key)).to_owned();
                let members = tokio::time::timeout(TIMEOUT, read.query_async::<Vec<redis::Value>>(&mut con)).await;
                members.map(|r| r.map(|m| [vec![redis::Value::Int(0), redis::Value::Int(0)], m].concat()))
            } else {
                tokio::time::timeout(TIMEOUT, call.invoke_async::<Vec<redis::Value>>(&mut con)).await
            };
            engine.link.in_flight.fetch_sub(1, Ordering::Relaxed);
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            let counted = match result {
                Ok(Ok(values)) => values,
                failed => {
                    if let Some(channel) = engine.channels.borrow_mut().get_mut(key.as_str()) {
                        channel.joining.remove(&w.conn);
                    }
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".to_owned(),
                    };
                    (w.done)(&engine.remote, Err(Unavailable(format!("redis: {why}"))));
                    return drop(link.lost.send(format!("join: {why}")));
                }
            };
            let number = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(i)) => *i,
                _ => 0,
            };
            let (occupied, added) = (number(counted.first()) == 1, number(counted.get(1)));
            let text = |v: &redis::Value| redis::from_redis_value_ref::<String>(v).unwrap_or_default();
            let mut members: Vec<super::Member> = counted[2.min(counted.len())..]
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| super::Member { user: text(&pair[0]), info: text(&pair[1]) })
                .collect();
            members.sort_unstable_by(|a, b| a.user.cmp(&b.user)); // stable answers, as one node gives

            let mut channels = engine.channels.borrow_mut();
            let still = channels.get_mut(key.as_str()).and_then(|c| {
                let joined = (again && c.pusher.contains_key(&w.conn)) || c.joining.remove(&w.conn);
                joined.then_some(c)
            });
            let Some(channel) = still else {
                // The connection left while it was being counted: undo the count.
                drop(channels);
                if added >= 0 && !again {
                    engine.uncount(&link, &key, &name, member.as_ref().map(|m| m.user.as_str()));
                }
                return;
            };
            if added < 0 {
                let joined =
                    Joined { seq: 0, epoch: String::new(), replay: Vec::new(), recovered: false, members, full: true };
                (w.done)(&engine.remote, Ok(joined));
                return;
            }
            let replay = engine.kept(channel).last().cloned().into_iter().collect();
            let epoch = channel.epoch.as_deref().unwrap_or_default().to_owned();
            let joined = Joined { seq: channel.delivered, epoch, replay, recovered: false, members, full: false };
            if !(w.done)(&engine.remote, Ok(joined)) && !again {
                drop(channels);
                return engine.uncount(&link, &key, &name, member.as_ref().map(|m| m.user.as_str()));
            }
            if channel.pusher.insert(w.conn, member.clone()).is_none() {
                engine.remote.subscribe(w.conn, &pusher_topic(&key));
            }
            drop(channels);
            engine.counted(&link, &key, &name, w.conn, member.as_ref(), occupied, added == 1);
        });
    }

    /// What a counted join decided, told once for the cluster: the occupied webhook, and
    /// `member_added` to the other members on every node (not to `conn`, which joined).
    #[allow(clippy::too_many_arguments)]
    fn counted(
        &self,
        link: &Linked,
        key: &str,
        name: &str,
        conn: ConnId,
        member: Option<&super::Member>,
        occupied: bool,
        added: bool,
    ) {
        if occupied {
            self.happened(Happened::Occupied { key: key.to_owned() });
        }
        if let (Some(m), true) = (member, added) {
            let frame = crate::pusher::protocol::member_added(name, &m.user, &m.info);
            let except = crate::pusher::protocol::socket_id(conn, self.node);
            self.control(link, key, &frame, Some(&except));
            self.happened(Happened::MemberAdded { key: key.to_owned(), user: m.user.clone() });
        }
    }

    /// Relinked: when Redis no longer holds this node's Pusher subscriptions (it lost its data,
    /// or the others took this node for dead while it could not reach Redis and undid them),
    /// they are counted again, with their webhooks and `member_added`, so presence and channel
    /// counts match the connections this node still holds.
    async fn count_again(self: Rc<Self>, link: Linked) {
        let mut con = link.con.clone();
        let held: Result<bool, _> =
            redis::cmd("EXISTS").arg(self.names.held(&self.node_name)).query_async(&mut con).await;
        if held.unwrap_or(true) {
            return;
        }
        let joined: Vec<(String, String, ConnId, Option<super::Member>)> = self
            .channels
            .borrow()
            .iter()
            .flat_map(|(key, c)| {
                c.pusher.iter().map(move |(id, m)| (key.to_string(), c.name.to_string(), *id, m.clone()))
            })
            .collect();
        if !joined.is_empty() {
            log::warn!("redis: this node's {} Pusher subscriptions were gone from Redis; counted again", joined.len());
        }
        for (key, name, conn, member) in joined {
            let n = &self.names;
            let (user, info) = member.as_ref().map_or(("", ""), |m| (m.user.as_str(), m.info.as_str()));
            let mut call = script::JOIN.prepare_invoke();
            call.key(n.subscriptions(&key)).key(n.held(&self.node_name)).key(n.members(&key)).key(n.member_info(&key));
            call.arg(&self.node_name).arg(&key).arg(user).arg(info).arg(0);
            match call.invoke_async::<Vec<redis::Value>>(&mut con).await {
                Ok(counted) => {
                    let number = |v: Option<&redis::Value>| matches!(v, Some(redis::Value::Int(1)));
                    self.counted(
                        &link,
                        &key,
                        &name,
                        conn,
                        member.as_ref(),
                        number(counted.first()),
                        number(counted.get(1)),
                    );
                }
                Err(e) => return drop(link.lost.send(format!("counting again: {e}"))),
            }
        }
    }

    /// Undoes a Pusher join over the cluster (`script::LEAVE`): `member_removed` to the other
    /// members on every node after a user's last connection, and the webhooks.
    fn uncount(self: &Rc<Self>, link: &Linked, key: &str, name: &str, user: Option<&str>) {
        let engine = self.clone();
        let mut con = link.con.clone();
        let link = link.clone();
        let (key, name, user) = (key.to_owned(), name.to_owned(), user.unwrap_or_default().to_owned());
        tokio::task::spawn_local(async move {
            let n = &engine.names;
            let mut call = script::LEAVE.prepare_invoke();
            call.key(n.subscriptions(&key))
                .key(n.held(&engine.node_name))
                .key(n.members(&key))
                .key(n.member_info(&key));
            call.arg(&engine.node_name).arg(&key).arg(&user);
            let result = tokio::time::timeout(TIMEOUT, call.invoke_async::<(i64, i64)>(&mut con)).await;
            let (vacated, removed) = match result {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return drop(link.lost.send(format!("leave: {e}"))),
                Err(_) => return drop(link.lost.send("leave: no answer".into())),
            };
            if removed == 1 {
                let frame = crate::pusher::protocol::member_removed(&name, &user);
                engine.control(&link, &key, &frame, None);
                engine.happened(Happened::MemberRemoved { key: key.clone(), user });
            }
            if vacated == 1 {
                engine.happened(Happened::Vacated { key });
            }
        });
    }

    fn query(self: &Rc<Self>, query: super::Query, done: super::QueryDone, link: &Linked) {
        let engine = self.clone();
        let mut con = link.con.clone();
        tokio::task::spawn_local(async move {
            let n = &engine.names;
            let answer = tokio::time::timeout(TIMEOUT, async {
                match &query {
                    super::Query::Channel(key) => {
                        let (subs, members): (Vec<u64>, u64) = redis::pipe()
                            .cmd("HVALS")
                            .arg(n.subscriptions(key))
                            .cmd("HLEN")
                            .arg(n.members(key))
                            .query_async(&mut con)
                            .await?;
                        Ok(vec![(key.clone(), subs.iter().sum(), members)])
                    }
                    super::Query::Users(key) => {
                        let users: Vec<String> = redis::cmd("HKEYS").arg(n.members(key)).query_async(&mut con).await?;
                        Ok(users.into_iter().map(|u| (u, 0, 0)).collect())
                    }
                    super::Query::Occupied(prefix) => {
                        let mut call = script::CHANNELS.prepare_invoke();
                        let (subs, members) = (n.subscriptions(""), n.members(""));
                        call.arg(format!("{subs}{prefix}*")).arg(&subs).arg(&members);
                        call.invoke_async::<Vec<(String, u64, u64)>>(&mut con).await
                    }
                }
            })
            .await;
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            done(match answer {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(Unavailable(format!("redis: {e}"))),
                Err(_) => Err(Unavailable("redis: no answer".into())),
            });
        });
    }

    /// A Pusher frame for channel `key`'s Pusher subscribers on every node (a presence change),
    /// except the connection `except` names.
    fn control(&self, link: &Linked, key: &str, frame: &str, except: Option<&str>) {
        let text = wire::Control { frame: frame.into(), except: except.map(Into::into) }.encode();
        let command = redis::cmd("PUBLISH").arg(self.names.channel(key)).arg(text).to_owned();
        let mut con = link.con.clone();
        let lost = link.lost.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = command.query_async::<()>(&mut con).await {
                let _ = lost.send(format!("publish: {e}"));
            }
        });
    }

    fn happened(&self, what: Happened) {
        if let Some(hook) = self.link.hook.get() {
            hook(what);
        }
    }

    /// Undoes what `node` held (a dead node, or this one stopping) once over the cluster, and
    /// tells every node's members of the users it removed.
    async fn reap(&self, con: &mut MultiplexedConnection, node: &str) -> redis::RedisResult<()> {
        let mut call = script::REAP.prepare_invoke();
        call.key(self.names.nodes()).key(self.names.held(node)).arg(node).arg(format!("{}:", self.names.prefix()));
        let undone: Vec<String> = call.invoke_async(con).await?;
        if undone.is_empty() {
            return Ok(());
        }
        if node != self.node_name {
            self.link.reaped.fetch_add(1, Ordering::Relaxed);
            log::warn!("redis: node {node} went silent; its presence members were removed");
        }
        let mut items = undone.iter();
        while let Some(kind) = items.next() {
            let Some(key) = items.next() else { break };
            if kind == "r" {
                let Some(user) = items.next() else { break };
                let name = key.rsplit_once(':').filter(|_| key.starts_with('#')).map_or(key.as_str(), |(_, n)| n);
                let text =
                    wire::Control { frame: crate::pusher::protocol::member_removed(name, user).into(), except: None }
                        .encode();
                redis::cmd("PUBLISH").arg(self.names.channel(key)).arg(text).query_async::<()>(con).await?;
                self.happened(Happened::MemberRemoved { key: key.clone(), user: user.clone() });
            } else {
                self.happened(Happened::Vacated { key: key.clone() });
            }
        }
        Ok(())
    }

    fn publish(self: &Rc<Self>, key: Box<str>, body: String, keep_last: bool, done: PublishDone, link: &Linked) {
        let size = if keep_last { self.settings.history_size.max(1) } else { self.settings.history_size };
        let mut con = link.con.clone();
        let lost = link.lost.clone();
        let (meta, history, channel, epoch) =
            (self.names.meta(&key), self.names.history(&key), self.names.channel(&key), self.new_epoch());
        let ttl = self.settings.history_ttl.as_millis() as u64;
        let engine = self.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            engine.link.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut call = script::PUBLISH.prepare_invoke();
            call.key(meta).key(history).arg(channel).arg(body).arg(size).arg(ttl).arg(epoch);
            let result = call.invoke_async::<(u64, String)>(&mut con).await;
            engine.link.in_flight.fetch_sub(1, Ordering::Relaxed);
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok((seq, _)) => {
                    engine.link.publishes.fetch_add(1, Ordering::Relaxed);
                    engine.link.publish_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    done(Ok(seq));
                }
                Err(e) => {
                    done(Err(Unavailable(format!("redis: {e}"))));
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                        let _ = lost.send(format!("publish: {e}"));
                    }
                }
            }
        });
    }

    /// A Laravel broadcast on an ingested pattern: published once, by the lease holder.
    fn ingest(self: &Rc<Self>, message: &redis::Msg, link: &Linked) {
        if !self.link.lease.load(Ordering::Relaxed) {
            return;
        }
        let strip = self.settings.ingest_strip.as_deref();
        let broadcast = match ingest::parse(
            message.get_channel_name().as_bytes(),
            message.get_payload_bytes(),
            strip,
            self.settings.max_message,
        ) {
            Ok(b) => b,
            Err(why) => {
                self.link.malformed.fetch_add(1, Ordering::Relaxed);
                let due = self.last_malformed_log.get().is_none_or(|at| at.elapsed() >= MALFORMED_LOG_EVERY);
                if due {
                    self.last_malformed_log.set(Some(Instant::now()));
                    log::warn!("redis ingest: refused a message on {}: {why} (counted in /metrics; logged at most every {MALFORMED_LOG_EVERY:?})", message.get_channel_name());
                }
                return;
            }
        };
        if self.link.in_flight.load(Ordering::Relaxed) as usize >= self.settings.queue {
            self.link.refused.fetch_add(1, Ordering::Relaxed);
            return log::warn!(
                "redis ingest: {} commands in flight; a broadcast on {} was dropped",
                self.settings.queue,
                broadcast.channel
            );
        }
        let body = wire::Body {
            channel: broadcast.channel.as_str().into(),
            event: Some(broadcast.event.as_str().into()),
            data: &broadcast.data,
            pusher: None,
            user_id: None,
            except: broadcast.socket.as_deref().map(Into::into),
        };
        let keep_last = is_cache_channel(&broadcast.channel);
        let channel = broadcast.channel.clone();
        let counts = self.link.clone();
        let done: PublishDone = Box::new(move |result| match result {
            Ok(_) => drop(counts.ingested.fetch_add(1, Ordering::Relaxed)),
            Err(e) => log::warn!("redis ingest: a broadcast on {channel} was not published: {}", e.0),
        });
        self.link.waiting.fetch_add(1, Ordering::AcqRel);
        let key: Box<str> = broadcast.channel.as_str().into();
        self.publish(key, body.encode(), keep_last, done, link);
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

    fn new_epoch(&self) -> String {
        let n = self.epochs.get() + 1;
        self.epochs.set(n);
        format!("{}-{}-{n:x}", self.epoch_base, self.node_name)
    }
}

/// What `serve` hands to the code that talks to Redis.
#[derive(Clone)]
struct Linked {
    /// Which link this is (counted from 1): what an older link's tasks finish is dropped.
    generation: u64,
    con: MultiplexedConnection,
    lost: mpsc::UnboundedSender<String>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
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
fn is_native(key: &str, name: &str) -> bool {
    key == name && native::validate_channel(name).is_ok()
}

fn event_of(stored: &wire::Stored<'_>) -> Event {
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
