//! Chat room: each message goes to every other connection (Ratchet's classic chat tutorial).
//!
//! `cargo run --release --example chat -- 127.0.0.1:9002` (`FANOUT_WORKERS=N` for N workers)
//!
//! Correct with any `FANOUT_WORKERS`: the room is a topic, not a list the handler keeps. Each
//! worker has its own handler and sees only its own connections, so a set of members per
//! handler would split the room by worker; a topic's subscribers are known to every worker, and
//! a publish reaches them wherever they are. `on_open` joins the topic; a connection that closes
//! leaves it by itself, so the handler keeps no state at all.

mod common;

use fanout::{ConnId, Ctx, Handler, Message, Reject, Request};

/// The one room every connection joins.
const ROOM: &str = "chat";

struct Chat;

impl Handler for Chat {
    type Session = ();

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        ctx.subscribe(id, ROOM);
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, from: ConnId, _: &mut (), message: Message) {
        // Encoded once and shared by every member on every worker; the sender is skipped.
        ctx.publish_except(ROOM, message, from);
    }
}

fn main() -> std::io::Result<()> {
    common::serve("chat", "127.0.0.1:9002", |config| config, || Chat)
}
