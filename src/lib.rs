//! fanout: a WebSocket server for Linux that holds many connections per box and fans each
//! published message out to every subscriber at the lowest cost per delivery.
//!
//! ```text
//!   gateway/  (crate fanout-gateway: the `fanout` binary)     loadtest/  (crate fanout-load)
//!            |                                                    |
//!            v                                                    |
//!   server.rs  (public API: Server, Handler, Ctx)  <- config.rs   |
//!   remote.rs  (Remote: acting from any thread)                   |
//!            |                                                    |
//!   reactor/   (mio loop per worker, slab, TLS, write queues,     |
//!            |  deadlines, admission, the bus between workers)    |
//!     +------+---------+-----------+                              |
//!     v                v           v                              v
//!   proto/         pubsub.rs   metrics.rs                      proto/ (only)
//!  (sans-IO)     (pure data)     (leaf)
//! ```
//!
//! Dependencies point down, never up. This crate depends on the protocol and I/O crates only
//! (bytes, httparse, sha1, base64, flate2 for permessage-deflate, mio, slab, socket2, log, and
//! rustls with ring for TLS): the gateway's CLI, TOML, JSON and
//! JWT crates live in its own crate. `proto` is usable on its own (the load generator and the
//! tests speak WebSocket through it). The crate has no `unsafe` code. ARCHITECTURE.md in the
//! repository has the file map, the data flows and the invariants.
//!
//! An application implements [`Handler`] and starts a [`Server`]; the README's "Using the
//! library" example shows one, and is compiled as a doctest of this crate.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod message;
pub mod metrics;
pub mod proto;
pub mod pubsub;
mod reactor;
pub mod remote;
pub mod server;

/// The README, whose Rust examples compile as doctests, so the one users copy first stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use config::{Cidr, Config, RateLimit, SlowConsumerPolicy};
pub use remote::{Pending, Remote};
pub use server::{
    CloseCode, ConnId, Ctx, Handler, Message, Reject, Request, Response, Server, ServerClose, ServerHandle,
    ShutdownTrigger, TlsReloader,
};
