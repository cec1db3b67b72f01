//! The engine's channels coming alive and their messages going out: the activation read after a
//! confirmed `SUBSCRIBE`, messages that arrive before it (held, then handled), deliveries to the
//! workers' topics, epoch changes, and the answers to native joins (a resume checks the epoch
//! in Redis first).
//!
//! Owns the `impl Engine` methods of that duty; the invariants they keep are `engine.rs`'s:
//! `delivered` splits a channel's messages exactly between the mirror and the live stream, and
//! a join's replay and topic subscribe fall between two deliveries.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fanout::Message;

use super::engine::{event_of, is_native, unix_ms, Channel, Engine, Linked, Waiting, EARLY_LIMIT, TIMEOUT};
use super::types::{Joined, Side, Unavailable};
use super::{script, wire};
use crate::native::protocol as native;
use crate::pusher::protocol::parse_socket_id;
use crate::space::{pusher_topic, Event};

impl Engine {
    /// Reads the seq and history of channels whose subscription is confirmed, and activates them.
    pub(super) async fn activate(self: Rc<Self>, keys: Vec<Box<str>>, link: Linked) {
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
    pub(super) fn activated(self: &Rc<Self>, key: &str, seq: u64, epoch: &str, entries: &[String], link: &Linked) {
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
    pub(super) fn apply_read(&self, key: &str, channel: &mut Channel, seq: u64, epoch: &str, entries: &[String]) {
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
    pub(super) fn new_epoch_under(&self, key: &str, channel: &mut Channel, epoch: &str, seq: u64) {
        channel.version += 1;
        channel.epoch = Some(epoch.into());
        channel.delivered = seq;
        channel.recent.clear();
        if !channel.native.is_empty() && is_native(key, &channel.name) {
            let text = native::subscribed(&channel.name, seq, epoch, Some(false));
            self.remote.publish(key, Message::Text(text.into()));
        }
    }

    pub(super) fn gap(&self, key: &str, delivered: u64, next: u64) {
        self.link.gaps.fetch_add(1, Ordering::Relaxed);
        log::warn!("redis: channel {key}: messages {} to {} were lost while relinking", delivered + 1, next - 1);
    }

    /// Hands one event to this node's subscribers and records it in the mirror.
    pub(super) fn deliver(
        &self,
        key: &str,
        channel: &mut Channel,
        at_ms: u64,
        event: Arc<Event>,
        except: Option<&str>,
    ) {
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

    pub(super) fn trim(&self, channel: &mut Channel) {
        // One kept even without history: a cache channel's last event.
        let keep = self.settings.history_size.max(1);
        while channel.recent.len() > keep {
            channel.recent.pop_front();
        }
    }

    /// A message on a subscribed channel (or, from a pattern, a Laravel broadcast).
    pub(super) fn receive(self: &Rc<Self>, message: &redis::Msg, link: &Linked) {
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
    pub(super) fn on_text(&self, key: &str, channel: &mut Channel, text: &str) {
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

    /// Completes a join on an active channel: the reply and replay, then the topic. A Pusher
    /// join is counted in Redis first (`count`).
    pub(super) fn complete(self: &Rc<Self>, key: &str, channel: &mut Channel, w: Waiting, link: &Linked) {
        if let Side::Pusher { member, max_members } = &w.side {
            let (member, max_members) = (member.clone(), *max_members);
            // A connection subscribed already is answered again, not counted again.
            let again = channel.pusher.contains_key(&w.conn) || !channel.joining.insert(w.conn);
            return self.count(key, &channel.name, w, member, max_members, again, link);
        }
        if matches!(w.side, Side::Native { since: Some(_), .. }) {
            channel.resuming.insert(w.conn);
            return self.verify(key, channel, w, link);
        }
        self.answer(key, channel, w);
    }

    /// A resume: the mirror may hold an epoch Redis has since lost (a flush, a restart) without
    /// a message having shown it yet, so the channel is read again first, and brought up to it
    /// unless a delivery came in meanwhile (which is newer than the read).
    pub(super) fn verify(self: &Rc<Self>, key: &str, channel: &Channel, w: Waiting, link: &Linked) {
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
            let Some(channel) = channels.get_mut(key.as_str()).filter(|c| c.resuming.contains(&w.conn)) else {
                // It left (unsubscribed or closed) while the read was out: nothing to answer.
                engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
                return;
            };
            channel.resuming.remove(&w.conn);
            match read {
                Ok(Ok((seq, epoch, entries))) if current && channel.active => {
                    if channel.version == version {
                        engine.apply_read(&key, channel, seq, &epoch, &entries);
                    }
                    engine.answer(&key, channel, w);
                }
                Ok(Ok(_)) if current => channel.waiting.push(w),
                _ => {
                    engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    (w.done)(&engine.remote, Err(Unavailable("the link to redis was lost".into())));
                }
            }
        });
    }

    /// Answers a native join from the mirror: the reply and replay, then the topic.
    pub(super) fn answer(&self, key: &str, channel: &mut Channel, w: Waiting) {
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
    pub(super) fn kept<'a>(&self, channel: &'a Channel) -> impl Iterator<Item = &'a Arc<Event>> + 'a {
        let oldest = unix_ms().saturating_sub(self.settings.history_ttl.as_millis() as u64);
        channel.recent.iter().filter(move |(at, _)| *at >= oldest).map(|(_, e)| e)
    }
}
