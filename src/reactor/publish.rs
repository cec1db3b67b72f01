//! Publish delivery: what other workers (and this one's callbacks) sent through the bus, and
//! the per-turn batches that carry published frames to subscribers.
//!
//! Owns: applying the inbox and `deliver_published`. Invariants: the frames published to one
//! topic in a turn reach each subscriber as clones of the same `Bytes` (no copy per
//! subscriber); a subscribe takes effect between the publishes before and after it, never in
//! the middle of a batch; a subscriber over its queue cap is dropped from or closed after the
//! delivery, never during it.

use std::mem;

use bytes::Bytes;

use super::bus::Envelope;
use super::connection::{Connection, Phase};
use super::flush::over_cap;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::config::SlowConsumerPolicy;
use crate::proto::frame::SHARE_THRESHOLD;

impl<S: Service> Worker<S> {
    /// Applies the envelopes in this worker's inbox, in order.
    pub(super) fn apply_inbox(&mut self) {
        let mut envelopes = mem::take(&mut self.envelopes);
        self.shared.bus.take_inbox(self.index, &mut envelopes);
        for envelope in envelopes.drain(..) {
            match envelope {
                Envelope::Publish { topic, head, tail } => {
                    let reached = self.topics.publish(&topic, &head, &tail, SHARE_THRESHOLD);
                    self.metrics.deliveries.add(reached as u64);
                }
                Envelope::Broadcast { head, tail } => self.broadcast.push(&head, &tail, SHARE_THRESHOLD),
                Envelope::Subscribe { id, topic } => {
                    let open = get(&mut self.conns, id).is_some_and(|c| c.phase == Phase::Open);
                    if open {
                        // Frames published before this subscribe go to the members they were
                        // published for; the newcomer starts with the next one.
                        self.deliver_published(Some(&topic));
                    }
                    if !open || !self.topics.subscribe(id.slot, &topic) {
                        self.shared.bus.uncount(self.index, &topic);
                    }
                }
                Envelope::Unsubscribe { id, topic } => {
                    if get(&mut self.conns, id).is_some() && self.topics.unsubscribe(id.slot, &topic) {
                        self.shared.bus.uncount(self.index, &topic);
                    }
                }
            }
        }
        self.envelopes = envelopes;
    }

    /// Hands published batches to their subscribers (one `Bytes` clone each): those of one
    /// topic, or (None) those of every topic and the broadcast batch, at the end of a turn.
    pub(super) fn deliver_published(&mut self, topic: Option<&str>) {
        let Worker { topics, broadcast, conns, dirty, slow, limits, metrics, .. } = self;
        let mut deliver = |slot: u32, conn: &mut Connection<S::Session>, bytes: &Bytes| {
            if conn.phase != Phase::Open {
                return;
            }
            if over_cap(conn, bytes.len(), limits.max_queued) {
                match limits.slow_consumer {
                    SlowConsumerPolicy::Drop => metrics.dropped_frames.add(1),
                    SlowConsumerPolicy::Close => slow.push(ConnId { slot, generation: conn.generation }),
                }
                return;
            }
            conn.wq.push(bytes.clone(), &metrics.queued_bytes);
            if !conn.dirty {
                conn.dirty = true;
                dirty.push(slot);
            }
        };
        let mut to_member = |member: u32, bytes: &Bytes| {
            if let Some(conn) = conns.get_mut(member as usize) {
                deliver(member, conn, bytes);
            }
        };
        match topic {
            Some(name) => topics.deliver_topic(name, &mut to_member),
            None => {
                topics.deliver(&mut to_member);
                if !broadcast.is_empty() {
                    for bytes in broadcast.take() {
                        for (slot, conn) in conns.iter_mut() {
                            deliver(slot as u32, conn, &bytes);
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
