//! Writes: frames queued on a connection under its cap, connections marked dirty, and the
//! flush that writes each dirty connection's queue with one `send` or `writev`.
//!
//! Owns: `queue_data`, the dirty list and `flush`. Invariants: a connection is in the dirty
//! list at most once (its `dirty` flag); WRITABLE interest is registered only while bytes
//! remain after a short write; once a lingering connection's last bytes are out, its write side
//! is shut down and it waits for the peer's FIN. A TLS connection's flush is `tls_io.rs`'s
//! (encrypt, then write); the plain path is unchanged by it.

use std::mem;
use std::net::Shutdown;

use bytes::Bytes;
use mio::Interest;

use super::connection::{Connection, Phase};
use super::deflate::Compression;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::config::SlowConsumerPolicy;

/// True when queueing `len` more bytes would pass the cap. A frame is always accepted into an
/// empty queue, so the bound is the cap plus one message.
pub(super) fn over_cap<S>(conn: &Connection<S>, len: usize, max_queued: usize) -> bool {
    !conn.wq.is_empty() && conn.wq.queued_bytes() + len > max_queued
}

impl<S: Service> Worker<S> {
    /// Queues a frame (application data or a pong) on an open connection, enforcing the
    /// queue cap: over it, a droppable frame is dropped under the `Drop` policy, and otherwise
    /// the connection is closed as a slow consumer.
    pub(super) fn queue_data(&mut self, id: ConnId, head: Bytes, tail: Bytes, droppable: bool) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        if over_cap(conn, head.len() + tail.len(), self.limits.max_queued) {
            if droppable && self.limits.slow_consumer == SlowConsumerPolicy::Drop {
                self.metrics.dropped_frames.add(1);
            } else {
                self.slow_consumer(id);
            }
            return;
        }
        conn.wq.push(head, &self.metrics.queued_bytes);
        conn.wq.push(tail, &self.metrics.queued_bytes);
        self.metrics.frames_out.add(1);
        self.mark_dirty(id);
    }

    /// Queues what a callback sent: data under the cap (droppable under the `Drop` policy), a
    /// ping whatever the queue holds, as the keep-alive ping always was.
    pub(super) fn queue_send(&mut self, id: ConnId, head: Bytes, tail: Bytes, ping: bool) {
        if !ping {
            let mode = get(&mut self.conns, id).map_or(Compression::Off, |c| c.compression);
            let (head, tail) = self.deflate.outgoing(mode, head, tail, &self.metrics);
            return self.queue_data(id, head, tail, true);
        }
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase == Phase::Open {
            conn.wq.push(head, &self.metrics.queued_bytes);
            self.mark_dirty(id);
        }
    }

    pub(super) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = get(&mut self.conns, id) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id.slot);
            }
        }
    }

    /// Flushes every dirty connection, including those a flush makes dirty in turn.
    pub(super) fn flush_dirty(&mut self) {
        while !self.dirty.is_empty() {
            let mut batch = mem::take(&mut self.dirty);
            for slot in batch.drain(..) {
                let Some(conn) = self.conns.get_mut(slot as usize) else {
                    continue;
                };
                if conn.dirty {
                    conn.dirty = false;
                    let id = ConnId { worker: self.index as u16, slot, generation: conn.generation };
                    self.flush(id);
                }
            }
            if self.dirty.is_empty() {
                self.dirty = batch;
            }
        }
    }

    /// Writes what is queued with one `send` or `writev`; WRITABLE interest only while bytes
    /// remain.
    pub(super) fn flush(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.tls.is_some() {
            return self.flush_tls(id);
        }
        match conn.wq.write_to(&conn.stream, &self.metrics.queued_bytes) {
            Ok((bytes, calls)) => {
                self.metrics.bytes_out.add(bytes as u64);
                self.metrics.writev_calls.add(u64::from(calls));
            }
            Err(_) => return self.remove(id),
        }
        let pending = !conn.wq.is_empty();
        self.after_write(id, pending);
    }

    /// After a flush: WRITABLE interest while bytes are `pending`; a lingering connection with
    /// nothing left sends its FIN.
    pub(super) fn after_write(&mut self, id: ConnId, pending: bool) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if pending != conn.wants_write {
            let interest = if pending { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if self.poll.registry().reregister(&mut conn.stream, id.token(), interest).is_err() {
                return self.remove(id);
            }
            conn.wants_write = pending;
        }
        if !pending && conn.phase == Phase::Lingering {
            // Everything we had to say is out: send FIN, then wait for the peer's.
            let _ = conn.stream.shutdown(Shutdown::Write);
            conn.phase = Phase::HalfClosed;
        }
    }
}
