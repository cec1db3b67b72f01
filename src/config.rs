//! Every knob of the server in one struct, with its default and the trade-off it makes.
//!
//! Owns: `Config` and `Config::validate`. Must not: depend on any other module of this crate;
//! the reactor and the public API read it, nothing here reads them. Invariant: a `Config` that
//! passed `validate` cannot make the server hold unbounded memory or wait forever.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Server configuration. `Config::default()` is safe to expose to untrusted clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port (see
    /// `ServerHandle::local_addr`).
    pub listen: SocketAddr,
    /// Worker threads, each with its own poll loop and SO_REUSEPORT listener (the kernel spreads
    /// connections among them). Default 1 for the library; the `fanout` binary defaults to the
    /// CPUs available. At most 64.
    pub workers: usize,
    /// Open WebSocket connections the server admits in total; further upgrades get 503.
    /// Default 100,000. Check the process's file limit too (the binary raises it).
    pub max_connections: usize,
    /// Open WebSocket connections admitted from one IP address; 0 (default) for no limit.
    /// Behind a proxy every client has the proxy's address, so keep it 0 there.
    pub max_connections_per_ip: usize,
    /// Connections still sending their HTTP request (or idle between kept-alive requests),
    /// beyond which new TCP connections are closed unread. Default 10,000.
    pub max_pending_handshakes: usize,
    /// Kernel accept queue length. Default 4096: the common default of 128 drops SYNs when
    /// thousands of clients connect at once, and each drop costs the client a 1 s retransmit.
    pub listen_backlog: u32,
    /// Largest payload of one frame. Default 1 MiB. Checked from the header, before any memory is
    /// reserved; a longer frame closes the connection with 1009.
    pub max_frame_size: usize,
    /// Largest message (all fragments). Default 1 MiB. A larger one closes with 1009. This bounds
    /// what one connection can make the server buffer on the way in.
    pub max_message_size: usize,
    /// Bytes queued for one client before it counts as a slow consumer and is closed with 1008.
    /// Default 1 MiB. A single frame is always accepted into an empty queue, so the bound is this
    /// plus one message. Higher tolerates slower clients and costs memory under backpressure.
    pub max_queued_bytes: usize,
    /// What happens to a client over `max_queued_bytes`: `Close` (default) closes it with 1008
    /// "slow consumer"; `Drop` skips the data frames it cannot take (a gateway client sees the
    /// gap in `seq`). Pongs and close frames are never dropped: a client over the cap with one
    /// pending is closed under either policy.
    pub slow_consumer: SlowConsumerPolicy,
    /// Largest HTTP request head (request line and headers). Default 8 KiB; 431 beyond it.
    pub max_request_bytes: usize,
    /// Most headers in one request. Default 64 (at most 128); 431 beyond it.
    pub max_headers: usize,
    /// Largest body of a plain HTTP request. Default 64 KiB; 413 beyond it.
    pub max_body_bytes: usize,
    /// Time a client has to complete its upgrade request. Default 10 s: long enough for a slow
    /// mobile link, short enough that a slowloris attacker holds few sockets.
    pub handshake_timeout: Duration,
    /// Silence after which an open connection is closed with 1001. The server sends a ping after
    /// half of it, so a live client that only listens is never closed. Default 120 s; zero
    /// disables both. Shorter finds dead peers sooner and costs more pings.
    pub idle_timeout: Duration,
    /// How long the server waits for the peer to finish a close handshake (or to read an error
    /// response) before dropping the TCP connection. Default 5 s.
    pub close_timeout: Duration,
    /// How long a graceful stop takes at most: open connections get 1001 "going away" spread
    /// evenly over its first 80% (so clients do not all reconnect at once), and whatever is left
    /// at its end is dropped. Default 5 s.
    pub drain_window: Duration,
    /// Subprotocols the server speaks, in no particular order; the first one the client offers
    /// that is listed here is selected. Default empty (no `Sec-WebSocket-Protocol` is echoed).
    pub subprotocols: Vec<String>,
    /// PEM file with the server's certificate chain, leaf first. With `tls_key`, the server
    /// speaks TLS (rustls; TLS 1.2 and 1.3, ALPN `http/1.1`, session resumption by tickets and a
    /// session cache): on `listen`, or, when `tls_listen` is set, on that second address while
    /// `listen` stays plain. Default none (plain only). The files are read at start (a bad pair
    /// fails `Server::start`) and again by `ServerHandle::reload_tls` and the file watch.
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1). Default none.
    pub tls_key: Option<PathBuf>,
    /// A second address that serves TLS while `listen` stays plain. Default none: with a
    /// certificate, `listen` itself serves TLS. Port 0 picks a free port
    /// (`ServerHandle::tls_local_addr`).
    pub tls_listen: Option<SocketAddr>,
    /// How often the certificate and key files are checked for a change (size, time, inode);
    /// a changed pair is loaded for new handshakes, a broken one is logged and ignored. Default
    /// 5 s; zero disables the watch (`ServerHandle::reload_tls` still reloads).
    pub tls_watch_interval: Duration,
    /// permessage-deflate (RFC 7692). Default off. On, a client that offers the extension gets
    /// it without context takeover either way: each worker has one compressor and one inflater
    /// for all its connections, and a connection holds no compression state. A published
    /// message is compressed once per worker that has compressed subscribers, and the same
    /// compressed frame goes to each of them. Saves bandwidth on text such as JSON (a 1 KiB
    /// message shrinks to a third or so) for CPU per published message, not per subscriber.
    pub compression: bool,
    /// Messages shorter than this many bytes go uncompressed even to a client that negotiated
    /// compression (the RSV1 bit says, per message). Default 256: below it deflate saves a few
    /// bytes for a fixed cost. Messages that do not get shorter go uncompressed too.
    pub compression_threshold: usize,
    /// The compressor's level, 1 (fastest) to 9 (smallest). Default 1: a 1 KiB JSON event
    /// deflates to about 36% in about 6 us here (most of it the per-message reset that no context
    /// takeover costs); level 6 gets it to about 27% for about 15 us. A publish is compressed
    /// once per worker, so with many subscribers per publish a higher level costs little and
    /// saves bytes on every delivery; with mostly direct sends, keep it low.
    pub compression_level: u32,
    /// Peers whose word on the client's address is taken: the addresses of your reverse proxies
    /// and load balancers. From a trusted peer, the client address (for the per-address limits,
    /// the handshake rate, the logs and `Request::peer`) comes from its PROXY header
    /// (`proxy_protocol`), else from `X-Forwarded-For`, walked from the right past trusted hops
    /// (an entry that is no address falls back to the peer's own). From any other peer both
    /// are ignored: anyone can write them. Default empty: the TCP peer is the client. List only
    /// proxies you run; trusting more lets their clients pick any address.
    pub trusted_proxies: Vec<Cidr>,
    /// Expect the PROXY protocol header (version 1 or 2, detected) before the first byte of
    /// every connection from a `trusted_proxies` peer (HAProxy's `send-proxy`, an AWS NLB's
    /// proxy protocol). A trusted peer's connection without a valid one is closed unanswered,
    /// logged with the reason and counted (`proxy_header_errors`); `LOCAL` and `UNKNOWN` headers
    /// (health checks) keep the peer's address. Untrusted peers send no header: their bytes are
    /// HTTP (or TLS), so a PROXY line from one gets 400. Default off; needs `trusted_proxies`.
    pub proxy_protocol: bool,
    /// Upgrades one client address may start, as a token bucket: `count` per `per`, up to
    /// `burst` at once. Over it an upgrade gets 429 with `Retry-After` and is counted
    /// (`rejected_handshake_rate`). Blunts reconnect storms and scanners; plain HTTP requests
    /// are not limited. Default `None` (no limit): behind a proxy without `trusted_proxies`
    /// every client shares the proxy's address, and a NAT can hide thousands of clients.
    pub handshake_rate_per_ip: Option<RateLimit>,
    /// Client addresses the handshake rate remembers at most (about 50 bytes each). Default
    /// 65,536. When it is full, addresses whose bucket has refilled are forgotten first, then
    /// arbitrary ones: bounded memory wins over exactness when more addresses than this hurry.
    pub handshake_rate_max_addresses: usize,
    /// The coalescing window for publishes. Default zero: the frames published to a topic (or
    /// broadcast) within one loop turn go out together at the end of that turn. Above zero, a
    /// batch stays open for up to this long after its first frame, so that frames published
    /// over several turns share one write per subscriber: fewer syscalls per delivery, paid
    /// for with up to this much added latency on publishes (and never more than until the
    /// next 250 ms timer tick). Replies, pongs and close frames are never held: a reply may
    /// overtake a publish held for its connection (order holds per topic), and a close by the
    /// server sends what is held for the connection before its close frame. The worker's
    /// timer wakes it when a batch is due, to the microsecond. Under `SlowConsumerPolicy::Drop`
    /// a subscriber over its cap misses a whole batch, so up to a window's worth of messages at
    /// once. At most 100 ms.
    pub coalesce: Duration,
}

/// An IP network, `10.0.0.0/8` or `2001:db8::/32`; a bare address is one host (`/32`,
/// `/128`). An IPv4 network also matches the IPv4-mapped IPv6 form of its addresses
/// (`::ffff:10.0.0.1`), which a dual-stack listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits (the rest are cleared). An error when
    /// the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        // `::ffff:a.b.c.d/112` is the IPv4 network `a.b.c.d/16`.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => (addr.to_canonical(), prefix - 96),
            _ => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(v4) if prefix <= 32 => {
                IpAddr::V4((u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)).into())
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                IpAddr::V6((u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)).into())
            }
            other => return Err(format!("prefix /{prefix} is too long for {other}")),
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip.to_canonical(), self.prefix).is_ok_and(|c| c.network == self.network)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is no IP address or network"))?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| format!("{text:?}: bad prefix length"))?,
            None if addr.to_canonical().is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).map_err(|e| format!("{text:?}: {e}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A token bucket's rate: `count` events per `per`, and up to `burst` at once. Written
/// `20/s`, `600/m` or `1/h`, with the burst after a colon (`20/s:40`); without one the burst is
/// `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Events per `per`, on average.
    pub count: u32,
    /// The period `count` is spread over.
    pub per: Duration,
    /// Events allowed back to back after a quiet spell.
    pub burst: u32,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<RateLimit, String> {
        let bad = || format!("{text:?}: expected COUNT/UNIT[:BURST] with UNIT s, m or h (e.g. 20/s:40)");
        let (rate, burst) = match text.trim().split_once(':') {
            Some((rate, burst)) => (rate, Some(burst.parse::<u32>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count = count.parse::<u32>().map_err(|_| bad())?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(RateLimit { count, per, burst: burst.unwrap_or(count) })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}:{}", self.count, self.burst)
    }
}

/// See `Config::slow_consumer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the client with 1008 "slow consumer" (the default).
    #[default]
    Close,
    /// Skip the data frames it cannot take.
    Drop,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            max_pending_handshakes: 10_000,
            listen_backlog: 4096,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            max_queued_bytes: 1 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
            max_request_bytes: 8 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            close_timeout: Duration::from_secs(5),
            drain_window: Duration::from_secs(5),
            subprotocols: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_listen: None,
            tls_watch_interval: Duration::from_secs(5),
            compression: false,
            compression_threshold: 256,
            compression_level: 1,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            handshake_rate_per_ip: None,
            handshake_rate_max_addresses: 65_536,
            coalesce: Duration::ZERO,
        }
    }
}

impl Config {
    /// The longest `coalesce` accepted: beyond it, publishes would wait longer than any
    /// interactive use tolerates.
    pub const MAX_COALESCE: Duration = Duration::from_millis(100);

    /// Checks the settings against each other; the error names the setting and the reason.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_frame_size", self.max_frame_size),
            ("max_message_size", self.max_message_size),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_request_bytes", self.max_request_bytes),
            ("max_headers", self.max_headers),
            ("listen_backlog", self.listen_backlog as usize),
            ("max_connections", self.max_connections),
            ("max_pending_handshakes", self.max_pending_handshakes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(format!("workers must be between 1 and 64, got {}", self.workers));
        }
        if self.max_headers > 128 {
            return Err("max_headers must be at most 128".into());
        }
        if self.max_frame_size > self.max_message_size {
            return Err(format!(
                "max_frame_size ({}) must not exceed max_message_size ({})",
                self.max_frame_size, self.max_message_size
            ));
        }
        if (self.max_message_size as u64) > (1u64 << 40) {
            return Err("max_message_size must be at most 1 TiB".into());
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("close_timeout", self.close_timeout),
            ("drain_window", self.drain_window),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if !(1..=9).contains(&self.compression_level) {
            return Err(format!("compression_level must be between 1 and 9, got {}", self.compression_level));
        }
        if self.coalesce > Self::MAX_COALESCE {
            return Err(format!(
                "coalesce must be at most {} ms, got {:?}",
                Self::MAX_COALESCE.as_millis(),
                self.coalesce
            ));
        }
        if self.subprotocols.iter().any(|p| p.is_empty() || p.contains([',', ' ', '\r', '\n'])) {
            return Err("subprotocols must be non-empty tokens without commas or spaces".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => return Err("tls_cert and tls_key go together: set both".into()),
            (None, None) if self.tls_listen.is_some() => {
                return Err("tls_listen needs a certificate: set tls_cert and tls_key".into())
            }
            _ => {}
        }
        if self.tls_listen.is_some_and(|tls| tls == self.listen && tls.port() != 0) {
            return Err(format!("tls_listen must differ from listen ({})", self.listen));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err("proxy_protocol needs trusted_proxies: the header is read from trusted peers only".into());
        }
        if let Some(rate) = self.handshake_rate_per_ip {
            if rate.count == 0 || rate.burst == 0 || rate.per.is_zero() {
                return Err(format!("handshake_rate_per_ip {rate}: count, burst and period must be positive"));
            }
            if rate.per.as_nanos() < u128::from(rate.count) {
                return Err(format!("handshake_rate_per_ip {rate}: more than one per nanosecond"));
            }
            if self.handshake_rate_max_addresses == 0 {
                return Err("handshake_rate_max_addresses must be greater than 0".into());
            }
        }
        Ok(())
    }

    /// True when the server speaks TLS, on `listen` or on `tls_listen`.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases: Vec<(Config, &str)> = vec![
            (Config { max_frame_size: 0, ..Config::default() }, "max_frame_size"),
            (Config { max_queued_bytes: 0, ..Config::default() }, "max_queued_bytes"),
            (Config { max_headers: 500, ..Config::default() }, "max_headers"),
            (Config { max_frame_size: 2 << 20, ..Config::default() }, "max_frame_size"),
            (Config { handshake_timeout: Duration::ZERO, ..Config::default() }, "handshake_timeout"),
            (Config { subprotocols: vec!["a,b".into()], ..Config::default() }, "subprotocols"),
            (Config { tls_cert: Some("c.pem".into()), ..Config::default() }, "tls_key"),
            (Config { tls_listen: Some("127.0.0.1:8443".parse().unwrap()), ..Config::default() }, "tls_listen"),
            (Config { compression_level: 0, ..Config::default() }, "compression_level"),
            (Config { compression_level: 10, ..Config::default() }, "compression_level"),
            (Config { proxy_protocol: true, ..Config::default() }, "trusted_proxies"),
            (
                Config {
                    handshake_rate_per_ip: Some(RateLimit { count: 0, per: Duration::from_secs(1), burst: 1 }),
                    ..Config::default()
                },
                "handshake_rate_per_ip",
            ),
            (
                Config {
                    handshake_rate_per_ip: Some("1/s".parse().unwrap()),
                    handshake_rate_max_addresses: 0,
                    ..Config::default()
                },
                "handshake_rate_max_addresses",
            ),
            (Config { coalesce: Duration::from_millis(101), ..Config::default() }, "coalesce"),
        ];
        for (config, name) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn networks_parse_and_match_their_addresses_only() {
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            ("10.0.0.0/8", "10.0.0.0/8", &["10.0.0.1", "10.255.255.255", "::ffff:10.1.2.3"], &["11.0.0.1", "::1"]),
            ("10.1.2.3/8", "10.0.0.0/8", &["10.9.9.9"], &["9.255.255.255"]),
            ("127.0.0.1", "127.0.0.1/32", &["127.0.0.1"], &["127.0.0.2"]),
            ("0.0.0.0/0", "0.0.0.0/0", &["1.2.3.4", "255.255.255.255"], &["::2"]),
            ("2001:db8::/32", "2001:db8::/32", &["2001:db8:1::5"], &["2001:db9::1", "10.0.0.1"]),
            ("::1", "::1/128", &["::1"], &["::2"]),
            ("::ffff:192.168.0.0/112", "192.168.0.0/16", &["192.168.3.4", "::ffff:192.168.0.9"], &["192.169.0.1"]),
        ];
        for (text, shown, inside, outside) in cases {
            let cidr: Cidr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cidr.to_string(), *shown);
            for ip in *inside {
                assert!(cidr.contains(ip.parse().unwrap()), "{text} contains {ip}");
            }
            for ip in *outside {
                assert!(!cidr.contains(ip.parse().unwrap()), "{text} excludes {ip}");
            }
        }
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/x", "example.com", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_parse_with_and_without_a_burst() {
        let rate: RateLimit = "20/s:40".parse().unwrap();
        assert_eq!(rate, RateLimit { count: 20, per: Duration::from_secs(1), burst: 40 });
        assert_eq!("600/m".parse::<RateLimit>().unwrap().burst, 600);
        assert_eq!("1/h".parse::<RateLimit>().unwrap().per, Duration::from_secs(3600));
        assert_eq!(rate.to_string().parse::<RateLimit>().unwrap(), rate);
        for bad in ["20", "20/d", "x/s", "20/s:", "20/s:x", "-1/s"] {
            assert!(bad.parse::<RateLimit>().unwrap_err().contains("COUNT/UNIT"), "{bad}");
        }
    }
}
