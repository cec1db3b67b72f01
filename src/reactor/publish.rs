//! Publish delivery: what other workers (and this one's callbacks) sent through the bus, and
//! the per-turn batches that carry published frames to subscribers.
//!
//! Owns: applying the inbox (publishes, and sends, closes and deferred HTTP responses other
//! threads asked for) and
//! `deliver_published`. Invariants: the frames published to one
//! topic in a turn reach each subscriber as clones of the same `Bytes` (no copy per
//! subscriber); a subscribe takes effect between the publishes before and after it, never in
//! the middle of a batch; a subscriber over its queue cap is dropped from or closed after the
//! delivery, never during it; a publish that skips one connection (its sender) is delivered at
//! once, after the topic's pending batch, so order per topic still holds. A connection that
//! takes compressed frames (permessage-deflate) gets the compressed batch of its topic (and of
//! the broadcast), made once per worker however many such subscribers there are. What a connection
//! receives follows the inbox's order: a send or close from the inbox first delivers what its
//! connection's topics have pending, and an unsubscribe takes effect between the publishes
//! before and after it, as a subscribe does.
//!
//! With a coalescing window (`Config::coalesce`) a batch (a topic's, or the broadcast's) is
//! delivered at the first turn's end past its due time instead of at the end of the turn that
//! opened it; until then it takes the frames published after it. Order per topic still holds:
//! whatever delivers a topic early (a subscribe, an unsubscribe, a publish that skips its sender,
//! a send or close from the inbox, a close) delivers its whole open batch first. A direct frame
//! made on the connection's own worker (a callback's send, a pong, the idle ping) is not held:
//! it passes the connection's open batches, as it passes the publishes made in the same turn
//! without a window, because order is promised per channel, not between a channel and direct
//! frames. A close delivers the connection's open batches before its close frame.

use std::mem;

use bytes::Bytes;

use super::bus::Envelope;
use super::connection::{Connection, Phase};
use super::flush::over_cap;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Limits, Worker};
use crate::config::SlowConsumerPolicy;
use crate::metrics::WorkerMetrics;
use crate::proto::frame::SHARE_THRESHOLD;

/// Queues published bytes on subscribers under their caps: what every delivery path shares.
struct Delivery<'a> {
    dirty: &'a mut Vec<u32>,
    slow: &'a mut Vec<ConnId>,
    limits: &'a Limits,
    metrics: &'a WorkerMetrics,
    worker: u16,
}

impl Delivery<'_> {
    /// One `Bytes` clone onto an open connection's queue; over the cap, dropped or noted as a
    /// slow consumer to close after the delivery.
    fn queue<S>(&mut self, slot: u32, conn: &mut Connection<S>, bytes: &Bytes) {
        if conn.phase != Phase::Open {
            return;
        }
        if over_cap(conn, bytes.len(), self.limits.max_queued) {
            match self.limits.slow_consumer {
                SlowConsumerPolicy::Drop => self.metrics.dropped_frames.add(1),
                SlowConsumerPolicy::Close => {
                    self.slow.push(ConnId { worker: self.worker, slot, generation: conn.generation })
                }
            }
            return;
        }
        conn.wq.push(bytes.clone(), &self.metrics.queued_bytes);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(slot);
        }
    }
}

impl<S: Service> Worker<S> {
    /// Applies the envelopes in this worker's inbox, in order.
    pub(super) fn apply_inbox(&mut self) {
        let mut envelopes = mem::take(&mut self.envelopes);
        self.shared.bus.take_inbox(self.index, &mut envelopes);
        // Everything queued behind an unsubscribe is in `envelopes` now, applied in order below;
        // what callbacks send from here on is applied as they return.
        self.io.take_inbox();
        for envelope in envelopes.drain(..) {
            match envelope {
                Envelope::Publish { topic, head, tail, except: None } => {
                    let Worker { topics, deflate, metrics, .. } = self;
                    let compress = || deflate.compress(&head, &tail, metrics);
                    let reached = topics.publish(&topic, &head, &tail, SHARE_THRESHOLD, compress);
                    self.metrics.deliveries.add(reached as u64);
                }
                Envelope::Publish { topic, head, tail, except: Some(except) } => {
                    self.publish_except(&topic, &head, &tail, except);
                }
                Envelope::Broadcast { head, tail } => {
                    if self.broadcast.is_empty() {
                        self.broadcast_due = self.open_due;
                    }
                    self.broadcast.push(&head, &tail, SHARE_THRESHOLD);
                    if self.deflate.enabled {
                        let (h, t) = self.deflate.compress(&head, &tail, &self.metrics).unwrap_or((head, tail));
                        self.deflate.broadcast.push(&h, &t, SHARE_THRESHOLD);
                    }
                }
                Envelope::Send { id, head, tail, ping } => {
                    self.deliver_pending_to(id);
                    self.queue_send(id, head, tail, ping);
                }
                Envelope::Close { id, code, reason } => {
                    self.deliver_pending_to(id);
                    self.close_conn(id, code, &reason);
                }
                Envelope::Respond { id, response } => self.respond_deferred(id, response),
                Envelope::Subscribe { id, topic } => {
                    let open = get(&mut self.conns, id).is_some_and(|c| c.phase == Phase::Open);
                    if open {
                        // Frames published before this subscribe go to the members they were
                        // published for; the newcomer starts with the next one.
                        self.deliver_published(Some(&topic));
                    }
                    let compressed = get(&mut self.conns, id).is_some_and(|c| c.compression.compresses());
                    if !open || !self.topics.subscribe(id.slot, &topic, compressed) {
                        self.shared.bus.uncount(self.index, &topic);
                    }
                }
                Envelope::Unsubscribe { id, topic } => {
                    if get(&mut self.conns, id).is_none() {
                        continue;
                    }
                    // Frames published before this unsubscribe still reach the member.
                    self.deliver_published(Some(&topic));
                    if self.topics.unsubscribe(id.slot, &topic) {
                        self.shared.bus.uncount(self.index, &topic);
                    }
                }
            }
        }
        self.envelopes = envelopes;
    }

    /// A frame for every member of `topic` but `except`, delivered now, after what the topic
    /// has pending. A stale `except` (closed, slot reused) skips nobody.
    fn publish_except(&mut self, topic: &str, head: &Bytes, tail: &Bytes, except: ConnId) {
        let except_slot = if get(&mut self.conns, except).is_some() { except.slot } else { u32::MAX };
        let Worker { topics, conns, dirty, slow, limits, metrics, index, deflate, .. } = self;
        let compress = || deflate.compress(head, tail, metrics);
        let mut delivery = Delivery { dirty, slow, limits, metrics, worker: *index as u16 };
        let reached = topics.publish_except(topic, head, tail, except_slot, compress, |member, bytes| {
            if let Some(conn) = conns.get_mut(member as usize) {
                delivery.queue(member, conn, bytes);
            }
        });
        self.metrics.deliveries.add(reached as u64);
        for id in mem::take(&mut self.slow) {
            self.slow_consumer(id);
        }
    }

    /// Delivers now what was published before to the topics connection `id` is in (and the
    /// broadcast batch), so a send or close that follows those publishes reaches the connection
    /// after them. Other topics keep their batch open.
    pub(super) fn deliver_pending_to(&mut self, id: ConnId) {
        if get(&mut self.conns, id).is_some() {
            self.deliver_pending(Pending::Member(id.slot));
        }
    }

    /// Hands published batches to their subscribers (one `Bytes` clone each): those of one
    /// topic, or (None) every open batch, the broadcast's included.
    pub(super) fn deliver_published(&mut self, topic: Option<&str>) {
        self.deliver_pending(topic.map_or(Pending::All, Pending::Topic));
    }

    /// At the end of a turn with a coalescing window: the batches due by `now` (µs on the
    /// timers' clock); the others stay open.
    pub(super) fn deliver_due(&mut self, now: u64) {
        self.deliver_pending(Pending::Due(now));
    }

    /// When the oldest open batch is due (µs on the timers' clock), with a coalescing window.
    pub(super) fn next_due(&self) -> Option<u64> {
        if self.limits.coalesce_us == 0 {
            return None;
        }
        let broadcast = (!self.broadcast.is_empty()).then_some(self.broadcast_due);
        match (self.topics.next_due(), broadcast) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn deliver_pending(&mut self, what: Pending<'_>) {
        let Worker { topics, broadcast, broadcast_due, deflate, conns, dirty, slow, limits, metrics, index, .. } = self;
        let mut delivery = Delivery { dirty, slow, limits, metrics, worker: *index as u16 };
        let mut to_member = |member: u32, bytes: &Bytes| {
            if let Some(conn) = conns.get_mut(member as usize) {
                delivery.queue(member, conn, bytes);
            }
        };
        let with_broadcast = match what {
            Pending::Topic(name) => {
                topics.deliver_topic(name, &mut to_member);
                false
            }
            Pending::Member(slot) => {
                topics.deliver_member(slot, &mut to_member);
                true
            }
            Pending::Due(now) => {
                topics.deliver_due(now, &mut to_member);
                *broadcast_due <= now
            }
            Pending::All => {
                topics.deliver(&mut to_member);
                true
            }
        };
        if with_broadcast && !broadcast.is_empty() {
            // Each connection gets the one batch that matches its mode.
            for (batch, compressed) in [(broadcast, false), (&mut deflate.broadcast, true)] {
                for bytes in batch.take() {
                    for (slot, conn) in conns.iter_mut() {
                        if conn.compression.compresses() == compressed {
                            delivery.queue(slot as u32, conn, &bytes);
                        }
                    }
                }
            }
        }
        for id in mem::take(&mut self.slow) {
            self.slow_consumer(id);
        }
    }
}

/// Which open batches a delivery takes.
#[derive(Clone, Copy)]
enum Pending<'a> {
    /// One topic's (before a subscribe or unsubscribe changes its members).
    Topic(&'a str),
    /// Those of the member's topics, and the broadcast's (before a send or close to it).
    Member(u32),
    /// Those due at or before this time (the end of a turn with a window).
    Due(u64),
    /// Every one (the end of a turn without a window; the graceful stop).
    All,
}
