//! What every example's `main` does: take the listen address from the first argument (and the
//! worker count from `FANOUT_WORKERS`, default 1; after the address, `--compression` (or
//! `FANOUT_COMPRESSION=1`) turns permessage-deflate on, `--tls-cert FILE --tls-key FILE` serve
//! TLS and `--coalesce-us N` (or `FANOUT_COALESCE_US=N`) sets the coalescing window for
//! publishes, as the gateway's flag does), start the server, print `NAME: listening on
//! ws://ADDR/` (`wss://` with TLS; the window, when set, follows) on stderr (tests and scripts
//! wait for that line to learn the port when they pass port 0), and serve until stopped.

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
    let listen = args.first().filter(|a| !a.starts_with("--")).cloned();
    let rest = &args[usize::from(listen.is_some())..];
    let (mut compression, mut tls_cert, mut tls_key, mut coalesce) = (false, None, None, None);
    let mut i = 0;
    while i < rest.len() {
        match (rest[i].as_str(), rest.get(i + 1)) {
            ("--compression", _) => compression = true,
            ("--tls-cert", Some(file)) => (tls_cert, i) = (Some(file.into()), i + 1),
            ("--tls-key", Some(file)) => (tls_key, i) = (Some(file.into()), i + 1),
            ("--coalesce-us", Some(n)) => (coalesce, i) = (Some(micros("--coalesce-us", n)?), i + 1),
            (unknown, _) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown argument {unknown}")))
            }
        }
        i += 1;
    }
    compression |= std::env::var("FANOUT_COMPRESSION").is_ok_and(|v| v == "1" || v == "true");
    let coalesce = match (coalesce, std::env::var("FANOUT_COALESCE_US")) {
        (Some(window), _) => window,
        (None, Ok(n)) => micros("FANOUT_COALESCE_US", &n)?,
        (None, Err(_)) => Duration::ZERO,
    };
    let listen = listen.unwrap_or_else(|| default_listen.into());
    let listen = listen.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?;
    let workers = match std::env::var("FANOUT_WORKERS") {
        Ok(n) => {
            n.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("FANOUT_WORKERS={n}: {e}")))?
        }
        Err(_) => 1,
    };
    let config = Config { listen, workers, compression, tls_cert, tls_key, coalesce, ..Config::default() };
    let server = Server::new(configure(config)).start(factory)?;
    let scheme = if server.tls_local_addr().is_some() { "wss" } else { "ws" };
    let deflate = if compression { " (permessage-deflate on)" } else { "" };
    let window = if coalesce.is_zero() { String::new() } else { format!(" (coalescing {} us)", coalesce.as_micros()) };
    eprintln!("{name}: listening on {scheme}://{}/{deflate}{window}", server.local_addr());
    server.join()
}

/// A duration given in whole microseconds by `what`.
fn micros(what: &str, n: &str) -> io::Result<Duration> {
    let us = n
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {n}: {e} (microseconds)")))?;
    Ok(Duration::from_micros(us))
}
