//! Every knob of the server in one struct, with its default and the trade-off it makes.
//!
//! Owns: `Config` and `Config::validate`. Must not: depend on any other module of this crate;
//! the reactor and the public API read it, nothing here reads them. Invariant: a `Config` that
//! passed `validate` cannot make the server hold unbounded memory or wait forever.

use std::net::SocketAddr;
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
}

/// See `Config::slow_consumer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    #[default]
    Close,
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
        }
    }
}

impl Config {
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
        if self.subprotocols.iter().any(|p| p.is_empty() || p.contains([',', ' ', '\r', '\n'])) {
            return Err("subprotocols must be non-empty tokens without commas or spaces".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_yield_to_flags_and_environment() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut args = Cli::parse_from(["fanout", "--history-size", "7"]).serve;
        let file: FileConfig =
            toml::from_str("history_size = 50\nhistory_ttl = 60\nallowed_origins = [\"https://a\"]").unwrap();
        file.apply(&mut args, |key| key == "history_size");
        assert_eq!((args.history_size, args.history_ttl), (7, 60));
        assert_eq!(args.allowed_origins, ["https://a"]);
    }

    #[test]
    fn file_errors_name_the_file_the_key_and_the_reason() {
        let dir = std::env::temp_dir().join(format!("fanout-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "history_size = 10\nhistroy_ttl = 5\n").unwrap();
        let err = FileConfig::read(&path).unwrap_err();
        assert!(err.contains("bad.toml") && err.contains("histroy_ttl"), "{err}");
        std::fs::write(&path, "history_size = \"many\"\n").unwrap();
        let err = FileConfig::read(&path).unwrap_err();
        assert!(err.contains("history_size") && err.contains("invalid type"), "{err}");
    }

    #[test]
    fn the_default_file_parses_and_lists_every_setting() {
        let text = default_file();
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = ") && !l.contains("no default"))
            .map(|l| l.split("    #").next().unwrap().to_string() + "\n")
            .collect();
        let parsed: FileConfig = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(parsed.history_size, Some(100));
        for key in ["listen", "jwt_secret", "max_connections_per_ip", "drain_window", "log_level"] {
            assert!(text.contains(&format!("# {key} = ")), "{key} missing");
        }
    }

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn anonymous_clients_only_on_loopback_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let open = GatewayConfig::default();
        assert!(open.anonymous_allowed(loopback) && open.validate(loopback).is_ok());
        assert!(!open.anonymous_allowed(public));
        assert!(open.validate(public).unwrap_err().contains("--jwt-secret"));
        let allowed = GatewayConfig { allow_anonymous: true, ..GatewayConfig::default() };
        assert!(allowed.validate(public).is_ok());
        let secured = GatewayConfig { jwt_secret: Some("s".into()), ..GatewayConfig::default() };
        assert!(secured.validate(public).is_ok() && !secured.anonymous_allowed(loopback));
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
        ];
        for (config, name) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }
}

/// Settings of the `fanout` gateway on top of the server's `Config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// HS256 secret that client tokens are signed with. None: no tokens are checked, and clients
    /// are anonymous (allowed only on loopback or with `allow_anonymous`).
    pub jwt_secret: Option<String>,
    /// Key for `POST /api/publish` (`Authorization: Bearer <key>`). None: the HTTP API is open
    /// exactly when anonymous clients are allowed, and refused otherwise.
    pub api_key: Option<String>,
    /// Lets clients without a token connect, subscribe and publish anywhere. Implied on a
    /// loopback address without a JWT secret; required to bind elsewhere without one.
    pub allow_anonymous: bool,
    /// Browser origins allowed to connect (exact `scheme://host[:port]`); empty allows any.
    pub allowed_origins: Vec<String>,
    /// Messages kept per channel for resume. Default 100. More lets clients resume after longer
    /// absences and costs memory per busy channel.
    pub history_size: usize,
    /// Age after which a message leaves the history. Default 5 min.
    pub history_ttl: std::time::Duration,
    /// Channels the gateway tracks at once (with history or subscribers). Default 100,000; past
    /// it, new channels are refused, so a client cannot grow memory by inventing names.
    pub max_channels: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            jwt_secret: None,
            api_key: None,
            allow_anonymous: false,
            allowed_origins: Vec::new(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_channels: 100_000,
        }
    }
}

impl GatewayConfig {
    /// Whether clients without a token may connect when the server listens on `listen`.
    pub fn anonymous_allowed(&self, listen: SocketAddr) -> bool {
        self.allow_anonymous || (self.jwt_secret.is_none() && listen.ip().is_loopback())
    }

    /// Checks the gateway settings against the listen address.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), String> {
        if self.jwt_secret.is_none() && !listen.ip().is_loopback() && !self.allow_anonymous {
            return Err(format!(
                "refusing to serve anonymous clients on non-loopback address {listen}: set --jwt-secret, or --allow-anonymous to accept that"
            ));
        }
        if self.jwt_secret.as_deref().is_some_and(str::is_empty) {
            return Err("jwt_secret must not be empty".into());
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err("api_key must not be empty".into());
        }
        if self.max_channels == 0 {
            return Err("max_channels must be greater than 0".into());
        }
        Ok(())
    }
}

/// `fanout serve` settings: each is a flag, a `FANOUT_*` environment variable and a key in the
/// TOML file given by `--config` (precedence: flag, then environment, then file, then default).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long, env = "FANOUT_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Address to listen on (HTTP and WebSocket on one port).
    #[arg(long, env = "FANOUT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads, each with its own event loop and listener (default: the CPUs available).
    #[arg(long, env = "FANOUT_WORKERS")]
    pub workers: Option<usize>,
    /// HS256 secret for client tokens; without it clients are anonymous (loopback only, unless
    /// --allow-anonymous).
    #[arg(long, env = "FANOUT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Key for POST /api/publish (Authorization: Bearer KEY).
    #[arg(long, env = "FANOUT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow clients without a token on any address (they may use every channel).
    #[arg(long, env = "FANOUT_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Comma-separated browser origins allowed to connect; empty allows any.
    #[arg(long, env = "FANOUT_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "")]
    pub allowed_origins: Vec<String>,
    /// Messages kept per channel for resume.
    #[arg(long, env = "FANOUT_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,
    /// Seconds a message stays in the history.
    #[arg(long, env = "FANOUT_HISTORY_TTL", default_value_t = 300)]
    pub history_ttl: u64,
    /// Channels tracked at once; new ones are refused beyond it.
    #[arg(long, env = "FANOUT_MAX_CHANNELS", default_value_t = 100_000)]
    pub max_channels: usize,
    /// Largest message (and frame, and HTTP publish body) in bytes.
    #[arg(long, env = "FANOUT_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,
    /// Bytes queued for one client before it is a slow consumer.
    #[arg(long, env = "FANOUT_MAX_QUEUED_BYTES", default_value_t = 1 << 20)]
    pub max_queued_bytes: usize,
    /// What to do with a slow consumer: close (1008) or drop (skip messages; seq shows the gap).
    #[arg(long, env = "FANOUT_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumerPolicy::Close)]
    pub slow_consumer: SlowConsumerPolicy,
    /// Open WebSocket connections in total; further upgrades get 503.
    #[arg(long, env = "FANOUT_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Open WebSocket connections per client IP address; 0 for no limit (use 0 behind a proxy).
    #[arg(long, env = "FANOUT_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Connections still sending their HTTP request before new ones are closed unread.
    #[arg(long, env = "FANOUT_MAX_PENDING_HANDSHAKES", default_value_t = 10_000)]
    pub max_pending_handshakes: usize,
    /// Seconds of silence before an open connection is closed (pinged at half); 0 disables.
    #[arg(long, env = "FANOUT_IDLE_TIMEOUT", default_value_t = 120)]
    pub idle_timeout: u64,
    /// Seconds a client has to complete its upgrade request.
    #[arg(long, env = "FANOUT_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds over which a graceful stop (SIGTERM, SIGINT) closes clients with 1001.
    #[arg(long, env = "FANOUT_DRAIN_WINDOW", default_value_t = 5)]
    pub drain_window: u64,
    /// Log level: error, warn, info, debug or trace (RUST_LOG, when set, takes precedence).
    #[arg(long, env = "FANOUT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl ServeArgs {
    /// The server and gateway settings these arguments describe, validated.
    pub fn into_configs(self) -> Result<(Config, GatewayConfig), String> {
        let workers =
            self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(64));
        let server = Config {
            listen: self.listen,
            workers,
            max_frame_size: self.max_message_size,
            max_message_size: self.max_message_size,
            max_body_bytes: self.max_message_size,
            max_queued_bytes: self.max_queued_bytes,
            slow_consumer: self.slow_consumer,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            drain_window: Duration::from_secs(self.drain_window),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_pending_handshakes: self.max_pending_handshakes,
            ..Config::default()
        };
        let gateway = GatewayConfig {
            jwt_secret: self.jwt_secret,
            api_key: self.api_key,
            allow_anonymous: self.allow_anonymous,
            allowed_origins: self
                .allowed_origins
                .into_iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            history_size: self.history_size,
            history_ttl: Duration::from_secs(self.history_ttl),
            max_channels: self.max_channels,
        };
        server.validate()?;
        gateway.validate(server.listen)?;
        Ok((server, gateway))
    }
}

/// The settings a `--config` file may hold: the flags of `fanout serve`, by their names with
/// `_` for `-`. Unknown keys are errors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub jwt_secret: Option<String>,
    pub api_key: Option<String>,
    pub allow_anonymous: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub history_size: Option<usize>,
    pub history_ttl: Option<u64>,
    pub max_channels: Option<usize>,
    pub max_message_size: Option<usize>,
    pub max_queued_bytes: Option<usize>,
    pub slow_consumer: Option<SlowConsumerPolicy>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_pending_handshakes: Option<usize>,
    pub idle_timeout: Option<u64>,
    pub handshake_timeout: Option<u64>,
    pub drain_window: Option<u64>,
    pub log_level: Option<String>,
}

impl FileConfig {
    /// Reads and parses `path`; the error names the file, and the key and reason as toml gives
    /// them (line and column included).
    pub fn read(path: &std::path::Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Fills `args` from the file, except the settings `set_elsewhere` says came from a flag or
    /// the environment, which take precedence.
    pub fn apply(self, args: &mut ServeArgs, set_elsewhere: impl Fn(&str) -> bool) {
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(value) = self.$field {
                    if !set_elsewhere(stringify!($field)) {
                        args.$field = value.into();
                    }
                }
            )*};
        }
        take!(
            listen,
            workers,
            jwt_secret,
            api_key,
            allow_anonymous,
            allowed_origins,
            history_size,
            history_ttl,
            max_channels,
            max_message_size,
            max_queued_bytes,
            slow_consumer,
            max_connections,
            max_connections_per_ip,
            max_pending_handshakes,
            idle_timeout,
            handshake_timeout,
            drain_window,
            log_level
        );
    }
}

/// A commented TOML file with every setting at its default, from the flags' own help.
pub fn default_file() -> String {
    use clap::Args as _;
    let command = ServeArgs::augment_args(clap::Command::new("fanout"));
    let mut out = String::from("# fanout configuration. Every key is optional; precedence is flag, then FANOUT_*\n# environment variable, then this file, then the default shown.\n");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "config" {
            continue;
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let value = match (id, defaults.first()) {
            ("allow_anonymous", _) => "false".to_string(),
            ("allowed_origins", _) => "[]".to_string(),
            (_, Some(d)) if d.parse::<u64>().is_ok() => d.clone(),
            (_, Some(d)) => format!("{d:?}"),
            ("workers", None) => "2    # default: the CPUs available".to_string(),
            (_, None) => "\"...\"    # no default".to_string(),
        };
        out.push_str(&format!("\n# {help} (env {env})\n# {id} = {value}\n"));
    }
    out
}
