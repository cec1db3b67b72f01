//! Echo server: every message comes back as it was sent. The Autobahn conformance target.
//!
//! `cargo run --release --example echo -- 127.0.0.1:9001`, with `--compression` after the
//! address for permessage-deflate (the conformance suite's cases 12 and 13).
//!
//! Limits are raised to what the conformance suite sends (16 MiB messages); the echoed payload
//! is queued without copying when it is large.
//!
//! Correct with any `FANOUT_WORKERS` (the variable sets the worker count, 1 by default): a reply
//! goes back to the connection that sent, on the worker that holds it, so the handler keeps no
//! state to share between workers.

mod common;

use fanout::{ConnId, Ctx, Handler, Message, Reject, Request};

struct Echo;

impl Handler for Echo {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), message: Message) {
        ctx.send(id, message);
    }
}

fn main() -> std::io::Result<()> {
    common::serve("echo", "127.0.0.1:9001", common::large_messages, || Echo)
}
