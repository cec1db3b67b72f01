//! The event loop: one `mio::Poll`, its listener and its connections, driven by readiness.
//!
//! Owns: `Worker` (Poll + Slab<Connection> + listener + Waker), the `Service` trait the loop calls
//! (server.rs adapts the public `Handler` to it), and `Io`, through which a callback asks for
//! sends and closes. One turn of the loop is:
//! poll -> accept -> read and dispatch -> apply commands -> expire timers -> flush dirty.
//!
//! Invariants:
//! - Reads go into the worker's buffer; complete frames leave it as `Bytes` views; only an
//!   incomplete frame's tail moves into the connection's own buffer, which is released once
//!   empty. Writes are queued and flushed once per turn, one `writev` per connection.
//! - Callbacks never touch the slab: they push commands into `Io`, applied right after the
//!   callback returns, so the session can be borrowed from the slab during the callback.
//! - A connection leaves the slab on every path (EOF, error, timeout, close), and `on_close` runs
//!   exactly once for every connection that reached `Open`.
//! - Knows readiness and bytes; asks `proto` what the bytes mean. Never uses server or gateway.

mod bus;
mod connection;
mod listener;
mod read_buf;
mod timer;
mod token;
mod write_queue;

use std::io::{self, Read};
use std::mem;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::config::{Config, SlowConsumerPolicy};
use crate::metrics::WorkerMetrics;
use crate::proto::close::{encode_close_frame, ABNORMAL, GOING_AWAY, NO_STATUS, POLICY_VIOLATION};
use crate::proto::frame::{
    decode_header, encode_frame, encode_header, OpCode, Role, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};
use crate::proto::handshake::{accept_response, parse_request};
use crate::proto::http::CONTINUE_RESPONSE;
use crate::proto::{
    decode_frame, Event, Frame, FrameRules, HttpLimits, Parsed, ProtocolError, Request, RequestStatus, Response,
    Status, Upgrade,
};
use crate::pubsub::{Batch, Topics};
pub(crate) use bus::Bus;
use bus::Envelope;
use connection::{Connection, Phase};
use read_buf::ReadBuf;
use timer::{Tick, Timers};
pub use token::ConnId;
use token::{LISTENER, WAKER};

/// Spare room wanted before each read; less than this and a fresh block is allocated.
const MIN_READ: usize = 4 * 1024;
/// Size of a fresh read block.
const READ_BLOCK: usize = 64 * 1024;
/// A partial tail at least this long is handed to the connection with its block instead of
/// being copied out (a large frame in progress keeps reading into its own buffer).
const ADOPT_LIMIT: usize = 4 * 1024;
/// Linux errno values for "too many open files" (system-wide, per process).
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
/// Reads per readiness event before the connection yields to the others (1 MiB at 64 KiB).
const MAX_READS_PER_TURN: usize = 16;
/// Payloads at least this long are queued as header + shared payload instead of being copied
/// into one buffer with their header.
const SHARE_THRESHOLD: usize = 16 * 1024;

/// What the loop calls. Implemented by server.rs around the application's `Handler`.
pub(crate) trait Service: 'static {
    type Session;
    /// A valid upgrade arrived; return the session or the response that refuses it.
    fn open(
        &mut self,
        io: &mut Io,
        id: ConnId,
        upgrade: &Upgrade,
        peer: SocketAddr,
        protocol: Option<&str>,
    ) -> Result<Self::Session, Response>;
    /// A whole message: text (validated UTF-8) or binary.
    fn message(&mut self, io: &mut Io, id: ConnId, session: &mut Self::Session, text: bool, payload: Bytes);
    /// The connection left the open state (close frame either way, error, EOF, timeout).
    fn close(&mut self, io: &mut Io, id: ConnId, session: Self::Session, code: u16, reason: &str);
    /// A plain HTTP request on the WebSocket port.
    fn request(&mut self, io: &mut Io, request: &Request, peer: SocketAddr) -> Response;
}

pub(crate) enum Command {
    /// Queue `head` then `tail` (often empty) on an open connection.
    Send { id: ConnId, head: Bytes, tail: Bytes },
    /// Start the close handshake.
    Close { id: ConnId, code: u16, reason: String },
}

/// What a callback asks of the loop. Sends and closes are commands, applied when the callback
/// returns, in order. Subscribes, publishes and broadcasts go to the bus at once, so that a
/// caller holding its own lock (the gateway's history) orders them across workers.
pub(crate) struct Io {
    commands: Vec<Command>,
    bus: Arc<Bus>,
    worker: usize,
    shared: Arc<Shared>,
}

impl Io {
    /// Queues a data frame (text or binary) on an open connection.
    pub(crate) fn send_data(&mut self, id: ConnId, text: bool, payload: Bytes) {
        let (head, tail) = encode_data(text, payload);
        self.commands.push(Command::Send { id, head, tail });
    }

    /// Queues a ping; payloads longer than a control frame allows are cut to 125 bytes.
    pub(crate) fn ping(&mut self, id: ConnId, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        self.commands.push(Command::Send { id, head: encode_frame(OpCode::Ping, payload), tail: Bytes::new() });
    }

    pub(crate) fn subscribe(&mut self, id: ConnId, topic: &str) {
        self.bus.subscribe(self.worker, id, topic);
    }

    pub(crate) fn unsubscribe(&mut self, id: ConnId, topic: &str) {
        self.bus.unsubscribe(self.worker, id, topic);
    }

    /// Encodes the frame once and hands it to every worker with subscribers of `topic`.
    pub(crate) fn publish(&mut self, topic: &str, text: bool, payload: Bytes) {
        let (head, tail) = encode_data(text, payload);
        self.bus.publish(self.worker, topic, head, tail);
        self.shared.metrics.publishes.add(1);
    }

    pub(crate) fn broadcast(&mut self, text: bool, payload: Bytes) {
        let (head, tail) = encode_data(text, payload);
        self.bus.broadcast(self.worker, head, tail);
        self.shared.metrics.publishes.add(1);
    }

    /// True once the server has begun shutting down.
    pub(crate) fn draining(&self) -> bool {
        self.bus.draining.load(Ordering::Relaxed)
    }

    /// The `n` topics with the most subscribers, over all workers.
    pub(crate) fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        self.bus.top_topics(n)
    }

    /// Each worker's counters, in worker order.
    pub(crate) fn worker_stats(&self) -> Vec<crate::metrics::Snapshot> {
        self.bus.worker_stats()
    }

    /// Server-wide figures: (open WebSocket connections, topics with subscribers, envelopes
    /// dropped by full inboxes).
    pub(crate) fn server_figures(&self) -> (u64, u64, u64) {
        (self.bus.open_count() as u64, self.bus.topic_count() as u64, self.bus.inbox_overflows.load(Ordering::Relaxed))
    }

    pub(crate) fn worker_index(&self) -> usize {
        self.worker
    }

    pub(crate) fn close(&mut self, id: ConnId, code: u16, reason: &str) {
        self.commands.push(Command::Close { id, code, reason: reason.to_owned() });
    }
}

/// A data frame as `head` + `tail`. Small payloads are copied behind their header into one
/// buffer (one iovec, one allocation; `tail` empty); large ones keep their own memory.
fn encode_data(text: bool, payload: Bytes) -> (Bytes, Bytes) {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    if payload.len() < SHARE_THRESHOLD {
        return (encode_frame(opcode, &payload), Bytes::new());
    }
    let (header, n) = data_header(text, payload.len());
    (Bytes::copy_from_slice(&header[..n]), payload)
}

/// The header of a final, unmasked text or binary frame, and its length.
fn data_header(text: bool, payload_len: usize) -> ([u8; MAX_HEADER_LEN], usize) {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, None, payload_len as u64);
    (header, n)
}

/// True when queueing `len` more bytes would pass the cap. A frame is always accepted into an
/// empty queue, so the bound is the cap plus one message.
fn over_cap<S>(conn: &Connection<S>, len: usize, max_queued: usize) -> bool {
    !conn.wq.is_empty() && conn.wq.queued_bytes() + len > max_queued
}

/// State a worker shares with the handle that started it.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) metrics: WorkerMetrics,
}

/// Settings the loop reads on every event, derived once from `Config`.
struct Limits {
    frame_rules: FrameRules,
    http: HttpLimits,
    max_message: usize,
    max_queued: usize,
    slow_consumer: SlowConsumerPolicy,
    handshake_ticks: Tick,
    /// Silence before a keep-alive ping; 0 disables idle handling.
    ping_ticks: Tick,
    /// Further silence after the ping before the connection is closed.
    pong_ticks: Tick,
    close_ticks: Tick,
    drain_ticks: Tick,
    max_connections: usize,
    max_connections_per_ip: usize,
    /// This worker's share of the server's `max_pending_handshakes`.
    max_pending_handshakes: usize,
    subprotocols: Vec<String>,
}

impl Limits {
    fn new(config: &Config) -> Self {
        let idle = Timers::ticks(config.idle_timeout);
        let ping = idle / 2;
        Limits {
            frame_rules: FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: config.max_frame_size },
            http: HttpLimits {
                max_request_bytes: config.max_request_bytes,
                max_headers: config.max_headers,
                max_body_bytes: config.max_body_bytes,
            },
            max_message: config.max_message_size,
            max_queued: config.max_queued_bytes,
            slow_consumer: config.slow_consumer,
            handshake_ticks: Timers::ticks(config.handshake_timeout).max(1),
            ping_ticks: if idle == 0 { 0 } else { ping.max(1) },
            pong_ticks: (idle - ping).max(1),
            close_ticks: Timers::ticks(config.close_timeout).max(1),
            drain_ticks: Timers::ticks(config.drain_window).max(1),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            max_pending_handshakes: config.max_pending_handshakes.div_ceil(config.workers.max(1)),
            subprotocols: config.subprotocols.clone(),
        }
    }
}

/// One running worker thread.
pub(crate) struct WorkerThread {
    pub(crate) shared: Arc<Shared>,
    pub(crate) thread: JoinHandle<io::Result<()>>,
}

/// The running workers of one server.
pub(crate) struct Running {
    pub(crate) local_addr: SocketAddr,
    pub(crate) workers: Vec<WorkerThread>,
    pub(crate) bus: Arc<Bus>,
}

/// Binds one SO_REUSEPORT listener per worker here (so errors and the chosen port are known at
/// once; with port 0 the first bind picks the port and the others join it) and runs each
/// worker on its own thread; `make` builds each worker's service inside its thread.
pub(crate) fn spawn<S, F>(config: &Config, make: F) -> io::Result<Running>
where
    S: Service,
    F: Fn() -> S + Send + Sync + 'static,
{
    let workers = config.workers.max(1);
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = config.listen;
    for _ in 0..workers {
        let listener = listener::bind(addr, config.listen_backlog)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    let mut polls = Vec::with_capacity(workers);
    let mut wakers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new()?;
        wakers.push(Waker::new(poll.registry(), WAKER)?);
        polls.push(poll);
    }
    let shared: Vec<Arc<Shared>> = (0..workers).map(|_| Arc::new(Shared::default())).collect();
    let bus = Arc::new(Bus::new(wakers, shared.clone()));
    let make = Arc::new(make);
    let mut threads = Vec::with_capacity(workers);
    for (index, ((poll, listener), shared)) in polls.into_iter().zip(listeners).zip(shared).enumerate() {
        let limits = Limits::new(config);
        let (bus, make, thread_shared) = (bus.clone(), make.clone(), shared.clone());
        let thread = std::thread::Builder::new().name(format!("fanout-worker-{index}")).spawn(move || {
            let mut worker = Worker::new(poll, listener, make(), limits, thread_shared, bus, index)?;
            worker.run()
        })?;
        threads.push(WorkerThread { shared, thread });
    }
    Ok(Running { local_addr: addr, workers: threads, bus })
}

pub(crate) struct Worker<S: Service> {
    poll: Poll,
    listener: Option<mio::net::TcpListener>,
    conns: Slab<Connection<S::Session>>,
    topics: Topics,
    broadcast: Batch,
    /// Connections found over their queue cap while delivering, closed once delivery is done.
    slow: Vec<ConnId>,
    service: S,
    io: Io,
    rbuf: ReadBuf,
    dirty: Vec<u32>,
    /// Connections that used up their read budget and have bytes left in the kernel.
    read_again: Vec<ConnId>,
    timers: Timers,
    due: Vec<(ConnId, Tick)>,
    now: Tick,
    next_generation: u32,
    /// Accepting failed for lack of file descriptors; retried on the next tick.
    accept_paused: bool,
    stopping: bool,
    drain: Option<Drain>,
    /// Connections in the handshake phase (bounded by `max_pending_handshakes` per worker).
    handshaking: usize,
    /// Peer addresses of open connections, kept only when a per-address limit is set.
    peer_ips: std::collections::HashMap<u32, std::net::IpAddr>,
    limits: Limits,
    shared: Arc<Shared>,
    bus: Arc<Bus>,
    index: usize,
    /// Envelopes taken from the inbox, kept to reuse the allocation.
    envelopes: Vec<Envelope>,
}

impl<S: Service> Worker<S> {
    fn new(
        poll: Poll,
        mut listener: mio::net::TcpListener,
        service: S,
        limits: Limits,
        shared: Arc<Shared>,
        bus: Arc<Bus>,
        index: usize,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let timers = Timers::new(Instant::now());
        Ok(Worker {
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            topics: Topics::new(),
            broadcast: Batch::default(),
            slow: Vec::new(),
            service,
            io: Io { commands: Vec::new(), bus: bus.clone(), worker: index, shared: shared.clone() },
            rbuf: ReadBuf::default(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            now: timers.tick_at(Instant::now()),
            timers,
            due: Vec::new(),
            next_generation: 0,
            accept_paused: false,
            stopping: false,
            drain: None,
            handshaking: 0,
            peer_ips: std::collections::HashMap::new(),
            limits,
            shared,
            bus,
            index,
            envelopes: Vec::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.turn(&mut events)?;
            if let Some(drain) = &self.drain {
                if self.conns.is_empty() || self.now >= drain.end {
                    return Ok(());
                }
            }
        }
    }

    /// One pass of the loop; returns after the dirty connections are flushed.
    fn turn(&mut self, events: &mut Events) -> io::Result<()> {
        let mut timeout = self.timers.poll_timeout(Instant::now());
        // Envelopes this worker queued for itself after its inbox was drained (a callback run by
        // a timer, a delivery or a flush) have no waker to announce them: don't sleep on them.
        if !self.read_again.is_empty() || self.bus.has_pending(self.index) {
            timeout = Some(std::time::Duration::ZERO);
        } else if self.accept_paused || self.stopping {
            timeout = Some(timeout.unwrap_or(timer::TICK).min(timer::TICK));
        }
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let woke = Instant::now();
        self.now = self.timers.tick_at(woke);
        for id in mem::take(&mut self.read_again) {
            self.on_readable(id, true);
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                WAKER => {}
                token => {
                    let id = ConnId::from_token(token);
                    if event.is_writable() {
                        self.flush(id);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.on_readable(id, event.is_read_closed() || event.is_error());
                    }
                }
            }
        }
        if self.accept_paused {
            self.accept_paused = false;
            self.accept();
        }
        if !self.stopping && self.bus.draining.load(Ordering::Acquire) {
            self.begin_stop();
        } else if self.stopping {
            self.pace_drain();
        }
        self.drain_inbox();
        self.expire_timers();
        self.deliver_published(None);
        self.flush_dirty();
        // Time from wake-up to the end of the flush: what a new event waits at worst.
        let busy = woke.elapsed().as_micros() as u64;
        let metrics = &self.shared.metrics;
        metrics.loop_turns.add(1);
        metrics.loop_busy_us.add(busy);
        metrics.loop_lag_us.sub(metrics.loop_lag_us.get());
        metrics.loop_lag_us.add(busy);
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _peer)) => {
                    self.shared.metrics.accepted.add(1);
                    if self.handshaking >= self.limits.max_pending_handshakes {
                        // Dropped unread: a flood of half-open handshakes must not hold fds.
                        self.shared.metrics.rejected_pending_handshakes.add(1);
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let Ok(slot) = u32::try_from(entry.key()) else {
                        continue;
                    };
                    self.next_generation =
                        if self.next_generation >= ConnId::MAX_GENERATION { 1 } else { self.next_generation + 1 };
                    let id = ConnId { slot, generation: self.next_generation };
                    if let Err(e) = self.poll.registry().register(&mut stream, id.token(), Interest::READABLE) {
                        log::warn!("register accepted socket: {e}");
                        continue;
                    }
                    entry.insert(Connection::new(stream, id.generation));
                    self.handshaking += 1;
                    self.shared.metrics.connections.add(1);
                    let at = self.now + self.limits.handshake_ticks;
                    self.set_deadline(id, at);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(ENFILE | EMFILE)) => {
                    // EMFILE / ENFILE: the pending connection stays in the backlog; the listener
                    // is edge-triggered, so retry on a timer rather than wait for a new SYN.
                    log::warn!("accept: {e}; retrying shortly");
                    self.accept_paused = true;
                    return;
                }
                Err(e) => log::debug!("accept: {e}"),
            }
        }
    }

    /// Reads until the socket is drained (or the per-turn budget runs out) and dispatches what
    /// arrived. Without `until_eof`, a read shorter than the room offered ends it: the socket
    /// was empty at that moment and, edge-triggered, new bytes raise a new event, so the read
    /// that would only return WouldBlock is skipped (one syscall per message in a ping-pong). A
    /// FIN or an error already reported by the event sets `until_eof`, because the bytes before
    /// it may fit in one short read and no later edge would announce the EOF.
    fn on_readable(&mut self, id: ConnId, until_eof: bool) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase == Phase::Open && self.limits.ping_ticks > 0 {
            conn.ping_sent = false;
            conn.deadline = self.now + self.limits.ping_ticks;
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
                    self.shared.metrics.bytes_in.add(n as u64);
                    self.process(id, &mut buf);
                    reads += 1;
                    if n < offered && !until_eof {
                        break;
                    }
                    if reads == MAX_READS_PER_TURN {
                        self.read_again.push(id);
                        break;
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
        // it still costs one writev per connection. Publishes keep their end-of-turn batch.
        if let Some(conn) = get(&mut self.conns, id) {
            if conn.dirty {
                conn.dirty = false;
                self.flush(id);
            }
        }
    }

    /// Puts the read buffer back: unconsumed bytes belong to the connection, the rest of the
    /// block to whoever owned it.
    fn stash(&mut self, id: ConnId, mut buf: ReadBuf, own: bool) {
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

    /// Hands the received bytes to proto, phase by phase, and acts on what comes back.
    fn process(&mut self, id: ConnId, buf: &mut ReadBuf) {
        let mut data = buf.take_filled();
        loop {
            let Some(conn) = get(&mut self.conns, id) else {
                data.clear();
                break;
            };
            match conn.phase {
                Phase::Handshake => match parse_request(&mut data, &self.limits.http) {
                    Ok(RequestStatus::Partial { expects_continue }) => {
                        if !conn.continue_sent && expects_continue {
                            conn.continue_sent = true;
                            conn.wq.push(Bytes::from_static(CONTINUE_RESPONSE), &self.shared.metrics.queued_bytes);
                            self.mark_dirty(id);
                        }
                        break;
                    }
                    Ok(RequestStatus::Complete(Parsed::Upgrade(upgrade))) => self.upgrade(id, upgrade),
                    Ok(RequestStatus::Complete(Parsed::Http(request))) => {
                        if !self.http_request(id, request) {
                            data.clear();
                        }
                    }
                    Err(e) => {
                        log::debug!("handshake refused: {e}");
                        self.shared.metrics.handshake_failures.add(1);
                        self.shared.metrics.handshake_bad_requests.add(1);
                        self.finish_with(id, e.response());
                        data.clear();
                    }
                },
                Phase::Open | Phase::CloseSent => {
                    match decode_frame(&mut data, &self.limits.frame_rules) {
                        Ok(Status::Partial) => {
                            // §8.1 fail fast: check the text already here of an incomplete frame.
                            let rules = &self.limits.frame_rules;
                            if let Ok(Status::Complete(h)) = decode_header(&data, rules.role, rules.allowed_rsv) {
                                let payload = &data[h.header_len..];
                                if !payload.is_empty() {
                                    if let Err(e) = conn.assembler.check_partial_frame(&h, payload) {
                                        self.fail(id, e);
                                        data.clear();
                                    }
                                }
                            }
                            break;
                        }
                        Ok(Status::Complete(frame)) => self.on_frame(id, frame),
                        Err(e) => {
                            self.fail(id, e);
                            data.clear();
                        }
                    }
                }
                Phase::Lingering | Phase::Draining => {
                    data.clear();
                    break;
                }
            }
        }
        buf.give_back(data);
    }

    fn upgrade(&mut self, id: ConnId, upgrade: Upgrade) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        let Ok(peer) = conn.stream.peer_addr() else {
            self.remove(id);
            return;
        };
        let refusal = if self.stopping {
            Some((&self.shared.metrics.rejected_draining, "server shutting down"))
        } else if !self.bus.admit(peer.ip(), self.limits.max_connections, self.limits.max_connections_per_ip) {
            if self.bus.open_count() >= self.limits.max_connections {
                Some((&self.shared.metrics.rejected_max_connections, "too many connections"))
            } else {
                Some((&self.shared.metrics.rejected_per_ip, "too many connections from this address"))
            }
        } else {
            None
        };
        if let Some((counter, reason)) = refusal {
            counter.add(1);
            self.shared.metrics.handshake_failures.add(1);
            self.finish_with(id, Response::text(503, reason).encode(false));
            return;
        }
        // Admitted: counted in the bus until the connection leaves the open state.
        let protocol = upgrade.select_protocol(&self.limits.subprotocols);
        match self.service.open(&mut self.io, id, &upgrade, peer, protocol) {
            Ok(session) => {
                let response = accept_response(&upgrade.accept, protocol);
                if self.limits.max_connections_per_ip > 0 {
                    self.peer_ips.insert(id.slot, peer.ip());
                }
                self.handshaking = self.handshaking.saturating_sub(1);
                if let Some(conn) = self.conns.get_mut(id.slot as usize) {
                    conn.session = Some(session);
                    conn.phase = Phase::Open;
                    conn.wq.push(response, &self.shared.metrics.queued_bytes);
                }
                self.shared.metrics.handshakes.add(1);
                self.mark_dirty(id);
                let at = if self.limits.ping_ticks > 0 { self.now + self.limits.ping_ticks } else { 0 };
                self.set_deadline(id, at);
            }
            Err(response) => {
                self.bus.release(peer.ip(), self.limits.max_connections_per_ip > 0);
                self.shared.metrics.handshake_failures.add(1);
                self.shared.metrics.rejected_by_application.add(1);
                self.finish_with(id, response.encode(false));
            }
        }
        self.apply_commands();
    }

    /// Answers a plain HTTP request. Returns true when the connection stays open for the next
    /// request (HTTP keep-alive), false when it closes after the response.
    fn http_request(&mut self, id: ConnId, request: Request) -> bool {
        let Some(conn) = get(&mut self.conns, id) else {
            return false;
        };
        let Ok(peer) = conn.stream.peer_addr() else {
            self.remove(id);
            return false;
        };
        self.shared.metrics.http_requests.add(1);
        let response = self.service.request(&mut self.io, &request, peer);
        self.apply_commands();
        let max_queued = self.limits.max_queued;
        let keep_alive = request.keep_alive()
            && get(&mut self.conns, id).is_some_and(|c| c.phase == Phase::Handshake && !over_cap(c, 0, max_queued));
        if !keep_alive {
            self.finish_with(id, response.encode(false));
            return false;
        }
        let Some(conn) = get(&mut self.conns, id) else {
            return false;
        };
        conn.wq.push(response.encode(true), &self.shared.metrics.queued_bytes);
        conn.continue_sent = false;
        self.mark_dirty(id);
        // The next request gets the handshake timeout, which also ends an idle kept-alive
        // connection.
        let at = self.now + self.limits.handshake_ticks;
        self.set_deadline(id, at);
        true
    }

    fn on_frame(&mut self, id: ConnId, frame: Frame) {
        let max_message = self.limits.max_message;
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        let event = match conn.assembler.push(frame, max_message) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => return self.fail(id, e),
        };
        match event {
            Event::Text(payload) => self.deliver(id, true, payload),
            Event::Binary(payload) => self.deliver(id, false, payload),
            Event::Ping(payload) => {
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                // response ... [with] identical Application data".
                // Pongs count against the queue cap like data: a client that pings without
                // reading must not grow our memory.
                self.queue_data(id, encode_frame(OpCode::Pong, &payload), Bytes::new(), false);
            }
            Event::Pong(_) => {}
            Event::Close(close) => {
                // §5.5.1: "If an endpoint receives a Close frame and did not previously send a
                // Close frame, the endpoint MUST send a Close frame in response" (echoing the code).
                let (code, reason) = close.as_ref().map_or((NO_STATUS, ""), |c| (c.code, c.reason_str()));
                self.close_and_linger(id, code, reason);
            }
        }
    }

    fn deliver(&mut self, id: ConnId, text: bool, payload: Bytes) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        // After our close frame, data is read and dropped (§5.5.1: no more data frames).
        let (Phase::Open, Some(session)) = (conn.phase, conn.session.as_mut()) else {
            return;
        };
        self.shared.metrics.messages_in.add(1);
        self.service.message(&mut self.io, id, session, text, payload);
        self.apply_commands();
    }

    /// Fails the connection (§7.1.7): a close frame with the violation's code, then the TCP close.
    fn fail(&mut self, id: ConnId, error: ProtocolError) {
        if get(&mut self.conns, id).is_none() {
            return;
        }
        log::debug!("connection {id}: {error}");
        self.shared.metrics.protocol_errors.add(1);
        self.close_and_linger(id, error.close_code(), error.reason());
    }

    /// Our last word on a connection: a close frame with `code` if it is still open (none if
    /// ours already went out), then the TCP shutdown once it is written; `on_close` sees `code`.
    fn close_and_linger(&mut self, id: ConnId, code: u16, reason: &str) {
        let was_open = get(&mut self.conns, id).is_some_and(|c| c.phase == Phase::Open);
        let frame = if was_open { encode_close_frame(code, reason) } else { Bytes::new() };
        self.finish_with(id, frame);
        if was_open {
            self.leave_open(id, code, reason);
        }
    }

    /// Queues a last response (HTTP or close) and shuts the connection down after it.
    fn finish_with(&mut self, id: ConnId, bytes: Bytes) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        conn.wq.push(bytes, &self.shared.metrics.queued_bytes);
        if conn.phase == Phase::Handshake {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        conn.phase = Phase::Lingering;
        self.mark_dirty(id);
        let at = self.now + self.limits.close_ticks;
        self.set_deadline(id, at);
    }

    /// Starts a server-side close handshake on an open connection.
    fn close_conn(&mut self, id: ConnId, code: u16, reason: &str) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        conn.wq.push(encode_close_frame(code, reason), &self.shared.metrics.queued_bytes);
        conn.phase = Phase::CloseSent;
        self.mark_dirty(id);
        let at = self.now + self.limits.close_ticks;
        self.set_deadline(id, at);
        self.leave_open(id, code, reason);
    }

    /// Runs `on_close` once, when the connection stops being open.
    fn leave_open(&mut self, id: ConnId, code: u16, reason: &str) {
        let Some(session) = get(&mut self.conns, id).and_then(|c| c.session.take()) else {
            return;
        };
        let (bus, index) = (&self.bus, self.index);
        self.topics.leave_all(id.slot, |topic| bus.uncount(index, topic));
        match self.peer_ips.remove(&id.slot) {
            Some(ip) => self.bus.release(ip, true),
            None => self.bus.release_count(),
        }
        self.service.close(&mut self.io, id, session, code, reason);
        self.apply_commands();
    }

    /// The peer closed its side (read returned 0).
    fn peer_closed(&mut self, id: ConnId) {
        // Best effort to deliver a close reply or error response already queued.
        if get(&mut self.conns, id).is_some_and(|c| !c.wq.is_empty()) {
            self.flush(id);
        }
        self.remove(id);
    }

    /// Drops the connection; `on_close` sees 1006 if it was still open.
    fn remove(&mut self, id: ConnId) {
        if get(&mut self.conns, id).is_none() {
            return;
        }
        self.leave_open(id, ABNORMAL, "");
        if get(&mut self.conns, id).is_some() {
            // Dropping the stream closes the descriptor, which also removes it from epoll.
            let conn = self.conns.remove(id.slot as usize);
            if conn.phase == Phase::Handshake {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            self.shared.metrics.queued_bytes.sub(conn.wq.queued_bytes() as u64);
            self.shared.metrics.connections.sub(1);
        }
    }

    fn apply_commands(&mut self) {
        while !self.io.commands.is_empty() {
            let mut batch = mem::take(&mut self.io.commands);
            for command in batch.drain(..) {
                match command {
                    Command::Send { id, head, tail } => self.queue_data(id, head, tail, true),
                    Command::Close { id, code, reason } => self.close_conn(id, code, &reason),
                }
            }
            if self.io.commands.is_empty() {
                self.io.commands = batch; // keep the allocation
            }
        }
    }

    /// Queues a frame (application data or a pong) on an open connection, enforcing the
    /// queue cap: over it, a droppable frame is dropped under the `Drop` policy, and otherwise
    /// the connection is closed as a slow consumer.
    fn queue_data(&mut self, id: ConnId, head: Bytes, tail: Bytes, droppable: bool) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        if over_cap(conn, head.len() + tail.len(), self.limits.max_queued) {
            if droppable && self.limits.slow_consumer == SlowConsumerPolicy::Drop {
                self.shared.metrics.dropped_frames.add(1);
            } else {
                self.slow_consumer(id);
            }
            return;
        }
        conn.wq.push(head, &self.shared.metrics.queued_bytes);
        conn.wq.push(tail, &self.shared.metrics.queued_bytes);
        self.shared.metrics.frames_out.add(1);
        self.mark_dirty(id);
    }

    /// The client reads slower than we send: drop what it has not taken and close with 1008,
    /// so its memory stays bounded whatever it does.
    fn slow_consumer(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        self.shared.metrics.slow_consumers.add(1);
        conn.wq.clear(&self.shared.metrics.queued_bytes);
        self.close_and_linger(id, POLICY_VIOLATION, "slow consumer");
    }

    /// Applies what other workers (and this one's callbacks) sent through the bus, in order.
    fn drain_inbox(&mut self) {
        let mut envelopes = mem::take(&mut self.envelopes);
        self.bus.drain(self.index, &mut envelopes);
        for envelope in envelopes.drain(..) {
            match envelope {
                Envelope::Publish { topic, head, tail } => {
                    let reached = self.topics.publish(&topic, &head, &tail, SHARE_THRESHOLD);
                    self.shared.metrics.deliveries.add(reached as u64);
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
                        self.bus.uncount(self.index, &topic);
                    }
                }
                Envelope::Unsubscribe { id, topic } => {
                    if get(&mut self.conns, id).is_some() && self.topics.unsubscribe(id.slot, &topic) {
                        self.bus.uncount(self.index, &topic);
                    }
                }
            }
        }
        self.envelopes = envelopes;
    }

    /// Hands published batches to their subscribers (one `Bytes` clone each): those of one
    /// topic, or (None) those of every topic and the broadcast batch, at the end of a turn.
    fn deliver_published(&mut self, topic: Option<&str>) {
        let Worker { topics, broadcast, conns, dirty, slow, limits, shared, .. } = self;
        let mut deliver = |slot: u32, conn: &mut Connection<S::Session>, bytes: &Bytes| {
            if conn.phase != Phase::Open {
                return;
            }
            if over_cap(conn, bytes.len(), limits.max_queued) {
                match limits.slow_consumer {
                    SlowConsumerPolicy::Drop => shared.metrics.dropped_frames.add(1),
                    SlowConsumerPolicy::Close => slow.push(ConnId { slot, generation: conn.generation }),
                }
                return;
            }
            conn.wq.push(bytes.clone(), &shared.metrics.queued_bytes);
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

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = get(&mut self.conns, id) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id.slot);
            }
        }
    }

    fn flush_dirty(&mut self) {
        while !self.dirty.is_empty() {
            let mut batch = mem::take(&mut self.dirty);
            for slot in batch.drain(..) {
                let Some(conn) = self.conns.get_mut(slot as usize) else {
                    continue;
                };
                if conn.dirty {
                    conn.dirty = false;
                    let id = ConnId { slot, generation: conn.generation };
                    self.flush(id);
                }
            }
            if self.dirty.is_empty() {
                self.dirty = batch;
            }
        }
    }

    /// Writes what is queued with `writev`; WRITABLE interest only while bytes remain.
    fn flush(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        match conn.wq.write_to(&conn.stream, &self.shared.metrics.queued_bytes) {
            Ok((bytes, calls)) => {
                self.shared.metrics.bytes_out.add(bytes as u64);
                self.shared.metrics.writev_calls.add(u64::from(calls));
            }
            Err(_) => return self.remove(id),
        }
        let pending = !conn.wq.is_empty();
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
            conn.phase = Phase::Draining;
        }
    }

    /// Sets the connection's deadline (0: none). Extending is free; only an earlier deadline
    /// than the one the wheel holds files a new entry.
    fn set_deadline(&mut self, id: ConnId, at: Tick) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        conn.deadline = at;
        if at != 0 && (conn.timer_at == 0 || at < conn.timer_at) {
            conn.timer_at = self.timers.schedule(id, at);
        }
    }

    fn expire_timers(&mut self) {
        let mut due = mem::take(&mut self.due);
        self.timers.expire(self.now, &mut due);
        for (id, at) in due.drain(..) {
            let Some(conn) = get(&mut self.conns, id) else {
                continue;
            };
            if conn.timer_at != at {
                continue; // superseded by an earlier entry
            }
            conn.timer_at = 0;
            if conn.deadline == 0 {
                continue;
            }
            if conn.deadline > self.now {
                conn.timer_at = self.timers.schedule(id, conn.deadline);
                continue;
            }
            self.on_deadline(id);
        }
        self.due = due;
    }

    fn on_deadline(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        match conn.phase {
            Phase::Handshake => {
                self.shared.metrics.handshake_failures.add(1);
                self.shared.metrics.handshake_timeouts.add(1);
                self.finish_with(id, Response::text(408, "handshake timeout").encode(false));
            }
            Phase::Open if !conn.ping_sent => {
                conn.ping_sent = true;
                conn.wq.push(encode_frame(OpCode::Ping, b""), &self.shared.metrics.queued_bytes);
                self.mark_dirty(id);
                let at = self.now + self.limits.pong_ticks;
                self.set_deadline(id, at);
            }
            Phase::Open => {
                self.shared.metrics.idle_timeouts.add(1);
                self.close_conn(id, GOING_AWAY, "idle timeout");
            }
            Phase::CloseSent | Phase::Lingering | Phase::Draining => self.remove(id),
        }
    }

    /// Starts the drain: new upgrades get 503 (plain HTTP is still answered, so health checks
    /// see the drain), and the open connections are closed with 1001 spread evenly over the
    /// first 80% of the drain window, each after whatever was queued for it. The rest of the
    /// window is for the close handshakes; at its end whatever is left is dropped.
    fn begin_stop(&mut self) {
        self.stopping = true;
        let mut open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(slot, c)| ConnId { slot: slot as u32, generation: c.generation })
            .collect();
        open.reverse(); // closed from the back: oldest first
        self.drain = Some(Drain {
            start: self.now,
            total: open.len(),
            pending: open,
            close_ticks: (self.limits.drain_ticks * 4 / 5).max(1),
            end: self.now + self.limits.drain_ticks,
        });
        self.pace_drain();
    }

    /// Closes the share of connections due by now; at the end of the window, drops the rest.
    fn pace_drain(&mut self) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        let elapsed = self.now.saturating_sub(drain.start) + 1;
        let due = if elapsed >= drain.close_ticks {
            drain.total
        } else {
            drain.total * elapsed as usize / drain.close_ticks as usize
        };
        let mut closing = Vec::new();
        while drain.total - drain.pending.len() < due {
            match drain.pending.pop() {
                Some(id) => closing.push(id),
                None => break,
            }
        }
        let finished = self.now >= drain.end;
        for id in closing {
            self.close_conn(id, GOING_AWAY, "server shutting down");
        }
        if finished {
            let ids: Vec<ConnId> =
                self.conns.iter().map(|(slot, c)| ConnId { slot: slot as u32, generation: c.generation }).collect();
            for id in ids {
                self.remove(id);
            }
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
    }
}

/// Progress of a graceful stop.
struct Drain {
    start: Tick,
    total: usize,
    /// Open connections not yet sent their 1001, last to close first.
    pending: Vec<ConnId>,
    /// Ticks over which the closes are spread.
    close_ticks: Tick,
    /// When whatever is left is dropped.
    end: Tick,
}

fn get<S>(conns: &mut Slab<Connection<S>>, id: ConnId) -> Option<&mut Connection<S>> {
    conns.get_mut(id.slot as usize).filter(|c| c.generation == id.generation)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;

    use super::*;
    use crate::proto::client::client_request;
    use crate::proto::frame::encode_masked_frame;

    struct Echo;

    impl Service for Echo {
        type Session = ();
        fn open(&mut self, _: &mut Io, _: ConnId, _: &Upgrade, _: SocketAddr, _: Option<&str>) -> Result<(), Response> {
            Ok(())
        }
        fn message(&mut self, io: &mut Io, id: ConnId, _: &mut (), text: bool, payload: Bytes) {
            io.send_data(id, text, payload);
        }
        fn close(&mut self, _: &mut Io, _: ConnId, _: (), _: u16, _: &str) {}
        fn request(&mut self, _: &mut Io, _: &Request, _: SocketAddr) -> Response {
            Response::new(404)
        }
    }

    struct Harness {
        worker: Worker<Echo>,
        events: Events,
        client: TcpStream,
    }

    impl Harness {
        /// A worker stepped by hand on this thread, and one upgraded client.
        fn new() -> Harness {
            let listener = listener::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
            let addr = listener.local_addr().unwrap();
            let limits = Limits::new(&Config::default());
            let poll = Poll::new().unwrap();
            let shared: Arc<Shared> = Arc::default();
            let waker = Waker::new(poll.registry(), WAKER).unwrap();
            let bus = Arc::new(Bus::new(vec![waker], vec![shared.clone()]));
            let worker = Worker::new(poll, listener, Echo, limits, shared, bus, 0).unwrap();
            let client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut h = Harness { worker, events: Events::with_capacity(64), client };
            let (request, _) = client_request("x", "/", [1; 16], &[], &[]);
            h.client.write_all(&request).unwrap();
            h.turn_until("upgrade", |w| w.shared.metrics.handshakes.get() == 1);
            let mut response = [0u8; 512];
            let n = h.client.read(&mut response).unwrap();
            assert!(response[..n].starts_with(b"HTTP/1.1 101"));
            h
        }

        fn turn_until(&mut self, what: &str, cond: impl Fn(&Worker<Echo>) -> bool) {
            for _ in 0..200 {
                self.worker.turn(&mut self.events).unwrap();
                if cond(&self.worker) {
                    return;
                }
            }
            panic!("worker never reached: {what}");
        }

        fn conn(&self) -> &Connection<()> {
            self.worker.conns.iter().next().expect("one connection").1
        }

        /// Sends `bytes` and steps the worker until it has read them all.
        fn send(&mut self, bytes: &[u8]) {
            let target = self.worker.shared.metrics.bytes_in.get() + bytes.len() as u64;
            self.client.write_all(bytes).unwrap();
            self.turn_until("bytes read", |w| w.shared.metrics.bytes_in.get() >= target);
        }

        fn read_echo(&mut self, len: usize) {
            let mut got = vec![0u8; len];
            self.client.read_exact(&mut got).unwrap();
        }
    }

    fn assert_owns_no_buffer(conn: &Connection<()>) {
        assert_eq!(conn.rbuf.capacity(), 0, "read buffer held while idle");
        assert!(conn.wq.is_empty() && !conn.wq.has_overflow_allocation(), "write buffer held while idle");
        assert!(!conn.assembler.holds_memory(), "message buffer held while idle");
        assert_eq!(conn.buffer_bytes(), 0);
    }

    #[test]
    fn an_idle_open_connection_owns_no_read_or_write_buffer() {
        let mut h = Harness::new();
        assert_owns_no_buffer(h.conn());

        let frame = encode_masked_frame(true, OpCode::Binary, &[5; 10], [1, 2, 3, 4]);
        h.send(&frame);
        h.read_echo(12);
        assert_owns_no_buffer(h.conn());

        // Half a frame: only the tail is kept, in a buffer of exactly its size.
        h.send(&frame[..9]);
        assert_eq!((h.conn().rbuf.filled(), h.conn().rbuf.capacity()), (9, 9));
        h.send(&frame[9..]);
        h.read_echo(12);
        assert_owns_no_buffer(h.conn());

        // A fragmented message holds its buffer only until its last fragment.
        h.send(&encode_masked_frame(false, OpCode::Text, b"ab", [9; 4]));
        assert!(h.conn().assembler.in_message());
        h.send(&encode_masked_frame(true, OpCode::Continuation, b"c", [9; 4]));
        h.read_echo(5);
        assert_owns_no_buffer(h.conn());
    }

    #[test]
    fn a_large_frame_in_progress_reads_into_its_own_buffer_then_releases_it() {
        let mut h = Harness::new();
        let payload = vec![3u8; 300 * 1024];
        let frame = encode_masked_frame(true, OpCode::Binary, &payload, [7, 7, 7, 7]);
        h.send(&frame[..100 * 1024]);
        assert_eq!(h.conn().rbuf.filled(), 100 * 1024, "the tail moved to the connection");
        h.send(&frame[100 * 1024..]);
        h.read_echo(payload.len() + 10);
        assert_owns_no_buffer(h.conn());
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let h = Harness::new();
        assert!(h.conn().stream.nodelay().unwrap(), "accept no longer sets it; the listener's must carry over");
    }

    #[test]
    fn per_connection_state_is_small() {
        // Recorded in BENCHMARKS.md; the bound keeps the idle-memory goal in reach.
        let size = std::mem::size_of::<Connection<()>>();
        let slab_entry = std::mem::size_of::<slab::Slab<Connection<()>>>();
        eprintln!("size_of::<Connection<()>>() = {size} bytes (slab header {slab_entry})");
        assert!(size <= 192, "Connection<()> grew to {size} bytes");
    }
}
