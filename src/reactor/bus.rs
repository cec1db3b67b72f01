//! How workers reach each other: one bounded inbox per worker, a waker, and the table of which
//! workers have subscribers for which topic. Nothing else: admission and counters live elsewhere.
//!
//! Owns: `Bus`, `Envelope`, and the stop request, which reaches every worker through its waker.
//! Invariants:
//! - Every publish, broadcast, subscribe and unsubscribe goes through the inboxes, including the
//!   publishing worker's own. An inbox is FIFO, so whatever order callers impose on these calls
//!   (the gateway holds its history lock while it assigns a seq and publishes) is the order in
//!   which every worker applies them: per-topic order holds across workers, and a subscribe
//!   takes effect between the publishes before and after it, never in the middle of a batch.
//! - A publish is encoded once; each interested worker gets clones of the same `Bytes`.
//! - `interest` counts, per topic and worker, the subscribes requested and not yet undone. It is
//!   raised when a subscribe is requested (before its envelope is queued), so a publish that
//!   comes after the request always reaches that worker.
//! - A full inbox drops the envelope and counts it (`inbox_overflows`); nothing is lost silently.
//!   A worker is woken only when its inbox goes from empty to non-empty, and never by itself;
//!   a thread that is no worker calls with `from` = `NO_WORKER` (`shared.rs`), which matches no
//!   worker, so it always wakes the target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use mio::Waker;

use super::token::ConnId;
use crate::proto::CloseCode;

/// Envelopes an inbox holds before it counts overflows instead.
pub(crate) const INBOX_CAPACITY: usize = 64 * 1024;

pub(crate) enum Envelope {
    /// A frame for a topic: `head` and `tail` (often empty) together make the frame. `except`,
    /// when set, is a connection of the receiving worker that must not get it.
    Publish {
        topic: Arc<str>,
        head: Bytes,
        tail: Bytes,
        except: Option<ConnId>,
    },
    /// A frame for one connection of the receiving worker, sent from another worker (`ping`:
    /// see `Command::Send`).
    Send {
        id: ConnId,
        head: Bytes,
        tail: Bytes,
        ping: bool,
    },
    /// A close for one connection of the receiving worker, asked by another worker.
    Close {
        id: ConnId,
        code: CloseCode,
        reason: String,
    },
    /// A frame for every open connection of the worker.
    Broadcast {
        head: Bytes,
        tail: Bytes,
    },
    Subscribe {
        id: ConnId,
        topic: Arc<str>,
    },
    /// The deferred answer to the plain HTTP request connection `id` is waiting on (encoded
    /// with the request's keep-alive), from the thread that answered it.
    Respond {
        id: ConnId,
        response: Bytes,
    },
    Unsubscribe {
        id: ConnId,
        topic: Arc<str>,
    },
}

struct Inbox {
    queue: Mutex<Vec<Envelope>>,
    waker: Waker,
}

pub(crate) struct Bus {
    inboxes: Vec<Inbox>,
    /// topic -> subscribes per worker.
    interest: Mutex<HashMap<Arc<str>, Vec<u32>>>,
    /// Set once by `request_stop`.
    stop: AtomicBool,
    inbox_overflows: AtomicU64,
}

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here only pushes or swaps whole values, so a panic elsewhere
    // cannot leave the data half-updated: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bus {
    pub(crate) fn new(wakers: Vec<Waker>) -> Bus {
        Bus {
            inboxes: wakers.into_iter().map(|waker| Inbox { queue: Mutex::new(Vec::new()), waker }).collect(),
            interest: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            inbox_overflows: AtomicU64::new(0),
        }
    }

    /// Queues an envelope for `worker`, waking it if `from` is another worker or none
    /// (`NO_WORKER`). A worker index
    /// out of range (an id made up with `ConnId::from_parts`) names no connection: dropped.
    fn send(&self, from: usize, worker: usize, envelope: Envelope) {
        let Some(inbox) = self.inboxes.get(worker) else {
            return;
        };
        let was_empty = {
            let mut queue = lock(&inbox.queue);
            if queue.len() >= INBOX_CAPACITY {
                self.inbox_overflows.fetch_add(1, Ordering::Relaxed);
                log::warn!("worker {worker}'s inbox is full; an envelope was dropped");
                return;
            }
            queue.push(envelope);
            queue.len() == 1
        };
        if was_empty && worker != from {
            let _ = inbox.waker.wake();
        }
    }

    /// Sends a frame to every worker with subscribers of `topic`, skipping the connection
    /// `except` on its own worker; returns how many workers.
    pub(crate) fn publish(&self, from: usize, topic: &str, head: Bytes, tail: Bytes, except: Option<ConnId>) -> usize {
        let (topic, workers): (Arc<str>, Vec<usize>) = {
            let interest = lock(&self.interest);
            let Some((name, counts)) = interest.get_key_value(topic) else {
                return 0;
            };
            (name.clone(), counts.iter().enumerate().filter(|(_, &n)| n > 0).map(|(w, _)| w).collect())
        };
        for &w in &workers {
            let except = except.filter(|id| id.worker() == w);
            self.send(
                from,
                w,
                Envelope::Publish { topic: topic.clone(), head: head.clone(), tail: tail.clone(), except },
            );
        }
        workers.len()
    }

    /// Hands an envelope for one connection (a `Send`, `Close` or `Respond`) to the
    /// connection's worker.
    pub(crate) fn to_connection(&self, from: usize, id: ConnId, envelope: Envelope) {
        self.send(from, id.worker(), envelope);
    }

    pub(crate) fn broadcast(&self, from: usize, head: Bytes, tail: Bytes) {
        for w in 0..self.inboxes.len() {
            self.send(from, w, Envelope::Broadcast { head: head.clone(), tail: tail.clone() });
        }
    }

    /// Counts the subscribe now and queues it for the connection's own worker, waking it if it
    /// is not `from`.
    pub(crate) fn subscribe(&self, from: usize, id: ConnId, topic: &str) {
        let worker = id.worker();
        if worker >= self.inboxes.len() {
            return; // a made-up id: no such worker, no such connection
        }
        let topic = {
            let mut interest = lock(&self.interest);
            let workers = self.inboxes.len();
            let entry = match interest.get_key_value(topic) {
                Some((name, _)) => name.clone(),
                None => {
                    let name: Arc<str> = topic.into();
                    interest.insert(name.clone(), vec![0; workers]);
                    name
                }
            };
            interest.get_mut(&entry).expect("inserted above")[worker] += 1;
            entry
        };
        self.send(from, worker, Envelope::Subscribe { id, topic });
    }

    /// Queues the unsubscribe for the connection's own worker.
    pub(crate) fn unsubscribe(&self, from: usize, id: ConnId, topic: &str) {
        self.send(from, id.worker(), Envelope::Unsubscribe { id, topic: topic.into() });
    }

    /// Undoes one counted subscribe of `worker` to `topic` (the member left, or the subscribe
    /// turned out to be a duplicate or came too late).
    pub(crate) fn uncount(&self, worker: usize, topic: &str) {
        let mut interest = lock(&self.interest);
        if let Some(counts) = interest.get_mut(topic) {
            counts[worker] = counts[worker].saturating_sub(1);
            if counts.iter().all(|&n| n == 0) {
                interest.remove(topic);
            }
        }
    }

    /// Moves `worker`'s queued envelopes into `out`, in order.
    pub(crate) fn take_inbox(&self, worker: usize, out: &mut Vec<Envelope>) {
        let mut queue = lock(&self.inboxes[worker].queue);
        if out.is_empty() {
            std::mem::swap(&mut *queue, out);
        } else {
            out.append(&mut queue);
        }
    }

    /// True when `worker`'s inbox holds envelopes.
    pub(crate) fn has_pending(&self, worker: usize) -> bool {
        !lock(&self.inboxes[worker].queue).is_empty()
    }

    /// Asks every worker to begin its graceful stop, and wakes them to see it.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        for inbox in &self.inboxes {
            let _ = inbox.waker.wake();
        }
    }

    /// True once `request_stop` was called.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Envelopes dropped because an inbox was full.
    pub(crate) fn inbox_overflows(&self) -> u64 {
        self.inbox_overflows.load(Ordering::Relaxed)
    }

    /// The `n` topics with the most subscribers over all workers, most first.
    pub(crate) fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        let interest = lock(&self.interest);
        let mut all: Vec<(String, u64)> =
            interest.iter().map(|(t, c)| (t.to_string(), c.iter().map(|&x| u64::from(x)).sum())).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Topics with at least one subscriber.
    pub(crate) fn topic_count(&self) -> usize {
        lock(&self.interest).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    fn bus(workers: usize) -> (Vec<Poll>, Bus) {
        let polls: Vec<Poll> = (0..workers).map(|_| Poll::new().unwrap()).collect();
        let wakers = polls.iter().map(|p| Waker::new(p.registry(), Token(0)).unwrap()).collect();
        (polls, Bus::new(wakers))
    }

    fn id(worker: u16, slot: u32) -> ConnId {
        ConnId { worker, slot, generation: 1 }
    }

    fn kinds(bus: &Bus, worker: usize) -> Vec<String> {
        let mut out = Vec::new();
        bus.take_inbox(worker, &mut out);
        out.iter()
            .map(|e| match e {
                Envelope::Publish { topic, head, .. } => {
                    format!("pub {topic} {}", String::from_utf8_lossy(head))
                }
                Envelope::Broadcast { .. } => "bcast".into(),
                Envelope::Send { .. } => "send".into(),
                Envelope::Close { .. } => "close".into(),
                Envelope::Respond { .. } => "respond".into(),
                Envelope::Subscribe { topic, .. } => format!("sub {topic}"),
                Envelope::Unsubscribe { topic, .. } => format!("unsub {topic}"),
            })
            .collect()
    }

    #[test]
    fn publishes_reach_only_interested_workers_in_order() {
        let (_polls, bus) = bus(3);
        bus.subscribe(1, id(1, 1), "news");
        assert_eq!(bus.publish(0, "news", Bytes::from_static(b"1"), Bytes::new(), None), 1);
        assert_eq!(bus.publish(2, "news", Bytes::from_static(b"2"), Bytes::new(), None), 1);
        assert_eq!(bus.publish(0, "other", Bytes::from_static(b"x"), Bytes::new(), None), 0);
        assert_eq!(kinds(&bus, 1), ["sub news", "pub news 1", "pub news 2"]);
        assert!(kinds(&bus, 0).is_empty() && kinds(&bus, 2).is_empty());
    }

    #[test]
    fn interest_is_counted_and_undone() {
        let (_polls, bus) = bus(2);
        bus.subscribe(0, id(0, 1), "t");
        bus.subscribe(0, id(0, 2), "t");
        bus.subscribe(1, id(1, 3), "t");
        assert_eq!(bus.top_topics(10), vec![("t".to_string(), 3)]);
        bus.uncount(0, "t");
        bus.uncount(0, "t");
        assert_eq!(bus.publish(1, "t", Bytes::new(), Bytes::new(), None), 1, "only worker 1 is left");
        bus.uncount(1, "t");
        assert_eq!(bus.topic_count(), 0);
    }

    #[test]
    fn a_full_inbox_counts_what_it_drops() {
        let (_polls, bus) = bus(2);
        bus.subscribe(1, id(1, 1), "t");
        for _ in 0..INBOX_CAPACITY + 5 {
            bus.publish(0, "t", Bytes::new(), Bytes::new(), None);
        }
        assert_eq!(bus.inbox_overflows(), 6, "the subscribe took one place");
    }
}
