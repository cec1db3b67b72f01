//! Chat room: each message goes to every other connection (Ratchet's classic chat tutorial).
//!
//! `cargo run --release --example chat -- 127.0.0.1:9002`
//!
//! The handler keeps the set of open connections itself; `on_close` removes one. With one
//! worker (the default here) that set is everyone.

mod common;

use std::collections::BTreeSet;

use fanout::{CloseCode, ConnId, Ctx, Handler, Message, Reject, Request};

#[derive(Default)]
struct Chat {
    members: BTreeSet<ConnId>,
}

impl Handler for Chat {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, id: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        self.members.insert(id);
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, from: ConnId, _: &mut (), message: Message) {
        for &to in self.members.iter().filter(|&&to| to != from) {
            // Clones share the payload: a refcount bump per member, not a copy.
            ctx.send(to, message.clone());
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_>, id: ConnId, _: (), _: CloseCode, _: &str) {
        self.members.remove(&id);
    }
}

fn main() -> std::io::Result<()> {
    common::serve("chat", "127.0.0.1:9002", |config| config, Chat::default)
}
