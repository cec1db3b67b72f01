//! What every example's `main` does: take the listen address from the first argument (and the
//! worker count from `FANOUT_WORKERS`, default 1; permessage-deflate with a `--compression`
//! argument after the address, or `FANOUT_COMPRESSION=1`), start the server, print
//! `NAME: listening on ws://ADDR/` on stderr (tests and scripts wait for that line to learn the
//! port when they pass port 0), and serve until stopped.

use std::io;
use std::time::Duration;

use fanout::{Config, Handler, Server};

/// Limits raised to what the conformance suite and the load tests send: 16 MiB messages, and a
/// queue deep enough to echo one.
#[allow(dead_code)] // the chat example keeps the defaults
pub fn large_messages(config: Config) -> Config {
    Config {
        max_frame_size: 16 << 20,
        max_message_size: 16 << 20,
        max_queued_bytes: 64 << 20,
        close_timeout: Duration::from_secs(2),
        ..config
    }
}

/// Serves `factory`'s handler on the address in the first argument (or `default_listen`).
pub fn serve<H, F>(name: &str, default_listen: &str, configure: fn(Config) -> Config, factory: F) -> io::Result<()>
where
    H: Handler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let compression = args.iter().any(|a| a == "--compression")
        || std::env::var("FANOUT_COMPRESSION").is_ok_and(|v| v == "1" || v == "true");
    if let Some(unknown) = args.iter().skip(1).find(|a| *a != "--compression") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown argument {unknown}")));
    }
    let listen = args.first().filter(|a| *a != "--compression").cloned().unwrap_or_else(|| default_listen.into());
    let listen = listen.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?;
    let workers = match std::env::var("FANOUT_WORKERS") {
        Ok(n) => {
            n.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("FANOUT_WORKERS={n}: {e}")))?
        }
        Err(_) => 1,
    };
    let server = Server::new(configure(Config { listen, workers, compression, ..Config::default() })).start(factory)?;
    let deflate = if compression { " (permessage-deflate on)" } else { "" };
    eprintln!("{name}: listening on ws://{}/{deflate}", server.local_addr());
    server.join()
}
