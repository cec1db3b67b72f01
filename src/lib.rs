//! fanout: a WebSocket server for Linux that holds many connections per box and fans each
//! published message out to every subscriber at the lowest cost per delivery.
//!
//! ```text
//!        server.rs  (public API: Server, Handler, Ctx)      <- config.rs
//!            |
//!        reactor/   (mio loop, slab, connections, write queues, timers)
//!            |
//!     +------+--------+
//!     v               v
//!   proto/        metrics.rs
//!  (sans-IO)       (leaf)
//! ```
//!
//! Dependencies point down, never up. `proto` is usable on its own (the load generator and the
//! tests speak WebSocket through it).

pub mod config;
pub mod gateway;
pub mod metrics;
pub mod proto;
pub mod pubsub;
mod reactor;
pub mod server;

pub use config::{Config, SlowConsumerPolicy};
pub use server::{ConnId, Ctx, Handler, Message, Reject, Request, Response, Server, ServerHandle};
