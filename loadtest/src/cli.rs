//! Command line: the scenarios as subcommands, the flags they share, and the validated `Config`
//! every process builds from them.
//!
//! Owns: the clap definitions, URL parsing and the per-scenario defaults. Children are started
//! with the parent's own arguments plus the hidden `--child-index` and `--epoch-ns`, so every
//! process parses the same command line and computes its own share of the work from it.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::{AddrPlan, Target};
use crate::util::parse_duration;

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

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// N connections, K messages in flight each: messages/s, MB/s, round-trip percentiles.
    Echo(EchoArgs),
    /// N subscribers and one publisher: deliveries/s, publish-to-delivery latency, loss.
    Broadcast(BroadcastArgs),
    /// uWebSockets' broadcast_test: N clients send one message each per iteration and wait for
    /// all N² deliveries: iterations/s and deliveries/s.
    N2(N2Args),
    /// Upgrades per second, handshake latency, failures by reason.
    Connect(ConnectArgs),
    /// Hold N idle connections; with --server-pid, the server's bytes per connection.
    Idle(IdleArgs),
    /// broadcast where M subscribers never read: healthy subscribers' latency, server memory.
    Slow(SlowArgs),
    /// The websocket-shootout protocol: ramp clients until the p95 broadcast round trip
    /// exceeds a limit: maximum clients.
    Shootout(ShootoutArgs),
}

/// Flags every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server URL (ws:// only). Host 0.0.0.0 means "the server listens on every address":
    /// destinations are then spread over 127.0.0.1..=127.0.0.N too (see --addrs).
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Connections (clients, subscribers); each scenario has its own default.
    #[arg(long)]
    pub conns: Option<u64>,
    /// Message payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// How long the measured phase lasts (10s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many messages in total (whichever of this and --duration comes first).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Reactor threads per process.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Processes (this program re-executes itself); a process may hold only so many sockets.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Spread connections over 127.0.0.1..=127.0.0.N (source addresses; destinations too when
    /// the URL host is 0.0.0.0), so no address tuple runs out of its ~28k ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub addrs: u32,
    /// Connections opened per second in all (0 = as fast as --max-pending allows).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Most connects outstanding at once, in all.
    #[arg(long, default_value_t = 2000)]
    pub max_pending: usize,
    /// How long to wait for replies still in flight once sending stops.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub drain: Duration,
    /// Give up on connections not set up (connected, upgraded, subscribed) by then.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub setup_timeout: Duration,
    /// A connect plus upgrade slower than this fails with "timeout".
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub handshake_timeout: Duration,
    /// Extra upgrade request header, `Name: value` (repeatable), e.g. an Authorization token.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw percentiles and throughput over time (or per step) as SVG into this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The server's process id: its CPU and resident memory are reported alongside ours.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, hide = true)]
    pub child_index: Option<usize>,
    #[arg(long, hide = true)]
    pub epoch_ns: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages outstanding per connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Send binary frames instead of text.
    #[arg(long)]
    pub binary: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Publish over a WebSocket connection.
    Ws,
    /// POST /api/publish over one keep-alive HTTP connection.
    Http,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// fanout's channel protocol: subscribe, publish, seq numbers.
    Fanout,
    /// Any server that sends every message it receives to every connection.
    Raw,
}

#[derive(Args, Debug, Clone)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages published per second (0 = as fast as acknowledgements allow, --in-flight at a time).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How the publisher publishes.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    pub via: Via,
    /// What the server speaks.
    #[arg(long, value_enum, default_value_t = Wire::Fanout)]
    pub protocol: Wire,
    /// API key for --via http (Authorization: Bearer).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Channel to subscribe and publish to.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// --protocol raw: a text message every client sends once connected (e.g. a join message).
    #[arg(long)]
    pub first_message: Option<String>,
    /// With --rate 0: publishes outstanding at once.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
}

#[derive(Args, Debug, Clone)]
pub struct SlowArgs {
    #[command(flatten)]
    pub broadcast: BroadcastArgs,
    /// Subscribers that never read (spread evenly over all connections).
    #[arg(long, default_value_t = 1)]
    pub slow: u64,
}

#[derive(Args, Debug, Clone)]
pub struct N2Args {
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Upgrades started per second (0 = flat out, --max-pending at a time).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Keep this many connections open instead of closing each after its upgrade.
    #[arg(long, default_value_t = 0)]
    pub keep: u64,
    /// Close with a close frame and FIN instead of an RST; our side then holds TIME_WAIT ports.
    #[arg(long)]
    pub graceful: bool,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShootCmd {
    Broadcast,
    Echo,
}

#[derive(Args, Debug, Clone)]
pub struct ShootoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients added per step.
    #[arg(long, default_value_t = 1000)]
    pub step: u64,
    /// Clients in the first step (default: --step).
    #[arg(long)]
    pub initial: Option<u64>,
    /// Stop once this percentile of the round trip exceeds --limit-ms.
    #[arg(long, default_value_t = 500.0)]
    pub limit_ms: f64,
    #[arg(long, default_value_t = 95.0)]
    pub percentile: f64,
    /// Requests outstanding at once while sampling a step.
    #[arg(long, default_value_t = 4)]
    pub concurrent: usize,
    /// Round trips measured per step.
    #[arg(long, default_value_t = 40)]
    pub sample: usize,
    /// What the sampled clients send.
    #[arg(long, value_enum, default_value_t = ShootCmd::Broadcast)]
    pub command: ShootCmd,
}

/// The validated configuration every process derives from the same command line.
#[derive(Debug)]
pub struct Config {
    pub scenario: Scenario,
    pub common: Common,
    /// Connections in all (for `connect`, attempts; for `shootout`, the most clients).
    pub conns: u64,
    pub target: Arc<Target>,
    /// The command line, for the JSON result and for starting children.
    pub args: Vec<String>,
    pub warnings: Vec<String>,
}

impl Scenario {
    pub fn common(&self) -> &Common {
        match self {
            Scenario::Echo(a) => &a.common,
            Scenario::Broadcast(a) => &a.common,
            Scenario::N2(a) => &a.common,
            Scenario::Connect(a) => &a.common,
            Scenario::Idle(a) => &a.common,
            Scenario::Slow(a) => &a.broadcast.common,
            Scenario::Shootout(a) => &a.common,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Echo(_) => "echo",
            Scenario::Broadcast(_) => "broadcast",
            Scenario::N2(_) => "n2",
            Scenario::Connect(_) => "connect",
            Scenario::Idle(_) => "idle",
            Scenario::Slow(_) => "slow",
            Scenario::Shootout(_) => "shootout",
        }
    }
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
            _ => 100,
        });
        if common.threads == 0 || common.processes == 0 {
            return Err("--threads and --processes must be at least 1".into());
        }
        if common.addrs == 0 || common.addrs > 254 {
            return Err("--addrs must be in 1..=254".into());
        }
        match &scenario {
            Scenario::N2(_) if common.processes > 1 => {
                return Err("n2 waits for every client each iteration, which needs one process: use --threads".into())
            }
            Scenario::Shootout(_) if common.processes > 1 || common.threads > 1 => {
                return Err("shootout runs on one thread of one process".into())
            }
            Scenario::Broadcast(b) | Scenario::Slow(SlowArgs { broadcast: b, .. }) => {
                if b.protocol == Wire::Raw && b.via == Via::Http {
                    return Err("--via http needs --protocol fanout (a raw server has no HTTP API)".into());
                }
                if b.protocol == Wire::Raw && conns == 0 {
                    return Err("--protocol raw needs at least one connection (it publishes)".into());
                }
            }
            Scenario::Echo(e) if e.in_flight == 0 => return Err("--in-flight must be at least 1".into()),
            _ => {}
        }
        if let Scenario::Slow(s) = &scenario {
            if s.slow >= conns {
                return Err("--slow must be less than --conns".into());
            }
        }
        let (host, port, host_header, path) = parse_url(&common.url)?;
        let mut headers = Vec::new();
        for h in &common.headers {
            let (n, v) = h.split_once(':').ok_or_else(|| format!("--header {h:?}: expected `Name: value`"))?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
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
            let per_tuple = conns / u64::from(common.addrs);
            if per_tuple > 20_000 {
                warnings
                    .push(format!("{per_tuple} connections per address tuple (of ~28k ephemeral ports): use --addrs"));
            }
        }
        let target = Arc::new(Target {
            addrs: AddrPlan { host, port, addrs: common.addrs },
            host: host_header,
            path,
            headers,
            handshake_timeout: common.handshake_timeout,
        });
        Ok(Config { scenario, common, conns, target, args, warnings })
    }

    pub fn scenario_name(&self) -> &'static str {
        self.scenario.name()
    }

    /// The phase in which the scenario measures (phases before it set up; see `coord`). idle
    /// connects in ten steps (phases 0..=9) so the server's memory is read after each.
    pub fn run_phase(&self) -> u32 {
        match self.scenario {
            Scenario::Idle(_) => crate::scenario::idle::STEPS,
            _ => 1,
        }
    }

    /// How long opening every connection takes at the configured ramp (zero when unramped, and
    /// for `connect`, whose connections are the measurement): added to the setup timeout.
    pub fn ramp_time(&self) -> Duration {
        match self.scenario {
            Scenario::Connect(_) => Duration::ZERO,
            _ if self.common.ramp > 0.0 => Duration::from_secs_f64(self.conns as f64 / self.common.ramp),
            _ => Duration::ZERO,
        }
    }

    /// Connections per second in all (connect's --rate is its ramp).
    pub fn ramp(&self) -> f64 {
        match &self.scenario {
            Scenario::Connect(c) => c.rate,
            _ => self.common.ramp,
        }
    }
}

/// `ws://host[:port][/path]` -> (address, port, Host header, request target).
pub fn parse_url(url: &str) -> Result<(Ipv4Addr, u16, String, String), String> {
    if url.starts_with("wss://") {
        return Err("wss:// is not supported (no TLS); use ws://".into());
    }
    let rest = url.strip_prefix("ws://").ok_or_else(|| format!("{url:?}: expected ws://host:port/path"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?),
        None => (authority, 80),
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
    Ok((ip, port, authority.to_owned(), path))
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:9001/").unwrap(),
            (Ipv4Addr::LOCALHOST, 9001, "127.0.0.1:9001".into(), "/".into())
        );
        assert_eq!(parse_url("ws://127.0.0.1:8080/ws?token=x").unwrap().3, "/ws?token=x");
        assert_eq!(parse_url("ws://127.0.0.1:8080?a=1").unwrap().3, "/?a=1");
        assert_eq!(parse_url("ws://0.0.0.0").unwrap().0, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parse_url("ws://localhost:1/").unwrap().0, Ipv4Addr::LOCALHOST);
        assert!(parse_url("wss://x/").is_err());
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
        assert!(config(&["fanout-load", "n2", "--processes", "2"]).is_err());
        assert!(config(&["fanout-load", "shootout", "--threads", "2"]).is_err());
        assert!(config(&["fanout-load", "broadcast", "--protocol", "raw", "--via", "http"]).is_err());
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
}
