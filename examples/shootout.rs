//! websocket-shootout server: the protocol of hashrocket/websocket-shootout, so its tools (and
//! `fanout-load shootout`) can measure this library.
//!
//! `cargo run --release --example shootout -- 127.0.0.1:9004` (`FANOUT_WORKERS=N` for N workers)
//!
//! Text frames of JSON:
//! - `{"type":"echo","payload":X}`: the same message back to the sender;
//! - `{"type":"broadcast","payload":X}`: `{"type":"broadcast","payload":X}` to every open
//!   connection (the sender included), then
//!   `{"type":"broadcastResult","payload":X,"listenerCount":N}` to the sender, N being the
//!   connections the broadcast was sent to (the reference Go server's field).
//!
//! Correct with any `FANOUT_WORKERS`: `Ctx::broadcast` reaches the open connections of every
//! worker, and N is read from one atomic count that every worker's handler shares (incremented
//! in `on_open`, decremented in `on_close`), not from a per-worker tally, which would count only
//! the sender's worker. It is the count when the broadcast was asked for: a connection opening
//! or closing meanwhile may or may not get the frame, as with any broadcast.
//!
//! The sender gets its `broadcastResult` before its own copy of the broadcast: a send is queued
//! at once, while broadcasts are batched and go out at the end of the loop turn. The protocol's
//! clients count the two kinds separately, so the order does not matter to them.
//!
//! The payload is kept as raw JSON text (`serde_json::value::RawValue`), never parsed into a
//! value or re-serialised. A message that is not one of these is ignored, as the reference
//! servers do.

mod common;

use fanout::{CloseCode, ConnId, Ctx, Handler, Message, Reject, Request};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

struct Shootout {
    /// Open connections over all workers, shared by every worker's handler. Relaxed: it is a
    /// figure reported to clients, ordering nothing else.
    open: Arc<AtomicUsize>,
}

impl Handler for Shootout {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_close(&mut self, _: &mut Ctx<'_>, _: ConnId, _: (), _: CloseCode, _: &str) {
        // `on_close` runs exactly once for each connection `on_open` accepted.
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), message: Message) {
        let Some(text) = message.as_text() else {
            return;
        };
        let Ok(incoming) = serde_json::from_str::<Incoming<'_>>(text) else {
            return;
        };
        match &*incoming.kind {
            // The message as it came: the payload is shared, not copied.
            "echo" => ctx.send(id, message),
            "broadcast" => {
                let payload = incoming.payload.map_or("null", RawValue::get);
                let all = format!(r#"{{"type":"broadcast","payload":{payload}}}"#);
                let listeners = self.open.load(Ordering::Relaxed);
                let result = format!(r#"{{"type":"broadcastResult","payload":{payload},"listenerCount":{listeners}}}"#);
                ctx.broadcast(Message::Text(all.into()));
                ctx.send(id, Message::Text(result.into()));
            }
            _ => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    common::serve("shootout", "127.0.0.1:9004", common::large_messages, move || Shootout { open: open.clone() })
}
