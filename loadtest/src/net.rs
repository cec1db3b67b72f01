//! The per-thread mio reactor and its client connections.
//!
//! Owns: `Net` (the connections of one thread in a slab-like `Vec`, their write buffers, the
//! ramp of connects, the thread's counters and histograms) and `Reactor` (poll -> read and
//! dispatch -> timers -> one write per dirty connection -> per-second sample). The scenario logic
//! lives in a `Driver`; `Net` is what a driver acts through (`send`, `open`, `close`, `record`).
//!
//! Cost model, since the generator must be cheaper than what it measures: each thread reads 64 KiB
//! at a time into one buffer and walks every frame in it in place; only the tail of an incomplete
//! frame is copied into the connection's own buffer. Outgoing frames are appended, masked in
//! place, to a per-connection `Vec` that keeps its capacity, and flushed with one `write` per
//! connection per loop turn. An idle connection costs a socket and a few empty `Vec`s.
//! Must not: know any scenario's message format.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::proto::client::{client_request, parse_response, ResponseError};
use fanout::proto::{HttpLimits, OpCode, ProtocolError, Status};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::coord::{Report, Shared};
use crate::plan::AddrPlan;
use crate::stats::{Counters, Hist, Stats};
use crate::util::{Clock, XorShift};
use crate::wire::{push_frame, push_frame_with, scan_frames_after_tail, RawFrame};

/// Bytes read per `read` call, and the size of the thread's receive buffer.
pub const READ_CHUNK: usize = 64 * 1024;

/// Largest frame payload accepted from a server.
const MAX_PAYLOAD: usize = 64 << 20;

/// The token of the thread's waker (other threads and the monitor wake it on a phase change).
pub const WAKER_TOKEN: Token = Token(usize::MAX);

/// Where connections go and what their upgrade request says.
#[derive(Debug, Clone)]
pub struct Target {
    pub addrs: AddrPlan,
    /// `Host` header value (`127.0.0.1:9001`).
    pub host: String,
    /// Request target (`/`, `/ws?x=1`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub handshake_timeout: Duration,
}

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
    state: State,
    kind: Kind,
    index: u64,
    started: Instant,
    /// Tail of an incomplete frame (empty almost always).
    pending: Vec<u8>,
    /// A fragmented message being assembled, and its opcode.
    frag: Vec<u8>,
    frag_op: Option<OpCode>,
    wbuf: Vec<u8>,
    wpos: usize,
    dirty: bool,
    /// Registered for WRITABLE: while connecting, and while a partial write waits for room.
    /// Not otherwise, because every ACK that frees send buffer would raise an event.
    wants_write: bool,
    /// Not read any more (`slow` subscribers): the kernel's buffers fill and the server sees it.
    paused: bool,
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
                let _ = c.stream.write(&c.wbuf[c.wpos..]);
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
        let _ = self.tx.send(Report::Reached { source: self.source, phase, open: self.open });
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

    /// Starts a nonblocking connect for global connection `index`.
    fn connect(&mut self, index: u64, kind: Kind) -> io::Result<usize> {
        let (src, dst) = self.target.addrs.for_conn(index);
        // SOCK_NONBLOCK at creation spares the two fcntl calls of set_nonblocking.
        let socket = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        socket.set_nodelay(true)?;
        if let Some(src) = src {
            // bind() picks the ephemeral port now, before the destination is known, so each
            // source address has one pool of ~28k ports: spreading over --addrs source
            // addresses multiplies it. (IP_BIND_ADDRESS_NO_PORT would defer the choice to
            // connect(); socket2 does not offer it and this crate has no `unsafe`.)
            socket.bind(&src.into())?;
        }
        match socket.connect(&dst.into()) {
            Ok(()) => {}
            // EINPROGRESS: the normal answer of a nonblocking connect.
            Err(e) if e.raw_os_error() == Some(115) || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        let id = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.registry.register(&mut stream, Token(id), Interest::READABLE | Interest::WRITABLE) {
            self.free.push(id);
            return Err(e);
        }
        self.conns[id] = Some(Conn {
            stream,
            state: State::Connecting,
            kind,
            index,
            started: self.now,
            pending: Vec::new(),
            frag: Vec::new(),
            frag_op: None,
            wbuf: Vec::new(),
            wpos: 0,
            dirty: false,
            wants_write: true,
            paused: false,
        });
        self.connecting += 1;
        Ok(id)
    }

    /// Opens queued connections as far as the ramp and the pending cap allow; returns when the
    /// ramp allows the next one if it is what holds them back.
    fn pump_connects(&mut self) -> Option<Instant> {
        if self.queue.is_empty() {
            self.ramp_start = None;
            return None;
        }
        let start = *self.ramp_start.get_or_insert_with(|| {
            self.ramp_issued = 0;
            self.now
        });
        while self.connecting < self.max_pending {
            if self.ramp > 0.0 {
                let due = start + Duration::from_secs_f64(self.ramp_issued as f64 / self.ramp);
                if due > self.now {
                    return Some(due);
                }
            }
            let Some((index, kind)) = self.queue.pop_front() else {
                break;
            };
            self.ramp_issued += 1;
            if let Err(e) = self.connect(index, kind) {
                let reason = EndReason::from_io(&e);
                self.stats.counters.failed += 1;
                self.stats.fail(reason.label());
                self.ended.push(Ended { id: None, reason, was_open: false });
            }
        }
        None
    }

    /// Fails connects and upgrades older than the handshake timeout. Runs every 100 ms while
    /// anything is connecting: a sweep over the slab is cheap next to the connects themselves.
    fn sweep_timeouts(&mut self) {
        if self.connecting == 0 || self.now < self.last_sweep + Duration::from_millis(100) {
            return;
        }
        self.last_sweep = self.now;
        let limit = self.target.handshake_timeout;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(id, c)| {
                let c = c.as_ref()?;
                let waiting = !matches!(c.state, State::Open);
                (waiting && self.now.duration_since(c.started) > limit).then_some(id)
            })
            .collect();
        for id in stale {
            self.end(id, EndReason::Timeout);
        }
    }

    /// The connect of `id` finished (or failed): send the upgrade request.
    fn on_connected(&mut self, id: usize) -> Option<bool> {
        let c = self.conns.get_mut(id)?.as_mut()?;
        if !matches!(c.state, State::Connecting) {
            return Some(false);
        }
        match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.end(id, EndReason::from_io(&e));
                return None;
            }
            Ok(None) => {}
        }
        match c.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Some(false),
            Err(e) => {
                self.end(id, EndReason::from_io(&e));
                return None;
            }
        }
        if c.kind == Kind::Raw {
            c.state = State::Open;
            self.connecting -= 1;
            self.open += 1;
            return Some(true);
        }
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.rng.next_u64().to_ne_bytes());
        nonce[8..].copy_from_slice(&self.rng.next_u64().to_ne_bytes());
        let headers: Vec<(&str, &str)> = self.target.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let (request, accept) = client_request(&self.target.host, &self.target.path, nonce, &[], &headers);
        c.wbuf.extend_from_slice(&request);
        c.state = State::Handshaking { accept, buf: BytesMut::with_capacity(512) };
        self.mark_dirty(id);
        Some(false)
    }

    /// Writes every dirty connection once.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            self.write_now(id);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            // Keep the allocation for the next turn.
            self.dirty = dirty;
        }
    }

    /// Writes connection `id`'s queued bytes with one `write` if it is dirty. Called at the end
    /// of the turn for everyone, and right after a connection's read was dispatched so that a
    /// reply to what was just read (echo's next message) leaves without waiting for the rest of
    /// the turn: its round trip then measures the server, not our batch.
    fn write_now(&mut self, id: usize) {
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        if !c.dirty || matches!(c.state, State::Connecting) {
            return;
        }
        c.dirty = false;
        let result = match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(n) => {
                c.wpos += n;
                if c.wpos == c.wbuf.len() {
                    c.wbuf.clear();
                    c.wpos = 0;
                }
                // A partial write waits for the WRITABLE edge (see `Reactor::event`). The interest
                // set at connect is dropped on the first write after the upgrade, not at connect:
                // `connect` closes right after the 101 and would only pay for the change.
                let waiting = !c.wbuf.is_empty() || !matches!(c.state, State::Open);
                set_write_interest(&self.registry, c, id, waiting)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => set_write_interest(&self.registry, c, id, true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                c.dirty = true;
                self.dirty.push(id);
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.end(id, EndReason::from_io(&e));
        }
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

/// Registers `c` for WRITABLE as well as READABLE, or for READABLE alone, when that changes.
fn set_write_interest(registry: &Registry, c: &mut Conn, id: usize, on: bool) -> io::Result<()> {
    if c.wants_write == on {
        return Ok(());
    }
    let interest = if on { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
    registry.reregister(&mut c.stream, Token(id), interest)?;
    c.wants_write = on;
    Ok(())
}

/// One thread's event loop.
pub struct Reactor<D: Driver> {
    poll: Poll,
    events: Events,
    /// (token, readable, writable) of the events of one poll, kept to reuse its allocation.
    ready: Vec<(usize, bool, bool)>,
    rbuf: Vec<u8>,
    pub net: Net,
    pub driver: D,
}

impl<D: Driver> Reactor<D> {
    pub fn new(poll: Poll, net: Net, driver: D) -> Reactor<D> {
        Reactor {
            poll,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            rbuf: vec![0u8; READ_CHUNK],
            net,
            driver,
        }
    }

    /// Runs until the driver is finished or the run is aborted; returns the thread's stats.
    pub fn run(mut self) -> Stats {
        let mut phase = 0u32;
        self.net.now = Instant::now();
        self.driver.start(&mut self.net);
        let mut sec = self.net.clock.ns_at(self.net.now) / 1_000_000_000;
        loop {
            let now = Instant::now();
            self.net.now = now;
            // Phases opened by the monitor since the last turn.
            let open_phase = self.net.shared.phase();
            while phase < open_phase {
                phase += 1;
                self.driver.on_phase(&mut self.net, phase);
            }
            let ramp_wake = self.net.pump_connects();
            self.net.sweep_timeouts();
            let drv_wake = self.driver.on_turn(&mut self.net);
            self.process_ended();
            self.net.flush();
            self.process_ended();
            let now_sec = self.net.clock.ns_at(self.net.now) / 1_000_000_000;
            if now_sec > sec {
                self.net.sample(sec);
                sec = now_sec;
            }
            if self.driver.finished() || self.net.shared.aborted() {
                break;
            }
            // Sleep until the next thing due: a send, a connect, a sweep, the next second.
            let next_sec = self.net.clock.instant_at((sec + 1) * 1_000_000_000);
            let mut wake = next_sec;
            for t in [ramp_wake, drv_wake].into_iter().flatten() {
                wake = wake.min(t);
            }
            if self.net.connecting > 0 {
                wake = wake.min(self.net.now + Duration::from_millis(100));
            }
            if ramp_wake.is_none() && !self.net.queue.is_empty() && self.net.connecting < self.net.max_pending {
                // Queued this turn, after the pump ran, and nothing holds them back.
                wake = wake.min(self.net.now);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("fanout-load: poll: {e}");
                    break;
                }
            }
            self.net.now = Instant::now();
            let mut ready = std::mem::take(&mut self.ready);
            ready.extend(self.events.iter().filter(|e| e.token() != WAKER_TOKEN).map(|e| {
                let readable = e.is_readable() || e.is_read_closed() || e.is_error();
                (e.token().0, readable, e.is_writable() || e.is_error())
            }));
            for &(id, readable, writable) in &ready {
                self.event(id, readable, writable);
            }
            ready.clear();
            self.ready = ready;
            for id in std::mem::take(&mut self.net.resumed) {
                self.read(id);
                self.process_ended();
            }
        }
        self.driver.finish(&mut self.net);
        self.net.sample(sec);
        // Close what is left (closing a socket also takes it out of epoll); the server sees EOF.
        self.net.conns.clear();
        std::mem::take(&mut self.net.stats)
    }

    fn event(&mut self, id: usize, readable: bool, writable: bool) {
        let state_connecting = matches!(self.net.conns.get(id), Some(Some(Conn { state: State::Connecting, .. })));
        if state_connecting {
            match self.net.on_connected(id) {
                Some(true) => self.driver.on_open(&mut self.net, id),
                Some(false) => {}
                None => {
                    self.process_ended();
                    return;
                }
            }
        }
        if writable {
            if let Some(Some(c)) = self.net.conns.get(id) {
                if c.wpos < c.wbuf.len() {
                    self.net.mark_dirty(id);
                }
            }
        }
        if readable {
            self.read(id);
            self.net.write_now(id);
        }
        self.process_ended();
    }

    /// Reads until the socket is drained: a read shorter than the buffer means it was empty,
    /// and new data raises a new edge, so the extra read that would return WouldBlock is skipped.
    fn read(&mut self, id: usize) {
        loop {
            let Some(Some(c)) = self.net.conns.get_mut(id) else {
                return;
            };
            if c.paused || matches!(c.state, State::Connecting) {
                return;
            }
            match c.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.net.end(id, EndReason::Eof);
                    return;
                }
                Ok(n) => {
                    let at = Instant::now();
                    self.data(id, n, at);
                    if n < self.rbuf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.net.end(id, EndReason::from_io(&e));
                    return;
                }
            }
        }
    }

    /// `n` fresh bytes of connection `id` are in `self.rbuf`.
    fn data(&mut self, id: usize, n: usize, at: Instant) {
        let Reactor { net, driver, rbuf, .. } = self;
        let Some(Some(c)) = net.conns.get_mut(id) else {
            return;
        };
        match &mut c.state {
            State::Connecting => {}
            State::Handshaking { accept, buf } => {
                buf.extend_from_slice(&rbuf[..n]);
                match parse_response(buf, accept, &HttpLimits::default()) {
                    Ok(Status::Partial) => {}
                    Ok(Status::Complete(_)) => {
                        // Frames that came with the 101 are walked once the driver knows of it.
                        let early = std::mem::take(buf);
                        c.state = State::Open;
                        net.connecting -= 1;
                        net.open += 1;
                        net.stats.counters.opened += 1;
                        driver.on_open(net, id);
                        if net.is_open(id) && !early.is_empty() {
                            Self::frames(net, driver, id, &early, at);
                        }
                    }
                    Err(ResponseError::UnexpectedStatus(s)) => net.end(id, EndReason::Status(s)),
                    Err(_) => net.end(id, EndReason::BadHandshake),
                }
            }
            State::Open if c.kind == Kind::Raw => driver.on_raw(net, id, &rbuf[..n], at),
            State::Open => Self::frames(net, driver, id, &rbuf[..n], at),
        }
    }

    /// Walks the frames of `fresh` after the connection's incomplete-frame tail, in place.
    fn frames(net: &mut Net, driver: &mut D, id: usize, fresh: &[u8], at: Instant) {
        let Some(Some(c)) = net.conns.get_mut(id) else {
            return;
        };
        let mut tail = std::mem::take(&mut c.pending);
        match scan_frames_after_tail(&mut tail, fresh, MAX_PAYLOAD, |f| on_frame(net, driver, id, f, at)) {
            Ok(()) => {
                if let Some(Some(c)) = net.conns.get_mut(id) {
                    c.pending = tail;
                }
            }
            Err(e) => net.end(id, EndReason::Protocol(e)),
        }
    }

    /// Calls the driver for connections that ended, then frees their slots.
    fn process_ended(&mut self) {
        while !self.net.ended.is_empty() {
            let ended = std::mem::take(&mut self.net.ended);
            for e in &ended {
                self.driver.on_end(&mut self.net, e);
                if let Some(id) = e.id {
                    self.net.free.push(id);
                }
            }
        }
    }
}

/// One frame of connection `id`: data messages go to the driver, pings are answered, a close
/// frame is answered and ends the connection. Returns whether the connection is still open.
fn on_frame<D: Driver>(net: &mut Net, driver: &mut D, id: usize, f: RawFrame<'_>, at: Instant) -> bool {
    match f.opcode {
        OpCode::Text | OpCode::Binary if f.fin => driver.on_message(net, id, f.opcode == OpCode::Text, f.payload, at),
        OpCode::Text | OpCode::Binary => {
            if let Some(Some(c)) = net.conns.get_mut(id) {
                c.frag.clear();
                c.frag.extend_from_slice(f.payload);
                c.frag_op = Some(f.opcode);
            }
        }
        OpCode::Continuation => {
            let Some(Some(c)) = net.conns.get_mut(id) else {
                return false;
            };
            c.frag.extend_from_slice(f.payload);
            if f.fin {
                let text = c.frag_op.take() == Some(OpCode::Text);
                let whole = std::mem::take(&mut c.frag);
                driver.on_message(net, id, text, &whole, at);
                if let Some(Some(c)) = net.conns.get_mut(id) {
                    c.frag = whole;
                    c.frag.clear();
                }
            }
        }
        OpCode::Ping => {
            net.send(id, OpCode::Pong, f.payload);
        }
        OpCode::Pong => {}
        OpCode::Close => {
            let code = match f.payload {
                [a, b, ..] => u16::from_be_bytes([*a, *b]),
                _ => 1005,
            };
            if let Some(Some(c)) = net.conns.get_mut(id) {
                // Answer the close (§5.5.1) before the socket goes.
                let key = net.rng.next_u32().to_ne_bytes();
                let echo = if code == 1005 { vec![] } else { code.to_be_bytes().to_vec() };
                push_frame(&mut c.wbuf, OpCode::Close, &echo, key);
                let _ = c.stream.write(&c.wbuf[c.wpos..]);
            }
            net.end(id, EndReason::CloseFrame(code));
        }
    }
    net.is_open(id)
}

/// A waker for a thread's poll, made before the thread starts.
pub fn waker(poll: &Poll) -> io::Result<Waker> {
    Waker::new(poll.registry(), WAKER_TOKEN)
}
