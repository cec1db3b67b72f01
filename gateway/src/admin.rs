//! The admin listener (`--admin-listen`): `/metrics`, `/api/stats` and `/healthz` of the main
//! server on an address of their own, so that they can stay inside a private network while
//! the WebSocket port faces the internet.
//!
//! Owns: the admin server, a second fanout `Server` with one worker that answers plain HTTP
//! only (an upgrade gets 404), its handler, and `Servers`, the two servers as one. The answers
//! are `http::route_admin`'s, computed from the application's shared state (the same `Api`
//! the main handlers implement) and the main server's figures (its `Remote`), never the admin
//! server's own. Invariants: the admin server stops after the main one (`Servers::join`), so
//! `/healthz` says "draining" there through a graceful stop; it holds no WebSocket, so its own
//! stop is immediate.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use fanout::{Config, ConnId, Ctx, Handler, Message, Reject, Remote, Request, Response, Server, ServerHandle};

use crate::http::{self, Api};

/// Plain HTTP connections the admin listener holds at once (scrapers and probes, not clients).
const ADMIN_CONNECTIONS: usize = 256;

/// The gateway's servers: the main one and, with `admin_listen`, the admin one.
pub struct Servers {
    /// The WebSocket and HTTP API server.
    pub main: ServerHandle,
    /// The admin listener's server.
    pub admin: Option<ServerHandle>,
}

impl Servers {
    /// The admin listener's bound address (the real port when it asked for port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(ServerHandle::local_addr)
    }

    /// Waits for the main server to stop (after its graceful stop), then stops the admin one.
    pub fn join(self) -> io::Result<()> {
        let main = self.main.join();
        let admin = self.admin.map_or(Ok(()), ServerHandle::stop);
        main.and(admin)
    }

    /// Starts a graceful stop of the main server and waits for both.
    pub fn stop(self) -> io::Result<()> {
        self.main.shutdown();
        self.join()
    }
}

/// Checks the admin settings: a token is not empty, and an admin listener off loopback has
/// one (its figures name channels and load; the address alone does not protect them there).
pub fn validate(listen: Option<SocketAddr>, token: Option<&str>) -> Result<(), String> {
    match (listen, token) {
        (_, Some("")) => Err("admin_token must not be empty".into()),
        (Some(listen), None) if !listen.ip().is_loopback() => Err(format!(
            "refusing to serve /metrics and /api/stats without a token on non-loopback admin address {listen}: set --admin-token"
        )),
        _ => Ok(()),
    }
}

/// Starts the admin server on `listen`; `make` builds the application's view for its handler,
/// `main` reads the main server's figures.
pub fn start<A, F>(listen: SocketAddr, main: Remote, make: F) -> io::Result<ServerHandle>
where
    A: Api + 'static,
    F: Fn() -> A + Send + Sync + 'static,
{
    let config = Config {
        listen,
        workers: 1,
        max_pending_handshakes: ADMIN_CONNECTIONS,
        max_connections: 1,
        drain_window: Duration::from_secs(1),
        ..Config::default()
    };
    Server::new(config).start(move || Admin { api: make(), main: main.clone() })
}

/// The admin server's handler.
struct Admin<A> {
    api: A,
    main: Remote,
}

impl<A: Api + 'static> Handler for Admin<A> {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &Request<'_>) -> Result<(), Reject> {
        Err(Reject::new(404, "the admin listener serves no WebSocket"))
    }

    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &mut (), _: Message) {}

    fn on_request(&mut self, _: &mut Ctx<'_>, request: &Request<'_>) -> Response {
        http::route_admin(&self.api, &self.main, request)
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let (loopback, public) = ("127.0.0.1:9090".parse().ok(), "0.0.0.0:9090".parse().ok());
        assert!(validate(None, None).is_ok() && validate(loopback, None).is_ok());
        assert!(validate(public, None).unwrap_err().contains("--admin-token"));
        assert!(validate(public, Some("t")).is_ok());
        assert!(validate(None, Some("")).unwrap_err().contains("empty"));
    }
}
