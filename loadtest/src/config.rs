//! What a run is: the scenario and its flags, and the validated `Config` every process builds
//! from them.
//!
//! Owns: `Scenario` (one variant per subcommand), `Common` (the flags every scenario takes), the
//! per-scenario `*Args` and their value enums, `Config` with what is derived from it (the
//! measuring phase, the ramp), and `IDLE_STEPS`. The flag attributes stay on the fields they fill,
//! so `--help` reads as it did; turning a command line into a `Config` (URL, headers, validation)
//! is `cli`'s. Must not: parse or validate a command line, or know how a scenario runs; the
//! scenarios, `coord` and `report` read these types and this module imports none of them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::plan::Target;
use crate::util::parse_duration;

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
    /// A long mixed run against `fanout serve`: healthy subscribers that must see every seq,
    /// churn, subscribers coming and going, 1% slow readers, malformed frames and handshakes,
    /// HTTP publishes; the server's RSS, fds and connections sampled; fails on growth or a gap.
    Soak(SoakArgs),
}

/// Flags every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server URL (`ws://`, or `wss://` with --tls-ca or --tls-insecure). Host 0.0.0.0 means "the server listens on every address":
    /// destinations are then spread over 127.0.0.1..=127.0.0.N too (see --addrs). Repeatable:
    /// connection i goes to the (i mod N)-th of N URLs, e.g. the nodes of a cluster.
    #[arg(long = "url", default_value = "ws://127.0.0.1:9001/")]
    pub urls: Vec<String>,
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
    /// Offer permessage-deflate (RFC 7692); compressed messages are inflated before the
    /// scenario reads them.
    #[arg(long)]
    pub compression: bool,
    /// For `wss://` URLs: trust the certificates in this PEM file (a test CA, or the server's
    /// own self-signed certificate) instead of none.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// For `wss://` URLs: accept any server certificate (loopback benchmarks only).
    #[arg(long)]
    pub tls_insecure: bool,
    /// For `wss://` URLs: resume TLS sessions (tickets) instead of a full handshake each time.
    #[arg(long)]
    pub tls_resume: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw percentiles and throughput over time (or per step) as SVG into this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The server's process id: its CPU and resident memory are reported alongside ours.
    /// Repeatable (a cluster's nodes): the server's CPU and memory are then the sum over them,
    /// and each is reported too.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Another process whose CPU over the measured phase is reported on its own, not counted as
    /// the server's (e.g. redis-server behind a cluster). Repeatable.
    #[arg(long = "watch-pid")]
    pub watch_pids: Vec<u32>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    // The bottleneck verdict (`bound`): which side's CPU limited the run.
    /// Percent of its capacity above which the generator or the server counts as saturated in
    /// the report's "bound by" verdict (generator: per thread, and over the cores it may use).
    #[arg(long, default_value_t = 85.0)]
    pub bound_pct: f64,
    /// Cores the server can use, e.g. its worker threads, for the verdict [default: the CPUs its
    /// affinity allows, summed over --server-pid].
    #[arg(long)]
    pub server_cores: Option<f64>,
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
    /// Messages sent per second in all, at most (0 = each as soon as its echo is back). A
    /// connection whose echo is back waits its turn in the schedule, so a paced run leaves both
    /// sides headroom and CPU per message is measured with neither saturated.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Send binary frames instead of text.
    #[arg(long)]
    pub binary: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Publish over a WebSocket connection.
    Ws,
    /// POST to the server's HTTP API over --http-conns keep-alive connections.
    Http,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// fanout's channel protocol: subscribe, publish, seq numbers.
    Fanout,
    /// Any server that sends every message it receives to every connection.
    Raw,
    /// Pusher Channels protocol 7: subscribe over WebSocket, publish through the signed HTTP API.
    Pusher,
}

#[derive(Args, Debug, Clone)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages published per second (0 = as fast as acknowledgements allow, --in-flight at a time).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How the publisher publishes [default: ws; with --protocol pusher, http (its HTTP API)].
    #[arg(long, value_enum)]
    pub via: Option<Via>,
    /// What the server speaks.
    #[arg(long, value_enum, default_value_t = Wire::Fanout)]
    pub protocol: Wire,
    /// API key for --via http (Authorization: Bearer).
    #[arg(long)]
    pub api_key: Option<String>,
    /// --via http: keep-alive connections the publisher spreads its requests over (requests are
    /// pipelined on each).
    #[arg(long, default_value_t = 1)]
    pub http_conns: usize,
    /// --protocol pusher: the app id (HTTP API path /apps/ID/events).
    #[arg(long)]
    pub app_id: Option<String>,
    /// --protocol pusher: the app key (WebSocket path /app/KEY, `auth_key` of the HTTP API).
    #[arg(long)]
    pub app_key: Option<String>,
    /// --protocol pusher: the app secret the HTTP API requests are signed with.
    #[arg(long)]
    pub app_secret: Option<String>,
    /// The server the publisher publishes to (its WebSocket connection, or the HTTP API), ws:// or
    /// http:// [default: the first --url]. With several --url, a cluster's other node.
    #[arg(long)]
    pub publish_url: Option<String>,
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

impl BroadcastArgs {
    /// How the publisher publishes: `--via`, or what the protocol allows.
    pub fn via(&self) -> Via {
        self.via.unwrap_or(match self.protocol {
            Wire::Pusher => Via::Http,
            Wire::Fanout | Wire::Raw => Via::Ws,
        })
    }

    /// Connections the publisher opens besides the subscribers (raw publishes from connection 0).
    pub fn publisher_conns(&self) -> u64 {
        match (self.protocol, self.via()) {
            (Wire::Raw, _) => 0,
            (_, Via::Ws) => 1,
            (_, Via::Http) => self.http_conns as u64,
        }
    }
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
    /// Iterations started per second at most (0 = each as soon as the last is complete). A paced
    /// run leaves both sides headroom, so CPU per delivery is measured with neither saturated.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
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

/// `soak`'s flags (`scenario::soak` runs it; `--conns` is its steady subscribers).
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: Common,
    /// The gateway's API key, for `POST /api/publish` (Authorization: Bearer).
    #[arg(long)]
    pub api_key: String,
    /// Channels the mix spreads over (`soak-0`, `soak-1`, ...).
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// HTTP publishes per second in all, over one keep-alive connection, channels in turn.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Connections that stay open and unsubscribe and resubscribe (with `since`) in turn.
    #[arg(long, default_value_t = 100)]
    pub flappers: u64,
    /// How long a flapper stays subscribed (each time uniform in 0.5x..1.5x); it then stays
    /// away a fifth of that.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub flap_hold: Duration,
    /// Short-lived connections opened per second: subscribe, read, close (clean or reset).
    #[arg(long, default_value_t = 10.0)]
    pub churn_rate: f64,
    /// How long a churn connection lives (each uniform in 0.5x..1.5x).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub churn_life: Duration,
    /// Slow readers, as a percentage of the long-lived subscribers (--conns + --flappers).
    #[arg(long, default_value_t = 1.0)]
    pub slow_percent: f64,
    /// How long a slow reader stops reading before it reads again to learn how it ended.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub slow_hold: Duration,
    /// Malformed frames and handshakes sent per second (the cases in turn).
    #[arg(long, default_value_t = 2.0)]
    pub malformed_rate: f64,
    /// Length the oversize frame claims; must exceed the server's message limit.
    #[arg(long, default_value_t = 16 << 20)]
    pub oversize: u64,
    /// How often the server's RSS, fds and connections are sampled.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub sample_every: Duration,
    /// Warm-up excluded from the growth check [default: 20% of --duration].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// RSS growth allowed between the steady phase's first and last thirds, in percent (the
    /// larger of this and --rss-slack-mib applies).
    #[arg(long, default_value_t = 10.0)]
    pub rss_tolerance: f64,
    /// RSS growth allowed in MiB (the larger of this and --rss-tolerance applies).
    #[arg(long, default_value_t = 8)]
    pub rss_slack_mib: u64,
    /// Growth allowed in the server's fds beyond the connections the mix holds open.
    #[arg(long, default_value_t = 64)]
    pub fd_slack: u64,
    /// Write every sample as CSV to this file.
    #[arg(long, default_value = "soak-samples.csv")]
    pub csv: PathBuf,
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
            Scenario::Soak(a) => &a.common,
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
            Scenario::Soak(_) => "soak",
        }
    }
}

impl Config {
    pub fn scenario_name(&self) -> &'static str {
        self.scenario.name()
    }

    /// The phase in which the scenario measures (phases before it set up; see `coord`). idle
    /// connects in ten steps (phases 0..=9) so the server's memory is read after each.
    pub fn run_phase(&self) -> u32 {
        match self.scenario {
            Scenario::Idle(_) => IDLE_STEPS,
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

/// `idle`'s connection steps; also the phase in which its connections are held.
pub const IDLE_STEPS: u32 = 10;
