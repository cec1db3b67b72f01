//! Opening connections: nonblocking sockets, the ramp of connects, and the handshake timeout.
//!
//! Owns: `Net::connect` (a socket per connection to its endpoint, bound to the plan's source
//! address and
//! registered for both edges), `Net::pump_connects` (opens queued connections as the ramp and the
//! pending cap allow) and `Net::sweep_timeouts`. The upgrade request that follows a completed
//! connect is `reactor`'s. Must not: read or write connection data, or know any scenario.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use rustls::ClientConnection;
use socket2::{Domain, Protocol, Socket, Type};

use super::{Conn, EndReason, Ended, Kind, Net, State};

impl Net {
    /// Starts a nonblocking connect for global connection `index`.
    fn connect(&mut self, index: u64, kind: Kind) -> io::Result<usize> {
        let (src, dst) = self.target.endpoint(index).addrs.for_conn(index);
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
        let tls = match (&self.target.tls, &self.target.endpoint(index).tls, kind) {
            (Some(config), Some(name), Kind::Ws) => {
                let session = ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Some(Box::new(session))
            }
            _ => None,
        };
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
            tls,
            state: State::Connecting,
            kind,
            index,
            started: self.now,
            pending: Vec::new(),
            frag: Vec::new(),
            frag_op: None,
            frag_compressed: false,
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
    pub(super) fn pump_connects(&mut self) -> Option<Instant> {
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
    pub(super) fn sweep_timeouts(&mut self) {
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
}
