//! Broadcast server: every message from any connection goes to every open connection, the sender
//! included. The server side of `fanout-load n2` (uWebSockets' broadcast_test) and of
//! `fanout-load broadcast --protocol raw`.
//!
//! `cargo run --release --example broadcast -- 127.0.0.1:9003`
//!
//! `Ctx::broadcast` encodes the frame once; the frames broadcast in one loop turn reach each
//! connection as one shared buffer (one `writev` per connection per turn, a refcount bump per
//! connection instead of a copy). Limits match the echo example (16 MiB messages).

use std::time::Duration;

use fanout::{Config, ConnId, Ctx, Handler, Message, Reject, Request, Server};

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
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9003".into());
    let config = Config {
        listen: listen
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?,
        max_frame_size: 16 << 20,
        max_message_size: 16 << 20,
        max_queued_bytes: 64 << 20,
        close_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let server = Server::new(config).start(|| Broadcast)?;
    eprintln!("broadcast: listening on ws://{}/", server.local_addr());
    server.join()
}
