//! The reactor: one `mio::Poll` per worker thread, its listener and its connections, driven by
//! readiness. It knows sockets, readiness and time; it asks `proto` what bytes mean.
//!
//! One turn of a worker's loop (`worker.rs`) is:
//! poll -> accept -> read and dispatch (each connection's replies flushed right after its read)
//! -> apply the inbox -> graceful-stop pacing -> expire deadlines -> deliver publishes -> flush.
//!
//! The files, one duty each (most are another `impl Worker` block):
//! - `worker.rs`: `Worker` (`Poll` + `Slab<Connection>` + listener + `Waker`), its settings, the loop.
//! - `service.rs`: the callback API the server layer implements, and `Io`, the outbox of commands.
//! - `accept.rs`: accepting until WouldBlock, and admission (total, per IP, pending handshakes).
//! - `upgrade.rs`: the HTTP phase: the upgrade, plain requests, keep-alive, 100-continue,
//!   deferred responses (the `Respond` envelope).
//! - `read.rs`: reads into the worker's buffer; `dispatch.rs`: bytes to proto, events to the service.
//! - `tls.rs`: one connection's TLS (rustls' unbuffered state machine over byte slices);
//!   `tls_config.rs`: the shared certificate, its reload and file watch, its expiry; `tls_io.rs`:
//!   the TLS branch of reading and flushing (records in, plaintext to `process`; plaintext
//!   encrypted, then written).
//! - `close.rs`: every way a connection ends. `deadline.rs`: its timeouts. `stop.rs`: graceful stop.
//! - `publish.rs`: the inbox and the per-turn batches to subscribers. `flush.rs`: queueing and writes.
//!   `window_timer.rs`: the wake-up at the end of a coalescing window, to the microsecond.
//! - `deflate.rs`: permessage-deflate: the worker's compressor and inflater, each connection's
//!   mode, the compressed forms of outgoing frames.
//! - `bus.rs`: inboxes between workers and topic interest, nothing else. `admission.rs`: the
//!   server-wide connection counts. `shared.rs`: what all workers share, and the bus actions
//!   (frame encoded once, then the bus) that `Io` and the server layer's `Remote` both use.
//!
//! Leaves first, so no file imports one that imports it back: `worker.rs` uses only the leaf
//! files (`service.rs`, `stop.rs`, `bus.rs`, `shared.rs`, `deflate.rs`, state and buffer types); the duty files
//! add `impl Worker` blocks and use `worker.rs`; `mod.rs` uses the worker to spawn it.
//!
//! Invariants:
//! - Reads go into the worker's buffer; complete frames leave it as `Bytes` views; only an
//!   incomplete frame's tail moves into the connection's own buffer, which is released once
//!   empty. Writes are queued and flushed with one `send`/`writev` per connection per turn.
//! - Callbacks never touch the slab: they push commands into `Io`, applied right after the
//!   callback returns, so the session can be borrowed from the slab during the callback.
//! - A connection leaves the slab on every path (EOF, error, timeout, close), and `on_close` runs
//!   exactly once for every connection that reached `Open`.
//! - Never uses the server layer or anything above it.

mod accept;
mod admission;
mod bus;
mod close;
mod connection;
mod deadline;
mod deflate;
mod dispatch;
mod flush;
mod listener;
mod proxy;
mod publish;
mod rate_limit;
mod read;
mod read_buf;
mod service;
mod shared;
mod stop;
mod timer;
mod tls;
mod tls_config;
mod tls_io;
mod token;
mod upgrade;
mod window_timer;
mod worker;
mod write_queue;

#[cfg(test)]
mod harness;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::config::Config;
use admission::Admission;
use bus::Bus;
pub use service::ServerClose;
pub(crate) use service::{Deferred, Io, Service};
pub(crate) use shared::{Shared, NO_WORKER};
pub(crate) use tls_config::unix_time;
use tls_config::TlsShared;
pub use token::ConnId;
use token::WAKER;
use worker::{Limits, Worker};

/// The running workers of one server.
pub(crate) struct Running {
    pub(crate) local_addr: SocketAddr,
    /// Where TLS is served: `local_addr` itself, the `tls_listen` address, or nowhere.
    pub(crate) tls_addr: Option<SocketAddr>,
    pub(crate) threads: Vec<JoinHandle<io::Result<()>>>,
    pub(crate) shared: Arc<Shared>,
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
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsShared::load(cert, key)?)),
        _ => None,
    };
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = config.listen;
    let mut tls_addr = config.tls_listen;
    for _ in 0..workers {
        let listener = listener::bind(addr, config.listen_backlog)?;
        addr = listener.local_addr()?;
        let second = match tls_addr {
            Some(at) if tls.is_some() => {
                let second = listener::bind(at, config.listen_backlog)?;
                tls_addr = Some(second.local_addr()?);
                Some(second)
            }
            _ => None,
        };
        listeners.push((listener, second));
    }
    let tls_addr = match (&tls, tls_addr) {
        (Some(_), Some(second)) => Some(second),
        (Some(_), None) => Some(addr),
        (None, _) => None,
    };
    let mut polls = Vec::with_capacity(workers);
    let mut wakers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let poll = Poll::new()?;
        wakers.push(Waker::new(poll.registry(), WAKER)?);
        polls.push(poll);
    }
    let shared = Arc::new(Shared {
        bus: Bus::new(wakers),
        admission: Admission::new(config.max_connections, config.max_connections_per_ip)
            .with_handshake_rate(config.handshake_rate_per_ip, config.handshake_rate_max_addresses),
        metrics: (0..workers).map(|_| Arc::default()).collect(),
        tls,
    });
    let make = Arc::new(make);
    let mut threads = Vec::with_capacity(workers);
    for (index, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
        let limits = Limits::new(config);
        let (shared, make) = (shared.clone(), make.clone());
        let thread = std::thread::Builder::new().name(format!("fanout-worker-{index}")).spawn(move || {
            let mut worker = Worker::new(poll, listener, make(), limits, shared, index)?;
            worker.run()
        })?;
        threads.push(thread);
    }
    if shared.tls.is_some() && !config.tls_watch_interval.is_zero() {
        tls_config::watch(
            Arc::downgrade(&shared),
            |shared: &Shared| shared.tls.as_deref(),
            |shared: &Shared| !shared.bus.stop_requested(),
            config.tls_watch_interval,
        )?;
    }
    Ok(Running { local_addr: addr, tls_addr, threads, shared })
}
