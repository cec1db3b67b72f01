//! One thread's event loop and the bytes of its connected sockets.
//!
//! Owns: `Reactor` (poll -> read and dispatch -> timers -> one write per dirty connection ->
//! per-second sample), the client side of the upgrade (`Net::on_connected` writes the request once
//! the connect completes; `Reactor::data` reads the 101), frames in (walked in place from the
//! thread's 64 KiB read buffer, pings and closes answered, data messages to the driver) and
//! writes out (`Net::flush`, `Net::write_now`: one `write` per dirty connection per turn, WRITABLE
//! interest only while a partial write waits). Must not: know any scenario's message format; what
//! a message means is the `Driver`'s.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::proto::client::{client_request, parse_response, ResponseError};
use fanout::proto::{HttpLimits, OpCode, Status};
use mio::{Events, Interest, Poll, Registry, Token};

use super::{Conn, Driver, EndReason, Kind, Net, State, MAX_PAYLOAD, READ_CHUNK, WAKER_TOKEN};
use crate::stats::Stats;
use crate::wire::{push_frame, scan_frames_after_tail, RawFrame};

impl Net {
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
        let endpoint = self.target.endpoint(c.index);
        let (request, accept) = client_request(&endpoint.host, &endpoint.path, nonce, &[], &headers);
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
        let result = match c.write_out() {
            Ok(left) => {
                // A partial write waits for the WRITABLE edge (see `Reactor::event`). The interest
                // set at connect is dropped on the first write after the upgrade, not at connect:
                // `connect` closes right after the 101 and would only pay for the change.
                let waiting = left || !matches!(c.state, State::Open);
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
                if c.wpos < c.wbuf.len() || c.tls.as_ref().is_some_and(|t| t.wants_write()) {
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
        if let Some(Some(Conn { tls: Some(_), .. })) = self.net.conns.get(id) {
            return self.read_tls(id);
        }
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

    /// `read` for a TLS connection: records in until the socket is drained, each batch's
    /// plaintext handed on through `self.rbuf` like plain bytes.
    fn read_tls(&mut self, id: usize) {
        loop {
            let Some(Some(c)) = self.net.conns.get_mut(id) else {
                return;
            };
            let Some(tls) = c.tls.as_mut() else {
                return;
            };
            if c.paused || matches!(c.state, State::Connecting) {
                return;
            }
            let eof = match tls.read_tls(&mut c.stream) {
                Ok(n) => n == 0,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.net.end(id, EndReason::from_io(&e)),
            };
            if let Err(e) = tls.process_new_packets() {
                // The alert rustls queued tells the server why.
                let _ = tls.write_tls(&mut c.stream);
                return self.net.end(id, EndReason::Tls(e.to_string()));
            }
            if tls.wants_write() {
                // Handshake messages, or the request held until the handshake ended.
                self.net.mark_dirty(id);
            }
            loop {
                let Reactor { net, rbuf, .. } = self;
                let Some(Some(Conn { tls: Some(tls), .. })) = net.conns.get_mut(id) else {
                    return;
                };
                match tls.reader().read(rbuf) {
                    Ok(0) => return net.end(id, EndReason::Eof),
                    Ok(n) => self.data(id, n, Instant::now()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return net.end(id, EndReason::Eof),
                    Err(e) => return net.end(id, EndReason::from_io(&e)),
                }
            }
            if eof {
                return self.net.end(id, EndReason::Eof);
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

/// A compressed message, inflated for the driver; one that does not inflate counts as an error.
fn deliver_compressed<D: Driver>(net: &mut Net, driver: &mut D, id: usize, text: bool, payload: &[u8], at: Instant) {
    match net.inflater.inflate(payload, MAX_PAYLOAD) {
        Ok(data) => driver.on_message(net, id, text, &data, at),
        Err(_) => net.stats.counters.errors += 1,
    }
}

/// One frame of connection `id`: data messages go to the driver, pings are answered, a close
/// frame is answered and ends the connection. Returns whether the connection is still open.
fn on_frame<D: Driver>(net: &mut Net, driver: &mut D, id: usize, f: RawFrame<'_>, at: Instant) -> bool {
    match f.opcode {
        OpCode::Text | OpCode::Binary if f.fin && f.compressed => {
            deliver_compressed(net, driver, id, f.opcode == OpCode::Text, f.payload, at)
        }
        OpCode::Text | OpCode::Binary if f.fin => driver.on_message(net, id, f.opcode == OpCode::Text, f.payload, at),
        OpCode::Text | OpCode::Binary => {
            if let Some(Some(c)) = net.conns.get_mut(id) {
                c.frag.clear();
                c.frag.extend_from_slice(f.payload);
                c.frag_op = Some(f.opcode);
                c.frag_compressed = f.compressed;
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
                if std::mem::take(&mut c.frag_compressed) {
                    deliver_compressed(net, driver, id, text, &whole, at);
                } else {
                    driver.on_message(net, id, text, &whole, at);
                }
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
                let _ = c.write_out();
            }
            net.end(id, EndReason::CloseFrame(code));
        }
    }
    net.is_open(id)
}
