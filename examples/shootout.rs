//! websocket-shootout server: the protocol of hashrocket/websocket-shootout, so its tools (and
//! `fanout-load shootout`) can measure this library.
//!
//! `cargo run --release --example shootout -- 127.0.0.1:9004`
//!
//! Text frames of JSON:
//! - `{"type":"echo","payload":X}`: the same message back to the sender;
//! - `{"type":"broadcast","payload":X}`: `{"type":"broadcast","payload":X}` to every open
//!   connection (the sender included), then `{"type":"broadcastResult","payload":X}` to the sender.
//!
//! The sender gets its `broadcastResult` before its own copy of the broadcast: a send is queued
//! at once, while broadcasts are batched and go out at the end of the loop turn. The protocol's
//! clients count the two kinds separately, so the order does not matter to them.
//!
//! The payload is kept as raw JSON text (`serde_json::value::RawValue`), never parsed into a
//! value or re-serialised. A message that is not one of these is ignored, as the reference
//! servers do.

mod common;

use fanout::{ConnId, Ctx, Handler, Message, Reject, Request};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

struct Shootout;

impl Handler for Shootout {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Ok(())
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
                let result = format!(r#"{{"type":"broadcastResult","payload":{payload}}}"#);
                ctx.broadcast(Message::Text(all.into()));
                ctx.send(id, Message::Text(result.into()));
            }
            _ => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    common::serve("shootout", "127.0.0.1:9004", common::large_messages, || Shootout)
}
