//! A worker: one `mio::Poll`, its listener, its connections in a slab, and the loop that drives
//! them.
//!
//! Owns: `Worker`, `Limits` (the settings the loop reads on every event, derived once from
//! `Config`), the turn order, applying the commands callbacks queue, and the worker's side of a
//! graceful stop (its pacing is `stop.rs`). Invariants: the loop never blocks on anything but
//! `poll`; a turn ends with every dirty connection flushed; the poll timeout is zero while work
//! is known to be waiting (connections with bytes left after their read budget, envelopes in
//! this worker's own inbox), because no event would announce it; the poll never sleeps past the
//! due time of an open publish batch (`Config::coalesce`): `window_timer.rs` wakes it then.
//! Without a window (the default) every batch is delivered at the end of its turn and the loop
//! reads no clock beyond what it always read; with one, the turn reads the clock once more, at
//! its end, to deliver the batches due; during a graceful stop every batch is delivered at the
//! end of its turn, so a close never outruns a publish.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll};
use slab::Slab;

use super::bus::Envelope;
use super::connection::{Connection, Phase};
use super::deflate::{Deflate, DeflateSettings};
use super::read_buf::ReadBuf;
use super::service::{Command, Io, ServerClose, Service};
use super::shared::Shared;
use super::stop::Stop;
use super::timer::{self, Tick, Timers};
use super::tls::WorkerTls;
use super::token::{ConnId, LISTENER, TLS_LISTENER, WAKER, WINDOW_TIMER};
use super::window_timer::WindowTimer;
use crate::config::{Cidr, Config, SlowConsumerPolicy};
use crate::metrics::WorkerMetrics;
use crate::proto::frame::Role;
use crate::proto::{FrameRules, HttpLimits};
use crate::pubsub::{Batch, Topics};

/// Settings the loop reads on every event, derived once from `Config`.
pub(super) struct Limits {
    pub(super) frame_rules: FrameRules,
    pub(super) http: HttpLimits,
    pub(super) max_message: usize,
    pub(super) max_queued: usize,
    pub(super) slow_consumer: SlowConsumerPolicy,
    pub(super) handshake_ticks: Tick,
    /// Silence before a keep-alive ping; 0 disables idle handling.
    pub(super) ping_ticks: Tick,
    /// Further silence after the ping before the connection is closed.
    pub(super) pong_ticks: Tick,
    pub(super) close_ticks: Tick,
    pub(super) stop_ticks: Tick,
    /// Whether admission counts connections per peer address.
    pub(super) per_ip: bool,
    /// This worker's share of the server's `max_pending_handshakes`.
    pub(super) max_pending_handshakes: usize,
    pub(super) subprotocols: Vec<String>,
    pub(super) deflate: DeflateSettings,
    /// Peers whose PROXY header and `X-Forwarded-For` are believed.
    pub(super) trusted_proxies: Vec<Cidr>,
    /// Connections from `trusted_proxies` start with a PROXY header.
    pub(super) proxy_protocol: bool,
    /// The coalescing window for publish batches, in µs; 0 delivers them at the end of the turn.
    pub(super) coalesce_us: u64,
}

impl Limits {
    pub(super) fn new(config: &Config) -> Self {
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
            stop_ticks: Timers::ticks(config.drain_window).max(1),
            per_ip: config.max_connections_per_ip > 0,
            max_pending_handshakes: config.max_pending_handshakes.div_ceil(config.workers.max(1)),
            subprotocols: config.subprotocols.clone(),
            deflate: DeflateSettings::new(config),
            trusted_proxies: config.trusted_proxies.clone(),
            proxy_protocol: config.proxy_protocol,
            coalesce_us: config.coalesce.as_micros() as u64,
        }
    }
}

pub(crate) struct Worker<S: Service> {
    pub(super) poll: Poll,
    pub(super) listener: Option<mio::net::TcpListener>,
    /// The TLS listener beside a plain `listener` (`Config::tls_listen`).
    pub(super) tls_listener: Option<mio::net::TcpListener>,
    /// `listener` itself serves TLS (a certificate without `tls_listen`).
    pub(super) main_is_tls: bool,
    /// The worker's TLS side, when the server has a certificate.
    pub(super) tls: Option<WorkerTls>,
    pub(super) conns: Slab<Connection<S::Session>>,
    pub(super) topics: Topics,
    pub(super) broadcast: Batch,
    /// When a batch opened in this turn is due (µs on `timers`' clock; 0 without a window).
    pub(super) open_due: u64,
    /// When the broadcast batches are due, while they hold frames.
    pub(super) broadcast_due: u64,
    /// Wakes the loop when the oldest open batch is due; only with a window.
    pub(super) window_timer: Option<WindowTimer>,
    /// permessage-deflate: the compressor, the inflater, the compressed broadcast batch.
    pub(super) deflate: Deflate,
    /// Connections found over their queue cap while delivering, closed once delivery is done.
    pub(super) slow: Vec<ConnId>,
    pub(super) service: S,
    pub(super) io: Io,
    pub(super) rbuf: ReadBuf,
    pub(super) dirty: Vec<u32>,
    /// Connections that used up their read budget and have bytes left in the kernel.
    pub(super) read_again: Vec<ConnId>,
    pub(super) timers: Timers,
    pub(super) due: Vec<(ConnId, Tick)>,
    pub(super) now: Tick,
    pub(super) next_generation: u32,
    /// Accepting failed for lack of file descriptors; retried on the next tick.
    pub(super) accept_paused: bool,
    /// The graceful stop, once begun.
    pub(super) stop: Option<Stop>,
    /// Connections in the handshake phase (bounded by `max_pending_handshakes` per worker).
    pub(super) handshaking: usize,
    /// Peer addresses of open connections, kept only when admission counts per address.
    pub(super) peer_ips: HashMap<u32, IpAddr>,
    pub(super) limits: Limits,
    pub(super) metrics: Arc<WorkerMetrics>,
    pub(super) shared: Arc<Shared>,
    pub(super) index: usize,
    /// Envelopes taken from the inbox, kept to reuse the allocation.
    pub(super) envelopes: Vec<Envelope>,
}

impl<S: Service> Worker<S> {
    pub(super) fn new(
        poll: Poll,
        (mut listener, mut tls_listener): (mio::net::TcpListener, Option<mio::net::TcpListener>),
        service: S,
        limits: Limits,
        shared: Arc<Shared>,
        index: usize,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(second) = tls_listener.as_mut() {
            poll.registry().register(second, TLS_LISTENER, Interest::READABLE)?;
        }
        let tls = shared.tls.clone().map(WorkerTls::new);
        let main_is_tls = tls.is_some() && tls_listener.is_none();
        let timers = Timers::new(Instant::now());
        let deflate = Deflate::new(&limits.deflate);
        let window_timer = WindowTimer::new(poll.registry(), limits.coalesce_us)?;
        Ok(Worker {
            poll,
            listener: Some(listener),
            tls_listener,
            main_is_tls,
            tls,
            conns: Slab::new(),
            topics: Topics::new(),
            broadcast: Batch::default(),
            open_due: 0,
            broadcast_due: 0,
            window_timer,
            deflate,
            slow: Vec::new(),
            service,
            io: Io {
                commands: Vec::new(),
                shared: shared.clone(),
                worker: index,
                request: None,
                deferred: false,
                behind_inbox: Vec::new(),
            },
            rbuf: ReadBuf::default(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            now: timers.tick_at(Instant::now()),
            timers,
            due: Vec::new(),
            next_generation: 0,
            accept_paused: false,
            stop: None,
            handshaking: 0,
            peer_ips: HashMap::new(),
            limits,
            metrics: shared.metrics[index].clone(),
            shared,
            index,
            envelopes: Vec::new(),
        })
    }

    /// Turns until a graceful stop has closed every connection or run out of time.
    pub(super) fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.turn(&mut events)?;
            if self.stop_finished() {
                return Ok(());
            }
        }
    }

    /// One pass of the loop; returns after the dirty connections are flushed.
    pub(super) fn turn(&mut self, events: &mut Events) -> io::Result<()> {
        let now = Instant::now();
        let mut timeout = self.timers.poll_timeout(now);
        if let (Some(due), Some(window_timer)) = (self.next_due(), self.window_timer.as_mut()) {
            window_timer.arm(due, self.timers.until(due, now))?;
        }
        // Envelopes this worker queued for itself after its inbox was emptied (a callback run by
        // a timer, a delivery or a flush) have no waker to announce them: don't sleep on them.
        if !self.read_again.is_empty() || self.shared.bus.has_pending(self.index) {
            timeout = Some(Duration::ZERO);
        } else if self.accept_paused || self.stop.is_some() {
            timeout = Some(timeout.unwrap_or(timer::TICK).min(timer::TICK));
        }
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let woke = Instant::now();
        self.now = self.timers.tick_at(woke);
        if self.limits.coalesce_us > 0 {
            self.open_due = Timers::window_due(self.timers.micros(woke), self.limits.coalesce_us);
            self.topics.set_due(self.open_due);
        }
        self.read_again_now();
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(false),
                TLS_LISTENER => self.accept(true),
                WAKER => {}
                WINDOW_TIMER => {
                    if let Some(window_timer) = self.window_timer.as_mut() {
                        window_timer.fired();
                    }
                }
                token => {
                    let id = ConnId::from_token(token, self.index as u16);
                    if event.is_writable() {
                        self.flush(id);
                    }
                    self.on_read_event(id, event);
                }
            }
        }
        if self.accept_paused {
            self.accept_paused = false;
            self.accept(false);
            self.accept(true);
        }
        // The inbox before the stop's pacing: what another worker published before the stop
        // began (an HTTP publish already answered 200) reaches its subscribers before their 1001.
        self.apply_inbox();
        self.pace_stop();
        self.expire_deadlines();
        if self.limits.coalesce_us == 0 || self.stop.is_some() {
            self.deliver_published(None);
        } else {
            let now = self.timers.micros(Instant::now());
            self.deliver_due(now);
        }
        self.flush_dirty();
        // Time from wake-up to the end of the flush: what a new event waits at worst.
        let busy = woke.elapsed().as_micros() as u64;
        let metrics = &self.metrics;
        metrics.loop_turns.add(1);
        metrics.loop_busy_us.add(busy);
        metrics.loop_lag_us.sub(metrics.loop_lag_us.get());
        metrics.loop_lag_us.add(busy);
        Ok(())
    }
}

impl<S: Service> Worker<S> {
    /// The id of this worker's connection in `slot` with `generation`.
    pub(super) fn conn_id(&self, slot: usize, generation: u32) -> ConnId {
        ConnId { worker: self.index as u16, slot: slot as u32, generation }
    }
}

impl<S: Service> Worker<S> {
    /// Applies what the last callback asked for, including what callbacks run by these
    /// commands (an `on_close`) ask in turn.
    pub(super) fn apply_commands(&mut self) {
        while !self.io.commands.is_empty() {
            let mut batch = mem::take(&mut self.io.commands);
            for command in batch.drain(..) {
                match command {
                    Command::Send { id, head, tail, ping } => self.queue_send(id, head, tail, ping),
                    Command::Close { id, code, reason } => {
                        // What is still coalescing for the connection goes out before its close
                        // frame: nothing published before a close is lost to it.
                        if self.limits.coalesce_us > 0 {
                            self.deliver_pending_to(id);
                        }
                        self.close_conn(id, code, &reason)
                    }
                }
            }
            if self.io.commands.is_empty() {
                self.io.commands = batch; // keep the allocation
            }
        }
    }

    /// Begins the graceful stop once the server asked for it, then closes the connections due
    /// by now; at the end of the window, drops the rest and the listener.
    pub(super) fn pace_stop(&mut self) {
        if self.stop.is_none() {
            if !self.shared.bus.stop_requested() {
                return;
            }
            let open: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.phase == Phase::Open)
                .map(|(slot, c)| self.conn_id(slot, c.generation))
                .collect();
            self.stop = Some(Stop::new(self.now, self.limits.stop_ticks, open));
            // The stop delivers every batch at the end of each turn; those still coalescing
            // go now, before the first 1001.
            self.deliver_published(None);
        }
        let Some(stop) = self.stop.as_mut() else {
            return;
        };
        let closing = stop.due(self.now);
        let over = stop.is_over(self.now);
        if !closing.is_empty() {
            // What this turn published goes out before the close frames that follow it.
            self.deliver_published(None);
        }
        for id in closing {
            self.close_by_server(id, ServerClose::Stopping);
        }
        if over {
            let ids: Vec<ConnId> = self.conns.iter().map(|(slot, c)| self.conn_id(slot, c.generation)).collect();
            for id in ids {
                self.remove(id);
            }
            for mut listener in [self.listener.take(), self.tls_listener.take()].into_iter().flatten() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
    }

    /// True once a graceful stop has closed every connection or its window is over. A worker
    /// with nothing left keeps its listener while other workers still hold open WebSockets, so
    /// health checks during the stop get their 503 rather than a refused connection (its
    /// SO_REUSEPORT listener closing would reset whatever the kernel had queued on it).
    fn stop_finished(&self) -> bool {
        self.stop.as_ref().is_some_and(|stop| {
            stop.is_over(self.now) || (self.conns.is_empty() && self.shared.admission.open_count() == 0)
        })
    }
}

/// The connection `id` names, if it is still the one in its slot.
pub(super) fn get<S>(conns: &mut Slab<Connection<S>>, id: ConnId) -> Option<&mut Connection<S>> {
    conns.get_mut(id.slot as usize).filter(|c| c.generation == id.generation)
}
