//! The listening socket: SO_REUSEPORT, an explicit backlog, non-blocking, handed to mio.
//!
//! Owns: `bind`. Invariants: the backlog is the configured one, never the 128 that std and mio
//! default to, which drops SYNs when thousands of clients connect at once; and TCP_NODELAY is
//! set here, once, because Linux copies it to every accepted socket (a `setsockopt` per accept
//! saved; a test in `reactor` checks the inheritance).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking listener on `addr` with SO_REUSEADDR and SO_REUSEPORT (so each worker
/// can own a listener on the same port and the kernel spreads connections among them).
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Latency over throughput: frames are already batched per turn.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}
