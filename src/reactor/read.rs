//! Reads: a readable connection's bytes go into the worker's buffer and on to `process`.
//!
//! Owns: the read loop and where unconsumed bytes live between reads. Invariants: reads go into
//! the worker's one buffer; only an incomplete frame's tail stays with the connection, in a
//! buffer of exactly its size (or, for a large frame in progress, the block it is being read
//! into), released once empty, so an idle connection owns no read buffer. A connection reads at
//! most `MAX_READS_PER_TURN` times per turn, then yields to the others. A TLS connection takes
//! its own branch (`tls_io.rs`) before the first read; the plain path is unchanged by it.

use std::io::{self, Read};
use std::mem;

use mio::event::Event;

use super::connection::Phase;
use super::proxy::HeaderStep;
use super::read_buf::ReadBuf;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};

/// Spare room wanted before each read; less than this and a fresh block is allocated.
pub(super) const MIN_READ: usize = 4 * 1024;
/// Size of a fresh read block.
pub(super) const READ_BLOCK: usize = 64 * 1024;
/// A partial tail at least this long is handed to the connection with its block instead of
/// being copied out (a large frame in progress keeps reading into its own buffer).
pub(super) const ADOPT_LIMIT: usize = 4 * 1024;
/// Reads per readiness event before the connection yields to the others (1 MiB at 64 KiB).
pub(super) const MAX_READS_PER_TURN: usize = 16;

/// How far a read loop reads, from what the readiness event said. A read shorter than the room
/// offered means the socket was empty at that moment; the read after it would only return
/// WouldBlock, the EOF or the error, so where the event already told which, that read is
/// skipped (one syscall per message in a ping-pong, one per closing connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadUntil {
    /// Plain readable: stop at a short read (edge-triggered, new bytes raise a new event).
    Short,
    /// Until WouldBlock: a connection resumed after its per-turn budget, whose bytes already
    /// waiting raise no new edge.
    Empty,
    /// The peer's FIN had arrived: the bytes before it are all queued, so after a short read
    /// the connection is at its EOF.
    Fin,
    /// The socket had an error (a reset): the bytes before it are all queued, so after a short
    /// read nothing more can come.
    Error,
}

/// What a read loop does after one successful read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterRead {
    Again,
    /// The socket is empty for now.
    Stop,
    /// The per-turn budget is spent: read again next turn.
    Yield,
    /// The peer's FIN is next: handle it as a read of 0.
    Eof,
    /// The socket's error is next: drop the connection.
    Dead,
}

impl ReadUntil {
    /// After the `reads`-th read of this turn returned `n` bytes of the `offered`.
    pub(super) fn after(self, n: usize, offered: usize, reads: usize) -> AfterRead {
        match self {
            _ if n >= offered => {}
            ReadUntil::Short => return AfterRead::Stop,
            ReadUntil::Fin => return AfterRead::Eof,
            ReadUntil::Error => return AfterRead::Dead,
            ReadUntil::Empty => {}
        }
        if reads >= MAX_READS_PER_TURN {
            AfterRead::Yield
        } else {
            AfterRead::Again
        }
    }
}

impl<S: Service> Worker<S> {
    /// A readiness event for connection `id`: what it says about the socket's end decides
    /// where the read stops.
    pub(super) fn on_read_event(&mut self, id: ConnId, event: &Event) {
        let until = if event.is_error() {
            ReadUntil::Error
        } else if event.is_read_closed() {
            ReadUntil::Fin
        } else if event.is_readable() {
            ReadUntil::Short
        } else {
            return;
        };
        self.on_readable(id, until);
    }

    /// Reads the connections that spent their read budget last turn, until WouldBlock: their
    /// waiting bytes raise no new edge.
    pub(super) fn read_again_now(&mut self) {
        for id in mem::take(&mut self.read_again) {
            self.on_readable(id, ReadUntil::Empty);
        }
    }

    /// Reads until the socket is empty (or the per-turn budget runs out) and dispatches what
    /// arrived; `until` says where to stop.
    pub(super) fn on_readable(&mut self, id: ConnId, until: ReadUntil) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.read_paused {
            return; // a deferred response is awaited with a full request buffer held
        }
        if conn.phase == Phase::Open && self.limits.ping_ticks > 0 {
            conn.ping_sent = false;
            conn.deadline = self.now + self.limits.ping_ticks;
        }
        if conn.tls.is_some() {
            return self.on_readable_tls(id, until);
        }
        // A large frame in progress keeps its own buffer; a small tail joins the worker's.
        let own = conn.rbuf.filled() >= ADOPT_LIMIT;
        let mut buf = if own {
            mem::take(&mut conn.rbuf)
        } else {
            let mut worker_buf = mem::take(&mut self.rbuf);
            if !conn.rbuf.is_empty() {
                worker_buf.append(&conn.rbuf);
                conn.rbuf = ReadBuf::default();
            }
            worker_buf
        };
        let mut reads = 0;
        while let Some(conn) = get(&mut self.conns, id) {
            let room = buf.spare(MIN_READ, READ_BLOCK);
            let offered = room.len();
            let result = (&conn.stream).read(room);
            match result {
                Ok(0) => {
                    self.stash(id, buf, own);
                    self.peer_closed(id);
                    return;
                }
                Ok(n) => {
                    buf.commit(n);
                    self.metrics.bytes_in.add(n as u64);
                    match self.take_proxy_header(id, &mut buf) {
                        HeaderStep::Ready => self.process(id, &mut buf),
                        HeaderStep::Wait => {}
                        HeaderStep::Closed => break,
                    }
                    reads += 1;
                    match self.after_read(id, until, n, offered, reads) {
                        AfterRead::Again => {}
                        AfterRead::Stop | AfterRead::Yield => break,
                        end => {
                            self.stash(id, buf, own);
                            self.end_read(id, end);
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stash(id, buf, own);
                    self.remove(id);
                    return;
                }
            }
        }
        self.stash(id, buf, own);
        // Answer this connection now rather than at the end of the turn: a client waiting for
        // its reply keeps the pipeline moving instead of both sides sleeping in lockstep, and
        // it still costs one write per connection. Publishes keep their end-of-turn batch.
        if let Some(conn) = get(&mut self.conns, id) {
            if conn.dirty {
                conn.dirty = false;
                self.flush(id);
            }
        }
    }

    /// What a read loop does after the `reads`-th read of this turn returned `n` bytes of the
    /// `offered`: a connection that paused reading stops; one that spent its budget is read
    /// again next turn.
    pub(super) fn after_read(
        &mut self,
        id: ConnId,
        until: ReadUntil,
        n: usize,
        offered: usize,
        reads: usize,
    ) -> AfterRead {
        if get(&mut self.conns, id).is_some_and(|c| c.read_paused) {
            return AfterRead::Stop; // a deferred response is awaited with a full request held
        }
        let after = until.after(n, offered, reads);
        if after == AfterRead::Yield {
            self.read_again.push(id);
        }
        after
    }

    /// Ends a read loop at the EOF or the socket's error it knows is next.
    pub(super) fn end_read(&mut self, id: ConnId, end: AfterRead) {
        match end {
            AfterRead::Eof => self.peer_closed(id),
            AfterRead::Dead => self.remove(id),
            AfterRead::Again | AfterRead::Stop | AfterRead::Yield => {}
        }
    }

    /// Puts the read buffer back: unconsumed bytes belong to the connection, the rest of the
    /// block to whoever owned it.
    pub(super) fn stash(&mut self, id: ConnId, mut buf: ReadBuf, own: bool) {
        let Some(conn) = get(&mut self.conns, id) else {
            drop(buf.take_filled());
            if !own {
                self.rbuf = buf;
            }
            return;
        };
        if own {
            buf.release_if_empty();
            conn.rbuf = buf;
        } else if buf.is_empty() {
            self.rbuf = buf;
        } else if buf.filled() < ADOPT_LIMIT {
            conn.rbuf = buf.take_copy();
            self.rbuf = buf;
        } else {
            conn.rbuf = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AfterRead, ReadUntil, MAX_READS_PER_TURN};

    #[test]
    fn a_short_read_ends_the_loop_as_the_event_said() {
        assert_eq!(ReadUntil::Short.after(10, 100, 1), AfterRead::Stop);
        assert_eq!(ReadUntil::Fin.after(10, 100, 1), AfterRead::Eof);
        assert_eq!(ReadUntil::Error.after(10, 100, 1), AfterRead::Dead);
        // Resumed after the budget: only WouldBlock (or the EOF, or an error) ends it.
        assert_eq!(ReadUntil::Empty.after(10, 100, 1), AfterRead::Again);
    }

    #[test]
    fn a_full_read_goes_on_until_the_budget() {
        for until in [ReadUntil::Short, ReadUntil::Empty, ReadUntil::Fin, ReadUntil::Error] {
            assert_eq!(until.after(100, 100, 1), AfterRead::Again, "{until:?}");
            assert_eq!(until.after(100, 100, MAX_READS_PER_TURN), AfterRead::Yield, "{until:?}");
        }
        // A short last read still says what comes next.
        assert_eq!(ReadUntil::Fin.after(1, 100, MAX_READS_PER_TURN), AfterRead::Eof);
    }
}
