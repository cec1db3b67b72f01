//! What every example's `main` does: take the listen address from the first argument (and the
//! worker count from `FANOUT_WORKERS`, default 1; `--tls-cert FILE --tls-key FILE` after the
//! address serve TLS), start the server, print `NAME: listening on ws://ADDR/` (`wss://` with
//! TLS) on stderr (tests and scripts wait for that line to learn the port when they pass port
//! 0), and serve until stopped.

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
    let listen = std::env::args().nth(1).unwrap_or_else(|| default_listen.into());
    let listen = listen.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?;
    let workers = match std::env::var("FANOUT_WORKERS") {
        Ok(n) => {
            n.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("FANOUT_WORKERS={n}: {e}")))?
        }
        Err(_) => 1,
    };
    // `--tls-cert FILE --tls-key FILE` after the address: serve wss:// instead.
    let rest: Vec<String> = std::env::args().skip(2).collect();
    let flag = |name: &str| rest.iter().position(|a| a == name).and_then(|i| rest.get(i + 1)).map(Into::into);
    let (tls_cert, tls_key) = (flag("--tls-cert"), flag("--tls-key"));
    let config = Config { listen, workers, tls_cert, tls_key, ..Config::default() };
    let server = Server::new(configure(config)).start(factory)?;
    let scheme = if server.tls_local_addr().is_some() { "wss" } else { "ws" };
    eprintln!("{name}: listening on {scheme}://{}/", server.local_addr());
    server.join()
}
