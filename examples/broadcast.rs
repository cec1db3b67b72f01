//! Broadcast server: every message from any connection goes to every open connection, the sender
//! included. The server side of `fanout-load n2` (uWebSockets' broadcast_test) and of
//! `fanout-load broadcast --protocol raw`.
//!
//! `cargo run --release --example broadcast -- 127.0.0.1:9003`
//!
//! `Ctx::broadcast` encodes the frame once; the frames broadcast in one loop turn reach each
//! connection as one shared buffer (one `writev` per connection per turn, a refcount bump per
//! connection instead of a copy). Limits match the echo example (16 MiB messages).
//!
//! Correct with any `FANOUT_WORKERS` (the variable sets the worker count, 1 by default):
//! `Ctx::broadcast` hands the frame to every worker's inbox, and each worker sends it to its own
//! open connections, so a message reaches the connections of every worker, not only the
//! sender's.

mod common;

use fanout::{ConnId, Ctx, Handler, Message, Reject, Request};

struct Broadcast;

impl Handler for Broadcast {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: ConnId, _: &mut (), message: Message) {
        ctx.broadcast(message);
    }
}

fn main() -> std::io::Result<()> {
    common::serve("broadcast", "127.0.0.1:9003", common::large_messages, || Broadcast)
}
