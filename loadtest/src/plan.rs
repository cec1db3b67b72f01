//! Who does what and where: how connections and message budgets are split across child processes
//! and reactor threads, which source and destination address each connection uses, and the
//! target every connection goes to.
//!
//! Owns: `split`, `Share`, `AddrPlan`, `Endpoint` (one server: addresses, `Host`, path) and
//! `Target` (the endpoints, which connection goes to which, extra headers and the handshake
//! timeout; built by `cli`, read by `net`). Pure arithmetic and plain data, no I/O and no other
//! module of ours, so the splits are unit-tested and every layer may use them.
//! Invariant: every connection has one global index in `0..conns`, the same whichever process or
//! thread opens it, so address spreading, the server a connection goes to and per-connection
//! roles (the publisher is connection 0 or `conns`, the slow subscribers are spread evenly) do not
//! depend on how the work was split.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

/// `total` split into `parts` contiguous ranges whose sizes differ by at most one, larger first.
pub fn split(total: u64, parts: usize) -> Vec<Range<u64>> {
    let parts = parts.max(1) as u64;
    let (base, extra) = (total / parts, total % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// The part of the run one reactor thread owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Global indices of the connections this thread opens.
    pub conns: Range<u64>,
    /// Messages this thread may send (`u64::MAX` when unbounded).
    pub messages: u64,
    /// Connections per second this thread opens (0 = as fast as allowed).
    pub ramp: f64,
    /// Connects this thread may have outstanding at once.
    pub max_pending: usize,
    /// Whether this is the first thread of the first process (home of a single publisher).
    pub first: bool,
    /// 0-based index of this thread across the whole run.
    pub index: usize,
}

/// Splits the run for process `process` of `processes`, each with `threads` reactor threads.
///
/// The ramp and the cap on outstanding connects are run-wide figures, so each thread gets its
/// fraction; the cap never drops below one or nothing would connect.
pub fn shares(
    conns: u64,
    messages: Option<u64>,
    ramp: f64,
    max_pending: usize,
    processes: usize,
    threads: usize,
    process: usize,
) -> Vec<Share> {
    let processes = processes.max(1);
    let threads = threads.max(1);
    let workers = processes * threads;
    let proc_conns = split(conns, processes)[process].clone();
    let proc_msgs = messages.map(|m| split(m, processes)[process].end - split(m, processes)[process].start);
    let thread_conns = split(proc_conns.end - proc_conns.start, threads);
    let thread_msgs = proc_msgs.map(|m| split(m, threads));
    (0..threads)
        .map(|t| Share {
            conns: proc_conns.start + thread_conns[t].start..proc_conns.start + thread_conns[t].end,
            messages: thread_msgs.as_ref().map_or(u64::MAX, |m| m[t].end - m[t].start),
            ramp: ramp / workers as f64,
            max_pending: (max_pending / workers).max(1),
            first: process == 0 && t == 0,
            index: process * threads + t,
        })
        .collect()
}

/// Source and destination addresses by global connection index.
///
/// Linux picks an ephemeral port per (source address, destination address, destination port)
/// tuple, about 28k of them, and TIME_WAIT sockets hold theirs for a minute. Spreading over
/// 127.0.0.1..=127.0.0.N keeps each tuple under ~10k connections. A server listening on
/// 127.0.0.1 accepts only that destination, so for it only the source is spread; with the URL
/// host 0.0.0.0 (the server listens on every address) destinations are spread too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPlan {
    pub host: Ipv4Addr,
    pub port: u16,
    /// Number of 127.0.0.x addresses to use (1 = no spreading).
    pub addrs: u32,
}

impl AddrPlan {
    /// The (source, destination) pair of connection `index`. `None` as the source means "let the
    /// kernel choose", which is what a single address needs.
    pub fn for_conn(&self, index: u64) -> (Option<SocketAddr>, SocketAddr) {
        let spread_dst = self.host.is_unspecified();
        let dst_host = if spread_dst { Ipv4Addr::LOCALHOST } else { self.host };
        if self.addrs <= 1 || !self.host.is_loopback() && !spread_dst {
            return (None, SocketAddr::V4(SocketAddrV4::new(dst_host, self.port)));
        }
        let i = (index % u64::from(self.addrs)) as u32;
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + i);
        let src = SocketAddr::V4(SocketAddrV4::new(addr, 0));
        let dst = if spread_dst { addr } else { dst_host };
        (Some(src), SocketAddr::V4(SocketAddrV4::new(dst, self.port)))
    }
}

/// One server: where its connections go and what their upgrade request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addrs: AddrPlan,
    /// `Host` header value (`127.0.0.1:9001`).
    pub host: String,
    /// Request target (`/`, `/ws?x=1`).
    pub path: String,
    /// The name the server's certificate is checked against, for a `wss://` URL.
    pub tls: Option<ServerName<'static>>,
}

/// Where connections go and what their upgrade request says.
#[derive(Debug, Clone)]
pub struct Target {
    /// One per `--url`, never empty: connection `i` goes to `endpoints[i % len]`.
    pub endpoints: Vec<Endpoint>,
    /// broadcast's publisher (fanout and Pusher dialects): its connections, global indices from
    /// the first of the pair on (after the subscribers'), go to the second (`--publish-url`, or
    /// the first `--url`) whatever the round robin would say.
    pub publisher: Option<(u64, Endpoint)>,
    pub headers: Vec<(String, String)>,
    pub handshake_timeout: Duration,
    /// How `wss://` endpoints speak TLS; set when any endpoint is one.
    pub tls: Option<Arc<ClientConfig>>,
}

impl Target {
    /// The server connection `index` goes to.
    pub fn endpoint(&self, index: u64) -> &Endpoint {
        match &self.publisher {
            Some((from, e)) if index >= *from => e,
            _ => &self.endpoints[(index % self.endpoints.len() as u64) as usize],
        }
    }
}

/// Whether connection `index` of `total` is one of the `slow` ones: spread evenly over the
/// global range so every process and thread gets its fair part of them.
pub fn is_slow(index: u64, total: u64, slow: u64) -> bool {
    if slow == 0 || total == 0 {
        return false;
    }
    // Exactly `slow` indices cross a multiple of `total` in (index * slow) as index grows.
    (index * slow) / total != ((index + 1) * slow) / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_contiguous_and_balanced() {
        assert_eq!(split(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(split(2, 4), vec![0..1, 1..2, 2..2, 2..2]);
        assert_eq!(split(0, 2), vec![0..0, 0..0]);
        assert_eq!(split(5, 0), vec![0..5]);
        for total in 0..50 {
            for parts in 1..8 {
                let s = split(total, parts);
                assert_eq!(s.len(), parts);
                assert_eq!(s.first().unwrap().start, 0);
                assert_eq!(s.last().unwrap().end, total);
                assert!(s.windows(2).all(|w| w[0].end == w[1].start));
                let sizes: Vec<u64> = s.iter().map(|r| r.end - r.start).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn shares_cover_every_connection_once_across_processes_and_threads() {
        let (conns, procs, threads) = (1003, 3, 2);
        let mut seen = vec![0u8; conns as usize];
        let mut msgs = 0;
        let mut firsts = 0;
        let mut indices = Vec::new();
        for p in 0..procs {
            for s in shares(conns, Some(100), 600.0, 2000, procs, threads, p) {
                for i in s.conns.clone() {
                    seen[i as usize] += 1;
                }
                msgs += s.messages;
                firsts += usize::from(s.first);
                indices.push(s.index);
                assert_eq!(s.ramp, 100.0);
                assert_eq!(s.max_pending, 333);
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert_eq!(msgs, 100);
        assert_eq!(firsts, 1);
        assert_eq!(indices, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn unbounded_messages_and_tiny_pending_caps() {
        let s = shares(10, None, 0.0, 3, 2, 4, 1);
        assert!(s.iter().all(|s| s.messages == u64::MAX && s.max_pending == 1));
        assert!(s.iter().all(|s| !s.first));
    }

    #[test]
    fn addresses_spread_the_source_on_127_0_0_1_and_both_on_0_0_0_0() {
        let lo = AddrPlan { host: Ipv4Addr::LOCALHOST, port: 9001, addrs: 4 };
        let (src, dst) = lo.for_conn(6);
        assert_eq!(src, Some("127.0.0.3:0".parse().unwrap()));
        assert_eq!(dst, "127.0.0.1:9001".parse().unwrap());
        let any = AddrPlan { host: Ipv4Addr::UNSPECIFIED, ..lo.clone() };
        let (src, dst) = any.for_conn(7);
        assert_eq!(src, Some("127.0.0.4:0".parse().unwrap()));
        assert_eq!(dst, "127.0.0.4:9001".parse().unwrap());
        let single = AddrPlan { addrs: 1, ..lo };
        assert_eq!(single.for_conn(5).0, None);
    }

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            addrs: AddrPlan { host: Ipv4Addr::LOCALHOST, port, addrs: 1 },
            host: format!("127.0.0.1:{port}"),
            path: "/".into(),
            tls: None,
        }
    }

    #[test]
    fn connections_go_round_robin_over_the_endpoints_and_the_publisher_to_its_own() {
        let (a, b, p) = (endpoint(1), endpoint(2), endpoint(3));
        let mut t = Target {
            endpoints: vec![a.clone()],
            publisher: None,
            headers: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
            tls: None,
        };
        assert!((0..10).all(|i| t.endpoint(i) == &a));
        t.endpoints.push(b.clone());
        let ports: Vec<u16> = (0..5).map(|i| t.endpoint(i).addrs.port).collect();
        assert_eq!(ports, [1, 2, 1, 2, 1]);
        t.publisher = Some((4, p.clone()));
        assert_eq!(t.endpoint(3), &b);
        assert_eq!((t.endpoint(4), t.endpoint(7)), (&p, &p));
    }

    #[test]
    fn slow_connections_are_spread_evenly() {
        let slow: Vec<u64> = (0..10).filter(|&i| is_slow(i, 10, 3)).collect();
        assert_eq!(slow.len(), 3);
        assert_eq!((0..1000).filter(|&i| is_slow(i, 1000, 7)).count(), 7);
        assert_eq!((0..5).filter(|&i| is_slow(i, 5, 5)).count(), 5);
        assert!(!(0..5).any(|i| is_slow(i, 5, 0)));
    }
}
