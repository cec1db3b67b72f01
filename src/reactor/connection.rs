//! One connection's state: its socket, phase, buffers, deadline and the application's session.
//!
//! Owns: `Connection` and `Phase`. Phases only move forward:
//! Handshake -> Open -> CloseSent -> Lingering -> HalfClosed, where any phase may skip ahead.
//! Invariants: an idle open connection owns no read buffer (`rbuf` is released once empty), no
//! write buffer (`wq` holds at most an inline slot), no message buffer (the receiver is one null
//! pointer) and no address (`hop` is dropped at the upgrade); the session exists exactly while
//! the connection is `Open`: leaving that phase takes it out and hands it to `on_close`. No
//! compression state either: permessage-deflate is a one-byte mode. A TLS connection adds one boxed `TlsConn`, which holds no buffer while idle.

use std::net::SocketAddr;

use mio::net::TcpStream;

use super::deflate::Compression;
use super::read_buf::ReadBuf;
use super::timer::Tick;
use super::tls::TlsConn;
use super::write_queue::WriteQueue;
use crate::proto::Receiver;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading an HTTP request: an upgrade, or a plain request (several on a kept-alive
    /// connection), or waiting for the deferred response to one (`Connection::awaiting`).
    Handshake,
    /// WebSocket frames flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's (frames still read, data discarded).
    CloseSent,
    /// Our last bytes (a close reply, an error response) are queued; once they are written the
    /// write side is shut down.
    Lingering,
    /// Write side shut down (our FIN is out); reads are discarded until the peer's FIN or the
    /// close timeout.
    HalfClosed,
}

pub(crate) struct Connection<S> {
    pub(crate) stream: TcpStream,
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// Queued in the worker's dirty list for the end-of-turn flush.
    pub(crate) dirty: bool,
    /// WRITABLE interest is registered (only while bytes are pending after a short write).
    pub(crate) wants_write: bool,
    /// A keep-alive ping is out and nothing has been heard since.
    pub(crate) ping_sent: bool,
    /// `100 Continue` was sent for the HTTP request being read.
    pub(crate) continue_sent: bool,
    /// In the HTTP phase, the handler deferred its response to the last request and it has
    /// not arrived yet: what the client sends meanwhile is kept unparsed in `rbuf`.
    pub(crate) awaiting: bool,
    /// The request whose response is awaited asked for keep-alive.
    pub(crate) keep_alive: bool,
    /// Reading stopped while a response is awaited and `max_request_bytes` are held: the rest
    /// stays in the kernel (TCP backpressure on a client that pipelines deeply) until the
    /// response is out, when the connection is read again.
    pub(crate) read_paused: bool,
    /// The connection's first bytes must be a PROXY header (a trusted peer, `proxy_protocol`).
    pub(crate) proxy_header: bool,
    /// permessage-deflate, as negotiated at the upgrade.
    pub(crate) compression: Compression,
    /// When the current phase's timeout (or the idle ping) is due.
    pub(crate) deadline: Tick,
    /// The tick of the wheel entry responsible for this connection (0: none).
    pub(crate) timer_at: Tick,
    pub(crate) rbuf: ReadBuf,
    pub(crate) wq: WriteQueue,
    pub(crate) receiver: Receiver,
    pub(crate) session: Option<S>,
    /// The TLS state of a connection accepted on a TLS listener; `None` on the plain path.
    pub(crate) tls: Option<Box<TlsConn>>,
    /// In the HTTP phase, the nearest hop towards the client: the TCP peer as `accept` returned
    /// it (no `getpeername` per upgrade), or the source a PROXY header named. Boxed and dropped
    /// at the upgrade, so an open connection keeps no address.
    pub(crate) hop: Option<Box<SocketAddr>>,
}

impl<S> Connection<S> {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, generation: u32, tls: Option<Box<TlsConn>>) -> Self {
        Connection {
            stream,
            generation,
            phase: Phase::Handshake,
            dirty: false,
            wants_write: false,
            ping_sent: false,
            continue_sent: false,
            awaiting: false,
            keep_alive: false,
            read_paused: false,
            proxy_header: false,
            compression: Compression::Off,
            deadline: 0,
            timer_at: 0,
            rbuf: ReadBuf::default(),
            wq: WriteQueue::default(),
            receiver: Receiver::new(),
            session: None,
            tls,
            hop: Some(Box::new(peer)),
        }
    }

    #[cfg(test)]
    /// Bytes of buffer memory the connection holds beyond its fixed-size state.
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.rbuf.capacity() + self.wq.queued_bytes() + usize::from(self.receiver.holds_memory())
    }
}
