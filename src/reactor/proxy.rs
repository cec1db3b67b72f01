//! The client's address behind a trusted proxy: the PROXY header a trusted peer's connection
//! starts with (`Config::proxy_protocol`), and `X-Forwarded-For` on its requests.
//!
//! Owns: whether an accepted connection owes a PROXY header, taking that header off the front
//! of the first bytes (plain or TLS records alike: it precedes both), and the client address a
//! request is acted on for (`client_addr`: admission, the handshake rate, logs, the handler's
//! `Request::peer`). Must not: parse the header or the HTTP field itself (`proto::proxy` does).
//! Invariants: only a peer in `trusted_proxies` is ever believed, and only about the hop before
//! it; a connection owing a header passes no byte to HTTP or TLS until the header is whole; a
//! malformed header closes the connection unanswered (a proxy would relay an answer to a client
//! that asked nothing), logged with its reason and counted in `proxy_header_errors`.

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes};

use super::read_buf::ReadBuf;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::config::Cidr;
use crate::proto::{forwarded_client, parse_proxy_header, Request, Status};

/// What became of a connection's first bytes when a PROXY header was owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderStep {
    /// No header is (or is any longer) owed: the bytes left are HTTP or TLS.
    Ready,
    /// The header is incomplete; its bytes stay in the buffer for the next read.
    Wait,
    /// The header was malformed and the connection is closing: stop reading.
    Closed,
}

/// Whether `ip` is one of the trusted proxies.
pub(super) fn trusted(proxies: &[Cidr], ip: IpAddr) -> bool {
    proxies.iter().any(|cidr| cidr.contains(ip))
}

impl<S: Service> Worker<S> {
    /// Whether a connection from `peer` must start with a PROXY header.
    pub(super) fn owes_proxy_header(&self, peer: SocketAddr) -> bool {
        self.limits.proxy_protocol && trusted(&self.limits.trusted_proxies, peer.ip())
    }

    /// Takes the PROXY header connection `id` owes off the front of `buf`, keeping the source
    /// it names for `client_addr`.
    pub(super) fn take_proxy_header(&mut self, id: ConnId, buf: &mut ReadBuf) -> HeaderStep {
        if !self.limits.proxy_protocol {
            return HeaderStep::Ready;
        }
        let max = self.limits.http.max_request_bytes;
        let Some(conn) = get(&mut self.conns, id) else {
            return HeaderStep::Closed;
        };
        if !conn.proxy_header {
            return HeaderStep::Ready;
        }
        let mut data = buf.take_filled();
        match parse_proxy_header(&data, max) {
            Ok(Status::Partial) => {
                buf.give_back(data);
                HeaderStep::Wait
            }
            Ok(Status::Complete(header)) => {
                conn.proxy_header = false;
                if let Some(source) = header.source {
                    conn.hop = Some(Box::new(source));
                }
                data.advance(header.len);
                buf.give_back(data);
                HeaderStep::Ready
            }
            Err(e) => {
                conn.proxy_header = false;
                let peer = conn.hop.as_deref().map_or_else(|| "?".to_owned(), ToString::to_string);
                log::warn!("connection from proxy {peer} closed: {e}");
                self.metrics.proxy_header_errors.add(1);
                self.finish_with(id, Bytes::new());
                HeaderStep::Closed
            }
        }
    }

    /// The client connection `id`'s `request` comes from: the TCP peer, or the source its PROXY
    /// header named, then, when that hop is a trusted proxy, what `X-Forwarded-For` says
    /// (`proto::forwarded_client`). The hop is the one `accept` returned, kept in the HTTP phase;
    /// `None` only for a connection past it whose socket has no peer any more (it was reset).
    pub(super) fn client_addr(&mut self, id: ConnId, request: &Request) -> Option<SocketAddr> {
        let conn = get(&mut self.conns, id)?;
        let hop = match conn.hop.as_deref() {
            Some(hop) => *hop,
            None => conn.stream.peer_addr().ok()?,
        };
        let proxies = &self.limits.trusted_proxies;
        if proxies.is_empty() {
            return Some(hop);
        }
        let values = request.header_values("x-forwarded-for");
        let client = forwarded_client(values, hop, |ip| trusted(proxies, ip));
        if client != hop {
            log::trace!("connection {id}: client {client} by X-Forwarded-For from {hop}");
        }
        // A dual-stack listener's `::ffff:a.b.c.d` and a header's `a.b.c.d` are one client.
        Some(SocketAddr::new(client.ip().to_canonical(), client.port()))
    }
}
