//! The per-thread client connections and what a scenario acts through.
//!
//! Owns: `Net` (the connections of one thread in a slab-like `Vec`, their write buffers, the
//! queue of connects, the thread's counters and histograms), `Driver` (what a scenario
//! implements), `Kind`, `EndReason`, `Ended`, `Link` and the connection record every part of
//! the reactor shares. A driver acts through `Net` (`send`, `open`, `close`, `record`,
//! `reached`). Its duties are split by file: `connect` opens sockets (connect, source address,
//! ramp, handshake timeout); `reactor` runs the loop and moves the bytes of connected sockets
//! (the client upgrade, frames in, writes out). Both add methods to `Net` and import this
//! module; this module imports neither.
//!
//! Cost model, since the generator must be cheaper than what it measures: each thread reads 64 KiB
//! at a time into one buffer and walks every frame in it in place; only the tail of an incomplete
//! frame is copied into the connection's own buffer. Outgoing frames are appended, masked in
//! place, to a per-connection `Vec` that keeps its capacity, and flushed with one `write` per
//! connection per loop turn. An idle connection costs a socket and a few empty `Vec`s.
//! Must not: know any scenario's message format, or any scenario, `cli` or `config` type; where
//! to connect comes in as a `plan::Target`.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::proto::deflate::Inflater;
use fanout::proto::{OpCode, ProtocolError};
use mio::net::TcpStream;
use mio::{Poll, Registry, Token, Waker};
use rustls::ClientConnection;
use socket2::SockRef;

use crate::plan::Target;
use crate::shared::{Report, Shared};
use crate::stats::{Counters, Hist, Stats};
use crate::util::{Clock, XorShift};
use crate::wire::{push_frame, push_frame_with};

mod connect;
pub mod reactor;

/// Bytes read per `read` call, and the size of the thread's receive buffer.
pub const READ_CHUNK: usize = 64 * 1024;

/// Largest frame payload accepted from a server.
const MAX_PAYLOAD: usize = 64 << 20;

/// The token of the thread's waker (other threads and the monitor wake it on a phase change).
pub const WAKER_TOKEN: Token = Token(usize::MAX);

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A WebSocket client (upgrade, then frames).
    Ws,
    /// Plain TCP handed to the driver as bytes (the HTTP publisher).
    Raw,
}

/// Why a connection ended, coarse enough to count by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    Refused,
    Reset,
    Timeout,
    /// EADDRNOTAVAIL: out of ephemeral ports for this address tuple (use `--addrs`).
    NoPorts,
    /// The peer closed the TCP connection without a close frame.
    Eof,
    /// The server answered the upgrade with this status instead of 101.
    Status(u16),
    BadHandshake,
    Protocol(ProtocolError),
    /// The TLS handshake or a record failed.
    Tls(String),
    /// The server sent a close frame with this code (1005 = no code).
    CloseFrame(u16),
    /// We closed it.
    Local,
    Io(String),
}

impl EndReason {
    pub fn from_io(e: &io::Error) -> EndReason {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => EndReason::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => EndReason::Reset,
            io::ErrorKind::TimedOut => EndReason::Timeout,
            io::ErrorKind::AddrNotAvailable => EndReason::NoPorts,
            _ => EndReason::Io(e.kind().to_string()),
        }
    }

    /// The label failures are counted under.
    pub fn label(&self) -> String {
        match self {
            EndReason::Refused => "refused".into(),
            EndReason::Reset => "reset".into(),
            EndReason::Timeout => "timeout".into(),
            EndReason::NoPorts => "no free ports (use --addrs)".into(),
            EndReason::Eof => "closed by server".into(),
            EndReason::Status(s) => format!("status {s}"),
            EndReason::BadHandshake => "bad handshake".into(),
            EndReason::Tls(e) => format!("tls: {e}"),
            EndReason::Protocol(e) => format!("protocol error: {e}"),
            EndReason::CloseFrame(c) => format!("close {c}"),
            EndReason::Local => "closed by us".into(),
            EndReason::Io(k) => k.clone(),
        }
    }
}

/// A connection that ended, as the driver hears of it.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Its slot, or `None` when the connect failed before it had one.
    pub id: Option<usize>,
    pub reason: EndReason,
    /// Whether the upgrade had completed.
    pub was_open: bool,
}

enum State {
    Connecting,
    Handshaking { accept: String, buf: BytesMut },
    Open,
}

struct Conn {
    stream: TcpStream,
    /// The TLS session of a `wss://` connection: `wbuf` holds plaintext, which is handed to it
    /// and leaves as records.
    tls: Option<Box<ClientConnection>>,
    state: State,
    kind: Kind,
    index: u64,
    started: Instant,
    /// Tail of an incomplete frame (empty almost always).
    pending: Vec<u8>,
    /// A fragmented message being assembled, and its opcode.
    frag: Vec<u8>,
    frag_op: Option<OpCode>,
    /// The fragmented message is compressed (permessage-deflate).
    frag_compressed: bool,
    wbuf: Vec<u8>,
    wpos: usize,
    dirty: bool,
    /// Registered for WRITABLE: while connecting, and while a partial write waits for room.
    /// Not otherwise, because every ACK that frees send buffer would raise an event.
    wants_write: bool,
    /// Not read any more (`slow` subscribers): the kernel's buffers fill and the server sees it.
    paused: bool,
}

impl Conn {
    /// Writes what `wbuf` holds: with one `write` on plain TCP, or through the TLS session,
    /// whose records (handshake messages too) leave with as many writes as the socket takes.
    /// Returns whether bytes still wait for room in the socket.
    fn write_out(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            self.wpos += self.stream.write(&self.wbuf[self.wpos..])?;
            return Ok(self.written());
        };
        if self.wpos < self.wbuf.len() {
            // Before the handshake ends rustls holds the plaintext (up to its buffer limit).
            self.wpos += tls.writer().write(&self.wbuf[self.wpos..])?;
        }
        while tls.wants_write() {
            match tls.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.written();
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.written())
    }

    /// Forgets the part of `wbuf` already written; returns whether any is left.
    fn written(&mut self) -> bool {
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        !self.wbuf.is_empty()
    }
}

/// How a thread is tied to the rest of its process: the run's clock, what the threads share,
/// its index, and the channel to the monitor.
pub struct Link {
    pub clock: Clock,
    pub shared: Arc<Shared>,
    pub source: usize,
    pub tx: Sender<Report>,
}

/// One thread's connections and measurements; what a driver acts through.
pub struct Net {
    registry: Registry,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    ended: Vec<Ended>,
    /// Paused connections resumed this turn: read them, since no new edge will announce data
    /// that arrived while they were paused.
    resumed: Vec<usize>,
    target: Arc<Target>,
    // Ramp of connects.
    queue: VecDeque<(u64, Kind)>,
    connecting: usize,
    max_pending: usize,
    ramp: f64,
    ramp_start: Option<Instant>,
    ramp_issued: u64,
    last_sweep: Instant,
    // Measurements.
    pub stats: Stats,
    /// Latency recorded this second; folded into `stats.latency` at each sample.
    interval: Hist,
    open: u64,
    /// Counters as of the last sample; samples carry the difference.
    sampled: Counters,
    pub rng: XorShift,
    pub clock: Clock,
    /// When the current loop turn began (after poll returned).
    pub now: Instant,
    /// Inflates the compressed messages of every connection of this thread (permessage-deflate,
    /// no context takeover, so one is enough).
    pub inflater: Inflater,
    pub shared: Arc<Shared>,
    /// This thread's index across the run.
    pub source: usize,
    tx: Sender<Report>,
}

/// What a scenario does; the reactor calls it, it acts through `Net`.
pub trait Driver {
    /// Phase 0 begins: typically queue this thread's connections with `Net::open`.
    fn start(&mut self, net: &mut Net);
    /// The monitor opened `phase` (every thread reported the previous one reached).
    fn on_phase(&mut self, net: &mut Net, phase: u32);
    /// A connection completed its upgrade (or, for `Kind::Raw`, its TCP connect).
    fn on_open(&mut self, net: &mut Net, id: usize);
    /// A whole data message arrived; `at` is when its bytes were read.
    fn on_message(&mut self, net: &mut Net, id: usize, text: bool, payload: &[u8], at: Instant);
    /// Bytes for a `Kind::Raw` connection.
    fn on_raw(&mut self, _net: &mut Net, _id: usize, _data: &[u8], _at: Instant) {}
    /// A connection ended or failed to open.
    fn on_end(&mut self, net: &mut Net, end: &Ended);
    /// Timed work, once per loop turn; returns when it next needs to run.
    fn on_turn(&mut self, net: &mut Net) -> Option<Instant>;
    /// The loop ends once this is true.
    fn finished(&self) -> bool;
    /// Last accounting into `net.stats` before they are reported.
    fn finish(&mut self, _net: &mut Net) {}
}

impl Net {
    pub fn new(registry: Registry, target: Arc<Target>, ramp: f64, max_pending: usize, link: Link) -> Net {
        let Link { clock, shared, source, tx } = link;
        Net {
            registry,
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            ended: Vec::new(),
            resumed: Vec::new(),
            target,
            queue: VecDeque::new(),
            connecting: 0,
            max_pending: max_pending.max(1),
            ramp,
            ramp_start: None,
            ramp_issued: 0,
            last_sweep: Instant::now(),
            stats: Stats::default(),
            interval: Hist::default(),
            open: 0,
            sampled: Counters::default(),
            rng: XorShift::new(0x9E37_79B9_7F4A_7C15 ^ (source as u64 + 1).wrapping_mul(0x1234_5678_9ABC)),
            clock,
            now: Instant::now(),
            inflater: Inflater::new(),
            shared,
            source,
            tx,
        }
    }

    /// Queues connection `index` to be opened when the ramp and the pending cap allow.
    pub fn open(&mut self, index: u64, kind: Kind) {
        self.queue.push_back((index, kind));
    }

    /// Drops the connections queued and not yet started; returns how many.
    pub fn cancel_queued(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }

    /// Connections queued or connecting.
    pub fn opening(&self) -> usize {
        self.queue.len() + self.connecting
    }

    pub fn is_open(&self, id: usize) -> bool {
        matches!(self.conns.get(id), Some(Some(c)) if matches!(c.state, State::Open))
    }

    /// Global index of the connection in slot `id`.
    pub fn index_of(&self, id: usize) -> Option<u64> {
        self.conns.get(id)?.as_ref().map(|c| c.index)
    }

    /// When the connection in slot `id` started connecting.
    pub fn started(&self, id: usize) -> Option<Instant> {
        self.conns.get(id)?.as_ref().map(|c| c.started)
    }

    /// Queues one masked data or control frame. Returns false if the connection is not open.
    pub fn send(&mut self, id: usize, opcode: OpCode, payload: &[u8]) -> bool {
        let key = self.rng.next_u32().to_ne_bytes();
        let Some(c) = self.open_conn(id) else {
            return false;
        };
        push_frame(&mut c.wbuf, opcode, payload, key);
        self.mark_dirty(id);
        true
    }

    /// Queues one masked frame whose payload `write` appends; returns the payload length.
    pub fn send_with(&mut self, id: usize, opcode: OpCode, write: impl FnOnce(&mut Vec<u8>)) -> Option<usize> {
        let key = self.rng.next_u32().to_ne_bytes();
        let c = self.open_conn(id)?;
        let n = push_frame_with(&mut c.wbuf, opcode, key, write);
        self.mark_dirty(id);
        Some(n)
    }

    /// Queues bytes as they are (a `Kind::Raw` connection).
    pub fn send_raw(&mut self, id: usize, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let Some(c) = self.open_conn(id) else {
            return false;
        };
        write(&mut c.wbuf);
        self.mark_dirty(id);
        true
    }

    /// Stops reading a connection: its data stays in the kernel and the server's queue grows.
    pub fn pause(&mut self, id: usize) {
        if let Some(Some(c)) = self.conns.get_mut(id) {
            c.paused = true;
        }
    }

    /// Reads a paused connection again (what arrived meanwhile is read this turn).
    pub fn resume(&mut self, id: usize) {
        if let Some(Some(c)) = self.conns.get_mut(id) {
            if c.paused {
                c.paused = false;
                self.resumed.push(id);
            }
        }
    }

    /// Sends a close frame (1000) and closes the socket. With `abort`, the socket is closed with
    /// SO_LINGER 0 (an RST): the `connect` scenario does this so that its own side never holds
    /// TIME_WAIT ports, which would run out at tens of thousands of connections per second.
    pub fn close(&mut self, id: usize, abort: bool) {
        if let Some(Some(c)) = self.conns.get_mut(id) {
            if matches!(c.state, State::Open) && c.kind == Kind::Ws {
                let key = self.rng.next_u32().to_ne_bytes();
                push_frame(&mut c.wbuf, OpCode::Close, &1000u16.to_be_bytes(), key);
                let _ = c.write_out();
            }
            if abort {
                let _ = SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
            } else {
                let _ = c.stream.shutdown(Shutdown::Write);
            }
        }
        self.end(id, EndReason::Local);
    }

    /// Records a latency sample in microseconds.
    pub fn record(&mut self, us: u64) {
        self.interval.record(us);
    }

    /// Tells the monitor this thread finished `phase`.
    pub fn reached(&mut self, phase: u32) {
        self.reached_with(phase, None, None);
    }

    /// `reached`, with what the coordinator's decision for the next phase needs (see `Report`).
    pub fn reached_with(&mut self, phase: u32, value: Option<u64>, hist: Option<Hist>) {
        let hist = hist.map(Box::new);
        let _ = self.tx.send(Report::Reached { source: self.source, phase, open: self.open, value, hist });
    }

    fn open_conn(&mut self, id: usize) -> Option<&mut Conn> {
        match self.conns.get_mut(id) {
            Some(Some(c)) if matches!(c.state, State::Open) => Some(c),
            _ => None,
        }
    }

    fn mark_dirty(&mut self, id: usize) {
        if let Some(Some(c)) = self.conns.get_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Ends connection `id`: the socket is closed now, the driver hears of it this turn.
    fn end(&mut self, id: usize, reason: EndReason) {
        let Some(slot) = self.conns.get_mut(id) else {
            return;
        };
        // No EPOLL_CTL_DEL: closing the socket (dropping `c`) takes it out of epoll, as no other
        // descriptor refers to it. One syscall fewer per connection in `connect`.
        let Some(c) = slot.take() else {
            return;
        };
        let was_open = matches!(c.state, State::Open);
        if was_open {
            self.open -= 1;
            if reason != EndReason::Local {
                self.stats.counters.closed += 1;
                self.stats.fail(reason.label());
            }
        } else {
            self.connecting -= 1;
            self.stats.counters.failed += 1;
            self.stats.fail(reason.label());
        }
        self.ended.push(Ended { id: Some(id), reason, was_open });
    }

    /// Moves this second's latencies into the totals and reports the second to the monitor.
    fn sample(&mut self, sec: u64) {
        let hist = std::mem::take(&mut self.interval);
        self.stats.latency.add(&hist);
        let delta = self.stats.counters.minus(&self.sampled);
        self.sampled = self.stats.counters;
        let _ = self.tx.send(Report::Sample { source: self.source, sec, open: self.open, delta, hist, cpu_ns: 0 });
    }
}

/// A waker for a thread's poll, made before the thread starts.
pub fn waker(poll: &Poll) -> io::Result<Waker> {
    Waker::new(poll.registry(), WAKER_TOKEN)
}
