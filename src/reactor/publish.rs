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
    /// broadcast batch), so a send or close that follows those publishes in the inbox reaches
    /// the connection after them. Other topics keep their end-of-turn batch.
    fn deliver_pending_to(&mut self, id: ConnId) {
        if get(&mut self.conns, id).is_none() {
            return;
        }
        if !self.broadcast.is_empty() {
            return self.deliver_published(None);
        }
        let Worker { topics, conns, dirty, slow, limits, metrics, index, .. } = self;
        let mut delivery = Delivery { dirty, slow, limits, metrics, worker: *index as u16 };
        topics.deliver_member(id.slot, |member, bytes| {
            if let Some(conn) = conns.get_mut(member as usize) {
                delivery.queue(member, conn, bytes);
            }
        });
        for id in mem::take(&mut self.slow) {
            self.slow_consumer(id);
        }
    }

    /// Hands published batches to their subscribers (one `Bytes` clone each): those of one
    /// topic, or (None) those of every topic and the broadcast batch, at the end of a turn.
    pub(super) fn deliver_published(&mut self, topic: Option<&str>) {
        let Worker { topics, broadcast, deflate, conns, dirty, slow, limits, metrics, index, .. } = self;
        let mut delivery = Delivery { dirty, slow, limits, metrics, worker: *index as u16 };
        let mut to_member = |member: u32, bytes: &Bytes| {
            if let Some(conn) = conns.get_mut(member as usize) {
                delivery.queue(member, conn, bytes);
            }
        };
        match topic {
            Some(name) => topics.deliver_topic(name, &mut to_member),
            None => {
                topics.deliver(&mut to_member);
                if !broadcast.is_empty() {
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
            }
        }
        for id in mem::take(&mut self.slow) {
            self.slow_consumer(id);
        }
    }
}
