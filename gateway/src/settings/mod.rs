//! The settings of `fanout serve`: every one is a flag, a `FANOUT_*` environment variable and a
//! key of the TOML file given by `--config` (key `history_size` = flag `--history-size` =
//! `FANOUT_HISTORY_SIZE`), with precedence flag, then environment, then file, then default.
//!
//! Owns: the one field list (the `settings!` invocation below), from which the clap arguments
//! (`ServeArgs`), the file's keys (`FileConfig`) and the file-under-flags merge are generated;
//! the translation into the library's `Config` and the application's `GatewayConfig`; the
//! commented default file. One setting is file-only, because it is a list of tables: the Pusher
//! apps, `[[pusher.apps]]` (`pusher::apps::AppConfig`); the flags `--pusher-app-id/-key/-secret`
//! give one app, listed before the file's. Invariants: a setting is declared once, with its type, flag, variable
//! and default; a default the library also has is read from `Config::default()` (or, for the
//! gateway's own knobs, `GatewayConfig::default()`), never restated; an unknown file key is an
//! error naming the file, the key and its position; nothing here starts a server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use fanout::{Config, SlowConsumerPolicy};

use crate::app::GatewayConfig;
use crate::cluster::Settings;
use crate::pusher::apps::{AppConfig, PusherFile};

/// The gateway's default largest message: 64 KiB, not the library's 1 MiB, because anyone
/// allowed to publish makes every subscriber's queue hold each message.
const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// The gateway's default largest HTTP request body: 1 MiB, room for a publish batch of
/// hundreds of small messages (each still within `MAX_MESSAGE_SIZE`). A body is held whole
/// while its request is read, so this times the connections sending one is the memory at stake.
const MAX_BODY_SIZE: usize = 1024 * 1024;

/// `--slow-consumer`: the library's `SlowConsumerPolicy` as a flag and file value (`close`,
/// `drop`). The variants have no doc comments on purpose: clap would turn them into a long
/// help text for the flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum SlowConsumer {
    Close,
    Drop,
}

impl From<SlowConsumer> for SlowConsumerPolicy {
    fn from(value: SlowConsumer) -> Self {
        match value {
            SlowConsumer::Close => SlowConsumerPolicy::Close,
            SlowConsumer::Drop => SlowConsumerPolicy::Drop,
        }
    }
}

impl From<SlowConsumerPolicy> for SlowConsumer {
    fn from(value: SlowConsumerPolicy) -> Self {
        match value {
            SlowConsumerPolicy::Close => SlowConsumer::Close,
            SlowConsumerPolicy::Drop => SlowConsumer::Drop,
        }
    }
}

/// Generates, from one list of `/// help`, `#[arg(...)]`, `name: Type` entries: `ServeArgs`
/// (the clap arguments, plus `--config`), `FileConfig` (every field optional, unknown keys
/// refused, so toml's own messages name the file's line, column and key) and
/// `FileConfig::apply` (the file under the flags and the environment). The `file_only` entries
/// are TOML tables with no flag: `FileConfig` has them, and `ServeArgs` carries their value
/// (`#[arg(skip)]`) from the file to `into_configs`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $field:ident: $ty:ty,
    )*
    file_only {$(
        $(#[doc = $fdoc:literal])*
        $ffield:ident: $fty:ty,
    )*}) => {
        /// `fanout serve` settings: each is a flag, a `FANOUT_*` environment variable and a key in the
        /// TOML file given by `--config` (precedence: flag, then environment, then file, then default).
        #[derive(Debug, Clone, clap::Args)]
        pub struct ServeArgs {
            /// TOML file with any of the settings below (keys as the flags, with `_` for `-`).
            #[arg(long, env = "FANOUT_CONFIG")]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $field: $ty,
            )*
            $(
                $(#[doc = $fdoc])*
                #[arg(skip)]
                pub $ffield: $fty,
            )*
        }

        /// The settings a `--config` file may hold: the flags of `fanout serve`, by their names with
        /// `_` for `-`. Unknown keys are errors.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(pub $field: Option<$ty>,)*
            $($(#[doc = $fdoc])* pub $ffield: Option<$fty>,)*
        }

        impl FileConfig {
            /// Fills `args` from the file, except the settings `set_elsewhere` says came from a flag or
            /// the environment, which take precedence.
            pub fn apply(self, args: &mut ServeArgs, set_elsewhere: impl Fn(&str) -> bool) {
                $(
                    if let Some(value) = self.$field {
                        if !set_elsewhere(stringify!($field)) {
                            args.$field = value;
                        }
                    }
                )*
                $(
                    if let Some(value) = self.$ffield {
                        args.$ffield = value;
                    }
                )*
            }
        }
    };
}

settings! {
    /// Address to listen on (HTTP and WebSocket on one port).
    #[arg(long, env = "FANOUT_LISTEN", default_value_t = Config::default().listen)]
    listen: SocketAddr,
    /// Worker threads, each with its own event loop and listener (default: the CPUs available).
    #[arg(long, env = "FANOUT_WORKERS")]
    workers: Option<usize>,
    /// HS256 secret for client tokens; without it clients are anonymous (loopback only, unless
    /// --allow-anonymous).
    #[arg(long, env = "FANOUT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Key for POST /api/publish (Authorization: Bearer KEY).
    #[arg(long, env = "FANOUT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow clients without a token on any address (they may use every channel).
    #[arg(long, env = "FANOUT_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Comma-separated browser origins allowed to connect; empty allows any.
    #[arg(long, env = "FANOUT_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "")]
    allowed_origins: Vec<String>,
    /// Messages kept per channel for resume.
    #[arg(long, env = "FANOUT_HISTORY_SIZE", default_value_t = GatewayConfig::default().history_size)]
    history_size: usize,
    /// Seconds a message stays in the history.
    #[arg(long, env = "FANOUT_HISTORY_TTL", default_value_t = GatewayConfig::default().history_ttl.as_secs())]
    history_ttl: u64,
    /// Channels tracked at once; new ones are refused beyond it.
    #[arg(long, env = "FANOUT_MAX_CHANNELS", default_value_t = GatewayConfig::default().max_channels)]
    max_channels: usize,
    /// Channels one connection may be subscribed to at once; further subscribes are refused.
    #[arg(long, env = "FANOUT_MAX_CHANNELS_PER_CONNECTION", default_value_t = GatewayConfig::default().max_channels_per_connection)]
    max_channels_per_connection: usize,
    /// Largest message (and frame, and data of a message published over HTTP) in bytes.
    #[arg(long, env = "FANOUT_MAX_MESSAGE_SIZE", default_value_t = MAX_MESSAGE_SIZE)]
    max_message_size: usize,
    /// Bytes queued for one client before it is a slow consumer.
    #[arg(long, env = "FANOUT_MAX_QUEUED_BYTES", default_value_t = Config::default().max_queued_bytes)]
    max_queued_bytes: usize,
    /// What to do with a slow consumer: close (1008) or drop (skip messages; seq shows the gap).
    #[arg(long, env = "FANOUT_SLOW_CONSUMER", value_enum, default_value_t = Config::default().slow_consumer.into())]
    slow_consumer: SlowConsumer,
    /// Open WebSocket connections in total; further upgrades get 503.
    #[arg(long, env = "FANOUT_MAX_CONNECTIONS", default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Open WebSocket connections per client IP address; 0 for no limit (use 0 behind a proxy).
    #[arg(long, env = "FANOUT_MAX_CONNECTIONS_PER_IP", default_value_t = Config::default().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// Connections still sending their HTTP request before new ones are closed unread.
    #[arg(long, env = "FANOUT_MAX_PENDING_HANDSHAKES", default_value_t = Config::default().max_pending_handshakes)]
    max_pending_handshakes: usize,
    /// Seconds of silence before an open connection is closed (pinged at half); 0 disables.
    #[arg(long, env = "FANOUT_IDLE_TIMEOUT", default_value_t = Config::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Seconds a client has to complete its upgrade request.
    #[arg(long, env = "FANOUT_HANDSHAKE_TIMEOUT", default_value_t = Config::default().handshake_timeout.as_secs())]
    handshake_timeout: u64,
    /// Seconds over which a graceful stop (SIGTERM, SIGINT) closes clients with 1001.
    #[arg(long, env = "FANOUT_DRAIN_WINDOW", default_value_t = Config::default().drain_window.as_secs())]
    drain_window: u64,
    /// PEM certificate chain, leaf first: with --tls-key, --listen serves TLS (https://, wss://),
    /// or --tls-listen does. Reloaded on SIGHUP and when the files change.
    #[arg(long, env = "FANOUT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FANOUT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// A second address that serves TLS while --listen stays plain.
    #[arg(long, env = "FANOUT_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// Seconds between checks of the certificate and key files for a change; 0 disables the
    /// check (SIGHUP still reloads).
    #[arg(long, env = "FANOUT_TLS_WATCH", default_value_t = Config::default().tls_watch_interval.as_secs())]
    tls_watch: u64,
    /// permessage-deflate for clients that offer it (browsers do): each published message is
    /// compressed once per worker and shared by its compressed subscribers.
    #[arg(long, env = "FANOUT_COMPRESSION")]
    compression: bool,
    /// Messages shorter than this many bytes go uncompressed even with --compression.
    #[arg(long, env = "FANOUT_COMPRESSION_THRESHOLD", default_value_t = Config::default().compression_threshold)]
    compression_threshold: usize,
    /// Comma-separated networks of your reverse proxies and load balancers (10.0.0.0/8, ::1):
    /// from these peers only, the client address comes from X-Forwarded-For or, with
    /// --proxy-protocol, from the PROXY header. Empty: the TCP peer is the client.
    #[arg(long, env = "FANOUT_TRUSTED_PROXIES", value_delimiter = ',', default_value = "")]
    trusted_proxies: Vec<String>,
    /// Connections from --trusted-proxies start with a PROXY protocol header, v1 or v2 (HAProxy's
    /// send-proxy, a load balancer's proxy protocol); one without a valid header is closed.
    #[arg(long, env = "FANOUT_PROXY_PROTOCOL")]
    proxy_protocol: bool,
    /// Upgrades per client address, COUNT/UNIT[:BURST] with UNIT s, m or h (e.g. 20/s:40);
    /// beyond it, 429 with Retry-After. off: no limit.
    #[arg(long, env = "FANOUT_HANDSHAKE_RATE_PER_IP", default_value = "off")]
    handshake_rate_per_ip: String,
    /// Microseconds a publish batch stays open for later publishes to join it (fewer writes per
    /// delivery, up to this much added latency; replies and pongs are never held); 0 sends each
    /// batch at the end of its loop turn. At most 100000.
    #[arg(long, env = "FANOUT_COALESCE_US", default_value_t = Config::default().coalesce.as_micros() as u64)]
    coalesce_us: u64,
    /// Log level: error, warn, info, debug or trace (RUST_LOG, when set, takes precedence).
    #[arg(long, env = "FANOUT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Pusher app id (the HTTP API's /apps/ID/...); with the key and secret, serves one Pusher app.
    #[arg(long, env = "FANOUT_PUSHER_APP_ID")]
    pusher_app_id: Option<String>,
    /// Pusher app key (clients connect to /app/KEY).
    #[arg(long, env = "FANOUT_PUSHER_APP_KEY")]
    pusher_app_key: Option<String>,
    /// Pusher app secret (signs channel auth, API requests and webhooks).
    #[arg(long, env = "FANOUT_PUSHER_APP_SECRET", hide_env_values = true)]
    pusher_app_secret: Option<String>,
    /// Redis URL, redis://[:PASSWORD@]HOST:PORT[/DB]: the nodes given the same one form a cluster
    /// (shared seq, history, presence); unset, everything stays in this process.
    #[arg(long, env = "FANOUT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of the cluster's Redis keys and channels, so that clusters can share one Redis.
    #[arg(long, env = "FANOUT_REDIS_PREFIX", default_value_t = Settings::new("").prefix)]
    redis_prefix: String,
    /// Comma-separated Redis channel patterns to publish Laravel broadcasts from (PSUBSCRIBE),
    /// e.g. laravel_database_*.
    #[arg(long, env = "FANOUT_REDIS_INGEST", value_delimiter = ',', default_value = "")]
    redis_ingest: Vec<String>,
    /// Removed from the front of an ingested Redis channel's name to give the channel (Laravel's
    /// connection prefix, e.g. laravel_database_).
    #[arg(long, env = "FANOUT_REDIS_INGEST_STRIP")]
    redis_ingest_strip: Option<String>,
    /// Seconds the ingest lease lasts unrenewed: the longest ingest gap when its holder dies.
    #[arg(long, env = "FANOUT_REDIS_INGEST_LEASE", default_value_t = Settings::new("").lease.as_secs())]
    redis_ingest_lease: u64,
    /// Seconds of silence after which the other nodes take a node for dead.
    #[arg(long, env = "FANOUT_REDIS_NODE_TIMEOUT", default_value_t = Settings::new("").node_timeout.as_secs())]
    redis_node_timeout: u64,
    /// Publishes and subscribes waiting for Redis at most; more are refused at once.
    #[arg(long, env = "FANOUT_REDIS_QUEUE", default_value_t = Settings::new("").queue)]
    redis_queue: usize,
    /// A second address serving /metrics, /api/stats and /healthz (then --listen answers 404 to
    /// the first two); one that is not loopback requires --admin-token.
    #[arg(long, env = "FANOUT_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Bearer token that /metrics and /api/stats require wherever they are served (/healthz
    /// stays open for load balancers).
    #[arg(long, env = "FANOUT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// No demo page: GET / answers 404.
    #[arg(long, env = "FANOUT_NO_DEMO")]
    no_demo: bool,
    /// Messages one POST /api/publish array may hold; a longer batch gets 413.
    #[arg(long, env = "FANOUT_PUBLISH_BATCH_MAX", default_value_t = GatewayConfig::default().publish_batch_max)]
    publish_batch_max: usize,
    /// Largest HTTP request body in bytes (room for a publish batch); each message's data stays
    /// within --max-message-size.
    #[arg(long, env = "FANOUT_MAX_BODY_SIZE", default_value_t = MAX_BODY_SIZE)]
    max_body_size: usize,
    file_only {
        /// `[pusher]`: `[[pusher.apps]]` tables, one per Pusher app (id, key, secret,
        /// client_events, max_connections, max_presence_members, max_event_size, webhook_url,
        /// webhook_events, ...).
        pusher: PusherFile,
    }
}

impl ServeArgs {
    /// The Pusher apps: the one the flags describe (all three, or none), then the file's.
    fn pusher_apps(&self) -> Result<Vec<AppConfig>, String> {
        let mut apps = Vec::new();
        match (&self.pusher_app_id, &self.pusher_app_key, &self.pusher_app_secret) {
            (Some(id), Some(key), Some(secret)) => apps.push(AppConfig::new(id, key, secret)),
            (None, None, None) => {}
            _ => return Err("pusher_app_id, pusher_app_key and pusher_app_secret go together: set all three".into()),
        }
        apps.extend(self.pusher.apps.iter().cloned());
        Ok(apps)
    }

    /// The server and gateway settings these arguments describe, validated.
    pub fn into_configs(self) -> Result<(Config, GatewayConfig), String> {
        let pusher_apps = self.pusher_apps()?;
        // Named as the flag and key are; the library's own check names its field.
        let max_coalesce_us = Config::MAX_COALESCE.as_micros() as u64;
        if self.coalesce_us > max_coalesce_us {
            return Err(format!("coalesce_us must be at most {max_coalesce_us}, got {}", self.coalesce_us));
        }
        let workers =
            self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(64));
        let server = Config {
            listen: self.listen,
            workers,
            max_frame_size: self.max_message_size,
            max_message_size: self.max_message_size,
            max_body_bytes: self.max_body_size,
            max_queued_bytes: self.max_queued_bytes,
            slow_consumer: self.slow_consumer.into(),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            drain_window: Duration::from_secs(self.drain_window),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_pending_handshakes: self.max_pending_handshakes,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_listen: self.tls_listen,
            tls_watch_interval: Duration::from_secs(self.tls_watch),
            compression: self.compression,
            compression_threshold: self.compression_threshold,
            trusted_proxies: trusted_proxies(&self.trusted_proxies)?,
            proxy_protocol: self.proxy_protocol,
            handshake_rate_per_ip: handshake_rate(&self.handshake_rate_per_ip)?,
            coalesce: Duration::from_micros(self.coalesce_us),
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
            max_channels_per_connection: self.max_channels_per_connection,
            pusher_apps,
            redis: self.redis_url.map(|url| Settings {
                prefix: self.redis_prefix,
                ingest: self.redis_ingest.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
                ingest_strip: self.redis_ingest_strip,
                lease: Duration::from_secs(self.redis_ingest_lease),
                node_timeout: Duration::from_secs(self.redis_node_timeout),
                queue: self.redis_queue,
                history_size: self.history_size,
                history_ttl: Duration::from_secs(self.history_ttl),
                max_message: self.max_message_size,
                ..Settings::new(&url)
            }),
            admin_listen: self.admin_listen,
            admin_token: self.admin_token,
            demo: !self.no_demo,
            publish_batch_max: self.publish_batch_max,
            max_publish_size: self.max_message_size,
        };
        server.validate()?;
        gateway.validate(server.listen)?;
        if let Some(tls_listen) = server.tls_listen {
            gateway.validate(tls_listen)?;
        }
        Ok((server, gateway))
    }

    /// Applies the `--config` file, if one was named, under the flags and environment variables
    /// `matches` (the matches these arguments were parsed from) saw.
    pub fn with_file(mut self, matches: &ArgMatches) -> Result<ServeArgs, String> {
        if let Some(path) = self.config.clone() {
            let set_elsewhere = |id: &str| {
                matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
            };
            FileConfig::read(&path)?.apply(&mut self, set_elsewhere);
        }
        Ok(self)
    }
}

/// `--trusted-proxies`: each entry a network or an address; the error names the setting.
fn trusted_proxies(entries: &[String]) -> Result<Vec<fanout::Cidr>, String> {
    entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| e.parse().map_err(|why| format!("trusted_proxies: {why}")))
        .collect()
}

/// `--handshake-rate-per-ip`: `off` (or `0`) for none, else `COUNT/UNIT[:BURST]`.
fn handshake_rate(text: &str) -> Result<Option<fanout::RateLimit>, String> {
    match text.trim() {
        "off" | "0" | "" => Ok(None),
        rate => rate.parse().map(Some).map_err(|why| format!("handshake_rate_per_ip: {why}")),
    }
}

impl FileConfig {
    /// Reads and parses `path`; the error names the file, and the key and reason as toml gives
    /// them (line and column included).
    pub fn read(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `fanout config check FILE`: the settings `fanout serve --config FILE` would run with here
/// (the file over the defaults, the `FANOUT_*` environment over the file, as `serve` applies
/// them), validated; the error names the file.
pub fn check_file(path: &Path) -> Result<(Config, GatewayConfig), String> {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let matches =
        <Defaults as clap::CommandFactory>::command().try_get_matches_from(["fanout"]).map_err(|e| e.to_string())?;
    let mut args = <Defaults as clap::FromArgMatches>::from_arg_matches(&matches).map_err(|e| e.to_string())?.serve;
    let from_env = |id: &str| matches!(matches.value_source(id), Some(ValueSource::EnvVariable));
    FileConfig::read(path)?.apply(&mut args, from_env);
    args.into_configs().map_err(|e| format!("{}: {e}", path.display()))
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
            ("allow_anonymous" | "compression" | "no_demo" | "proxy_protocol", _) => "false".to_string(),
            ("allowed_origins" | "redis_ingest" | "trusted_proxies", _) => "[]".to_string(),
            (_, Some(d)) if d.parse::<u64>().is_ok() => d.clone(),
            (_, Some(d)) => format!("{d:?}"),
            ("workers", None) => "2    # default: the CPUs available".to_string(),
            (_, None) => "\"...\"    # no default".to_string(),
        };
        out.push_str(&format!("\n# {help} (env {env})\n# {id} = {value}\n"));
    }
    out.push_str(PUSHER_APPS_EXAMPLE);
    out
}

/// The file-only `[[pusher.apps]]` tables, commented with `##` (so the default file's test,
/// which reads `# key = value` lines, leaves them out), every field at its default.
const PUSHER_APPS_EXAMPLE: &str = "
# Pusher apps (file only; the pusher_app_* settings above give one more, listed first). One
# [[pusher.apps]] table per app; the first app shares the native channel space.
## [[pusher.apps]]
## id = \"1\"                      # in the HTTP API's paths: /apps/1/events
## key = \"app-key\"               # clients connect to /app/app-key
## secret = \"app-secret\"         # signs channel auth, API requests and webhooks
## enabled = true
## client_events = true          # client-* events on private and presence channels
## client_event_rate = 10        # client events per connection per second
## max_connections = 0           # 0: no limit; more get 4004
## max_presence_members = 100
## max_event_size = 10240        # bytes of event data
## webhook_url = \"http://127.0.0.1:3000/pusher/webhook\"    # none by default
## webhook_events = []           # empty: all of channel_occupied, channel_vacated,
##                               # member_added, member_removed, client_event, cache_miss
";

#[cfg(test)]
mod tests;
