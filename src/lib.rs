//! fanout: a WebSocket server for Linux that holds many connections per box and fans each
//! published message out to every subscriber at the lowest cost per delivery.
//!
//! ```text
//!        main.rs (the `fanout` binary)                 loadtest/ (separate crate)
//!            |                                             |
//!        gateway/   (channels, auth, history, HTTP API)    |
//!            |                                             |
//!        server.rs  (public API: Server, Handler, Ctx)  <- config.rs
//!            |                                             |
//!        reactor/   (mio loops, slab, write queues, timers, the bus between workers)
//!            |                                             |
//!     +------+---------+-----------+                       |
//!     v                v           v                       v
//!   proto/         pubsub.rs   metrics.rs               proto/ (only)
//!  (sans-IO)     (pure data)     (leaf)
//! ```
//!
//! Dependencies point down, never up. `proto` is usable on its own (the load generator and the
//! tests speak WebSocket through it). The crate has no `unsafe` code.

#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod proto;
pub mod pubsub;
mod reactor;
pub mod server;

pub use config::{Config, SlowConsumerPolicy};
pub use server::{
    CloseCode, ConnId, Ctx, Handler, Message, Reject, Request, Response, Server, ServerHandle, ShutdownTrigger,
};
