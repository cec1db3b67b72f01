//! Command line -> `Config`: the top of the crate, next to `main`.
//!
//! Owns: `Cli` (the clap parser whose subcommands are `config::Scenario`), `Config::from_cli`
//! (per-scenario defaults, validation, warnings, the `plan::Target` from the URLs and headers),
//! URL parsing and the open-files check. Children are started with the parent's own arguments plus
//! the hidden `--child-index` and `--epoch-ns`, so every process parses the same command line and
//! computes its own share of the work from it. Must not: run anything; no other module imports
//! this one, and the types it fills live in `config` and `plan`.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use clap::Parser;

use crate::config::{BroadcastArgs, Config, Scenario, SlowArgs, SoakArgs, Via, Wire};
use crate::plan::{AddrPlan, Endpoint, Target};
use crate::pusher;
use crate::tls;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "fanout-load",
    version,
    about = "WebSocket load generator: measures fanout or any other WebSocket server from outside.",
    after_help = "Each scenario is bounded by --duration and --messages and exits by itself. See loadtest/README.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

impl Config {
    pub fn from_cli(cli: Cli, args: Vec<String>) -> Result<Config, String> {
        let scenario = cli.scenario;
        let common = scenario.common().clone();
        let mut warnings = Vec::new();
        let conns = common.conns.unwrap_or(match &scenario {
            Scenario::Connect(_) => u64::MAX / 4,
            Scenario::Idle(_) => 1000,
            Scenario::Shootout(_) => 19_000,
            Scenario::Soak(_) => 400,
            _ => 100,
        });
        if common.threads == 0 || common.processes == 0 {
            return Err("--threads and --processes must be at least 1".into());
        }
        if !(common.bound_pct > 0.0 && common.bound_pct <= 100.0) {
            return Err("--bound-pct must be in (0, 100]".into());
        }
        if common.server_cores.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return Err("--server-cores must be above 0".into());
        }
        if common.addrs == 0 || common.addrs > 254 {
            return Err("--addrs must be in 1..=254".into());
        }
        match &scenario {
            Scenario::Broadcast(b) | Scenario::Slow(SlowArgs { broadcast: b, .. }) => check_broadcast(b, conns)?,
            Scenario::Echo(e) if e.in_flight == 0 => return Err("--in-flight must be at least 1".into()),
            Scenario::N2(n) if !(0.0..=100_000.0).contains(&n.rate) => {
                return Err("--rate must be in 0..=100000 iterations per second".into())
            }
            Scenario::Echo(e) if !(0.0..=100_000_000.0).contains(&e.rate) => {
                return Err("--rate must be in 0..=100000000 messages per second".into())
            }
            Scenario::Soak(s) => check_soak(s, &common)?,
            _ => {}
        }
        if let Scenario::Slow(s) = &scenario {
            if s.slow >= conns {
                return Err("--slow must be less than --conns".into());
            }
        }
        // A Pusher server takes its WebSocket clients at /app/KEY; a URL with its own path keeps
        // it.
        let pusher_key = match &scenario {
            Scenario::Broadcast(b) | Scenario::Slow(SlowArgs { broadcast: b, .. }) if b.protocol == Wire::Pusher => {
                b.app_key.as_deref()
            }
            _ => None,
        };
        let endpoint = |url: &str| -> Result<Endpoint, String> {
            let (host, port, host_header, mut path, tls) = parse_url(url)?;
            if let (Some(key), "/") = (pusher_key, path.as_str()) {
                path = pusher::ws_path(key);
            }
            let tls = if tls { Some(tls::server_name(&host_header)?) } else { None };
            Ok(Endpoint { addrs: AddrPlan { host, port, addrs: common.addrs }, host: host_header, path, tls })
        };
        let endpoints = common.urls.iter().map(|u| endpoint(u)).collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("--url: at least one server".into());
        }
        let publisher = match &scenario {
            Scenario::Broadcast(b) | Scenario::Slow(SlowArgs { broadcast: b, .. }) if b.protocol != Wire::Raw => {
                let e = match &b.publish_url {
                    Some(u) => endpoint(&ws_url(u))?,
                    None => endpoints[0].clone(),
                };
                // The subscribers are 0..conns, the publisher's connections follow them.
                Some((conns, e))
            }
            _ => None,
        };
        let mut headers = Vec::new();
        for h in &common.headers {
            let (n, v) = h.split_once(':').ok_or_else(|| format!("--header {h:?}: expected `Name: value`"))?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        if common.compression {
            headers.push(("Sec-WebSocket-Extensions".to_owned(), "permessage-deflate".to_owned()));
        }
        let per_process = conns.min(u64::MAX / 4) / common.processes as u64;
        if !matches!(scenario, Scenario::Connect(_)) {
            if let Some(limit) = open_files_limit() {
                if per_process + 64 > limit {
                    warnings.push(format!(
                        "{per_process} connections per process but this process may open only {limit} files: use --processes"
                    ));
                }
            }
            let per_tuple = conns / u64::from(common.addrs) / endpoints.len() as u64;
            if per_tuple > 20_000 {
                warnings
                    .push(format!("{per_tuple} connections per address tuple (of ~28k ephemeral ports): use --addrs"));
            }
        }
        let tls = match endpoints.iter().any(|e| e.tls.is_some()) {
            true => Some(tls::client_config(common.tls_ca.as_deref(), common.tls_insecure, common.tls_resume)?),
            false if common.tls_ca.is_some() || common.tls_insecure || common.tls_resume => {
                return Err("--tls-ca, --tls-insecure and --tls-resume are for wss:// URLs".into())
            }
            false => None,
        };
        if let Some((_, e)) = &publisher {
            if e.tls.is_some()
                && matches!(&scenario, Scenario::Broadcast(b) | Scenario::Slow(SlowArgs { broadcast: b, .. }) if b.via() == Via::Http)
            {
                return Err("--via http publishes over plain HTTP: give --publish-url http://...".into());
            }
        }
        let target =
            Arc::new(Target { endpoints, publisher, headers, handshake_timeout: common.handshake_timeout, tls });
        Ok(Config { scenario, common, conns, target, args, warnings })
    }
}

/// The broadcast flags that must go together.
fn check_broadcast(b: &BroadcastArgs, conns: u64) -> Result<(), String> {
    match (b.protocol, b.via()) {
        (Wire::Raw, Via::Http) => {
            return Err("--via http needs --protocol fanout or pusher (a raw server has no HTTP API)".into())
        }
        (Wire::Pusher, Via::Ws) => return Err("--protocol pusher publishes through the HTTP API: drop --via ws".into()),
        _ => {}
    }
    if b.protocol == Wire::Raw && conns == 0 {
        return Err("--protocol raw needs at least one connection (it publishes)".into());
    }
    if b.protocol == Wire::Raw && b.publish_url.is_some() {
        return Err("--publish-url needs --protocol fanout or pusher (raw publishes from connection 0)".into());
    }
    if b.http_conns == 0 || b.http_conns > 1000 {
        return Err("--http-conns must be in 1..=1000".into());
    }
    if b.http_conns > 1 && b.via() != Via::Http {
        return Err("--http-conns is for --via http and --protocol pusher".into());
    }
    let app = [("--app-id", &b.app_id), ("--app-key", &b.app_key), ("--app-secret", &b.app_secret)];
    if b.protocol == Wire::Pusher {
        for (flag, value) in app {
            let Some(v) = value else {
                return Err(format!("--protocol pusher needs {flag}"));
            };
            // They go into a path and a query as they are, and are signed as they are.
            if v.is_empty() || !v.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.~".contains(&c)) {
                return Err(format!("{flag} {v:?}: expected letters, digits and -_.~"));
            }
        }
    } else if let Some((flag, _)) = app.iter().find(|(_, v)| v.is_some()) {
        return Err(format!("{flag} is for --protocol pusher"));
    }
    Ok(())
}

/// The soak's flags that must hold: it runs in this one process and judges one server.
fn check_soak(s: &SoakArgs, common: &crate::config::Common) -> Result<(), String> {
    if common.processes != 1 {
        return Err("soak runs in one process: use --threads".into());
    }
    if common.server_pids.len() != 1 {
        return Err("soak needs the server's pid once (--server-pid): its RSS and fds are sampled".into());
    }
    if common.urls.len() != 1 {
        return Err("soak takes one --url (its HTTP API is the same host and port)".into());
    }
    if s.channels == 0 || s.channels > 1000 {
        return Err("--channels must be in 1..=1000".into());
    }
    for (flag, v) in [("--rate", s.rate), ("--churn-rate", s.churn_rate), ("--malformed-rate", s.malformed_rate)] {
        if !(0.0..=100_000.0).contains(&v) {
            return Err(format!("{flag} must be in 0..=100000 per second"));
        }
    }
    if !(0.0..=50.0).contains(&s.slow_percent) {
        return Err("--slow-percent must be in 0..=50".into());
    }
    if s.sample_every.is_zero() || s.sample_every * 6 > common.duration {
        return Err(
            "--sample-every must be positive and at most a sixth of --duration (the check needs samples)".into()
        );
    }
    if s.warmup.is_some_and(|w| w >= common.duration) {
        return Err("--warmup must be shorter than --duration".into());
    }
    if s.api_key.is_empty() || s.api_key.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("--api-key: expected a non-empty token without spaces".into());
    }
    Ok(())
}

/// `ws://host[:port][/path]` or `wss://...` -> (address, port, Host header, request target, TLS).
pub fn parse_url(url: &str) -> Result<(Ipv4Addr, u16, String, String, bool), String> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(format!("{url:?}: expected ws://host:port/path or wss://")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let ip = match host.parse::<Ipv4Addr>() {
        Ok(ip) => ip,
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .find_map(|a| match a {
                SocketAddr::V4(v4) => Some(*v4.ip()),
                SocketAddr::V6(_) => None,
            })
            .ok_or_else(|| format!("{host}: no IPv4 address"))?,
    };
    Ok((ip, port, authority.to_owned(), path, tls))
}

/// `--publish-url` takes the HTTP API's own scheme too: `http://H:P/` is `ws://H:P/`.
fn ws_url(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        None => url.to_owned(),
    }
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:9001/").unwrap(),
            (Ipv4Addr::LOCALHOST, 9001, "127.0.0.1:9001".into(), "/".into(), false)
        );
        assert_eq!(parse_url("ws://127.0.0.1:8080/ws?token=x").unwrap().3, "/ws?token=x");
        assert_eq!(parse_url("ws://127.0.0.1:8080?a=1").unwrap().3, "/?a=1");
        assert_eq!(parse_url("ws://0.0.0.0").unwrap().0, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parse_url("ws://localhost:1/").unwrap().0, Ipv4Addr::LOCALHOST);
        assert_eq!(
            parse_url("wss://127.0.0.1/x").unwrap(),
            (Ipv4Addr::LOCALHOST, 443, "127.0.0.1".into(), "/x".into(), true)
        );
        assert!(parse_url("http://127.0.0.1/").is_err());
        assert!(parse_url("http://x/").is_err());
        assert!(parse_url("ws://127.0.0.1:99999/").is_err());
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        Config::from_cli(cli, args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn defaults_and_validation() {
        let c = config(&["fanout-load", "echo"]).unwrap();
        assert_eq!((c.conns, c.common.payload), (100, 64));
        assert_eq!(c.common.duration, Duration::from_secs(10));
        let c = config(&["fanout-load", "idle", "--conns", "500", "--duration", "500ms"]).unwrap();
        assert_eq!((c.conns, c.run_phase()), (500, 10));
        let c = config(&["fanout-load", "connect", "--rate", "300"]).unwrap();
        assert_eq!(c.ramp(), 300.0);
        // n2 and shootout spread like the others (their rounds are phases of the run).
        assert!(config(&["fanout-load", "n2", "--processes", "2", "--threads", "2"]).is_ok());
        assert!(config(&["fanout-load", "shootout", "--threads", "2"]).is_ok());
        assert!(config(&["fanout-load", "n2", "--rate", "50"]).is_ok());
        assert!(config(&["fanout-load", "n2", "--rate", "-1"]).is_err());
        assert!(config(&["fanout-load", "n2", "--rate", "NaN"]).is_err());
        assert!(config(&["fanout-load", "echo", "--rate", "1000"]).is_ok());
        assert!(config(&["fanout-load", "echo", "--rate", "-5"]).is_err());
        assert!(config(&["fanout-load", "echo", "--bound-pct", "0"]).is_err());
        assert!(config(&["fanout-load", "broadcast", "--protocol", "raw", "--via", "http"]).is_err());
        assert!(config(&["fanout-load", "broadcast", "--http-conns", "2"]).is_err());
        assert!(config(&["fanout-load", "slow", "--conns", "3", "--slow", "3"]).is_err());
        assert!(config(&["fanout-load", "echo", "--header", "nocolon"]).is_err());
        let c = config(&[
            "fanout-load",
            "echo",
            "--header",
            "Authorization: Bearer x",
            "--child-index",
            "1",
            "--epoch-ns",
            "5",
        ])
        .unwrap();
        assert_eq!(c.target.headers, vec![("Authorization".into(), "Bearer x".into())]);
        assert_eq!((c.common.child_index, c.common.epoch_ns), (Some(1), Some(5)));
    }

    #[test]
    fn pusher_needs_its_app_and_publishes_over_http() {
        let app = ["--app-id", "1", "--app-key", "k-1", "--app-secret", "s"];
        let with = |extra: &[&str]| {
            let mut args = vec!["fanout-load", "broadcast", "--url", "ws://127.0.0.1:6001/", "--protocol", "pusher"];
            args.extend_from_slice(extra);
            config(&args)
        };
        let c = with(&app).unwrap();
        assert_eq!(c.target.endpoints[0].path, pusher::ws_path("k-1"));
        let Scenario::Broadcast(b) = &c.scenario else { panic!("a broadcast") };
        assert_eq!((b.via(), b.publisher_conns()), (Via::Http, 1));
        let c = with(&[&app[..], &["--http-conns", "4", "--via", "http"]].concat()).unwrap();
        let Scenario::Broadcast(b) = &c.scenario else { panic!("a broadcast") };
        assert_eq!(b.publisher_conns(), 4);
        // A URL with a path keeps it.
        let mut own = vec!["fanout-load", "slow", "--url", "ws://127.0.0.1:6001/app/x?protocol=7"];
        own.extend_from_slice(&["--protocol", "pusher", "--conns", "3"]);
        own.extend_from_slice(&app);
        assert_eq!(config(&own).unwrap().target.endpoints[0].path, "/app/x?protocol=7");
        assert!(with(&app[..4]).unwrap_err().contains("--app-secret"));
        assert!(with(&[&app[..], &["--via", "ws"]].concat()).is_err());
        assert!(with(&["--app-id", "1", "--app-key", "a b", "--app-secret", "s"]).is_err());
        assert!(config(&["fanout-load", "broadcast", "--app-key", "k"]).unwrap_err().contains("--protocol pusher"));
        let c = config(&["fanout-load", "broadcast", "--via", "http", "--http-conns", "3"]).unwrap();
        let Scenario::Broadcast(b) = &c.scenario else { panic!("a broadcast") };
        assert_eq!((b.via(), b.publisher_conns(), c.target.endpoints[0].path.as_str()), (Via::Http, 3, "/"));
    }

    #[test]
    fn one_url_by_default_and_the_publisher_on_it() {
        let c = config(&["fanout-load", "broadcast"]).unwrap();
        assert_eq!(c.common.urls, ["ws://127.0.0.1:9001/"]);
        assert_eq!(c.target.endpoints.len(), 1);
        assert_eq!(c.target.endpoints[0].host, "127.0.0.1:9001");
        // Subscribers 0..100, the publisher at 100: the same server.
        assert_eq!(c.target.publisher, Some((100, c.target.endpoints[0].clone())));
        assert_eq!(c.target.endpoint(100), c.target.endpoint(0));
        assert!(c.common.server_pids.is_empty() && c.common.watch_pids.is_empty());
        // echo has no publisher; raw publishes from connection 0, a subscriber like the others.
        assert_eq!(config(&["fanout-load", "echo"]).unwrap().target.publisher, None);
        assert_eq!(config(&["fanout-load", "broadcast", "--protocol", "raw"]).unwrap().target.publisher, None);
    }

    #[test]
    fn several_urls_take_the_subscribers_in_turn_and_the_publisher_its_own() {
        let c = config(&[
            "fanout-load",
            "broadcast",
            "--url",
            "ws://127.0.0.1:8001/",
            "--url",
            "ws://127.0.0.1:8002/ws",
            "--publish-url",
            "http://127.0.0.1:8003/",
            "--via",
            "http",
            "--http-conns",
            "2",
            "--conns",
            "5",
        ])
        .unwrap();
        let ports: Vec<u16> = (0..7).map(|i| c.target.endpoint(i).addrs.port).collect();
        assert_eq!(ports, [8001, 8002, 8001, 8002, 8001, 8003, 8003]);
        assert_eq!(c.target.endpoint(1).path, "/ws");
        assert_eq!(c.target.endpoint(5).host, "127.0.0.1:8003");
        // Without --publish-url the publisher goes to the first --url.
        let c = config(&["fanout-load", "broadcast", "--url", "ws://127.0.0.1:8001/", "--url", "ws://127.0.0.1:8002/"])
            .unwrap();
        assert_eq!(c.target.endpoint(100).addrs.port, 8001);
        assert_eq!(c.target.endpoint(99).addrs.port, 8002);
        // Every scenario takes several URLs.
        let c = config(&["fanout-load", "echo", "--url", "ws://127.0.0.1:1/", "--url", "ws://127.0.0.1:2/"]).unwrap();
        assert_eq!(c.target.endpoints.len(), 2);
        assert!(config(&["fanout-load", "echo", "--url", "ws://127.0.0.1:1/", "--url", "wss://x/"]).is_err());
    }

    #[test]
    fn pusher_paths_per_url_and_publish_url_checks() {
        let c = config(&[
            "fanout-load",
            "broadcast",
            "--protocol",
            "pusher",
            "--app-id",
            "1",
            "--app-key",
            "k",
            "--app-secret",
            "s",
            "--url",
            "ws://127.0.0.1:6001/",
            "--url",
            "ws://127.0.0.1:6002/",
            "--publish-url",
            "ws://127.0.0.1:6002/",
        ])
        .unwrap();
        assert!(c.target.endpoints.iter().all(|e| e.path == pusher::ws_path("k")));
        assert_eq!(c.target.endpoint(c.conns).host, "127.0.0.1:6002");
        assert!(config(&["fanout-load", "broadcast", "--protocol", "raw", "--publish-url", "ws://127.0.0.1:1/"])
            .unwrap_err()
            .contains("--publish-url"));
        assert!(config(&["fanout-load", "broadcast", "--publish-url", "https://127.0.0.1:1/"]).is_err());
        assert!(config(&["fanout-load", "echo", "--publish-url", "ws://127.0.0.1:1/"]).is_err());
    }

    #[test]
    fn server_and_watched_pids_repeat() {
        let c =
            config(&["fanout-load", "echo", "--server-pid", "10", "--server-pid", "11", "--watch-pid", "12"]).unwrap();
        assert_eq!((c.common.server_pids.as_slice(), c.common.watch_pids.as_slice()), (&[10, 11][..], &[12][..]));
    }
}
