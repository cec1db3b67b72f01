//! Echo server: every message comes back as it was sent. The Autobahn conformance target.
//!
//! `cargo run --release --example echo -- 127.0.0.1:9001`
//!
//! Limits are raised to what the conformance suite sends (16 MiB messages); the echoed payload
//! is queued without copying when it is large.

use std::time::Duration;

use fanout::{Config, ConnId, Ctx, Handler, Message, Reject, Request, Server};

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
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
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
    let server = Server::new(config).start(|| Echo)?;
    eprintln!("echo: listening on ws://{}/", server.local_addr());
    server.join()
}
