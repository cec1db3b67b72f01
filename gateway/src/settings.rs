//! The settings of `fanout serve`: every one is a flag, a `FANOUT_*` environment variable and a
//! key of the TOML file given by `--config`, with precedence flag, then environment, then file,
//! then default. (Moved from the library's config.rs as it was.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use fanout::{Config, SlowConsumerPolicy};

use crate::app::GatewayConfig;

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
    #[arg(long, env = "FANOUT_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumer::Close)]
    pub slow_consumer: SlowConsumer,
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
            slow_consumer: self.slow_consumer.into(),
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
    pub slow_consumer: Option<SlowConsumer>,
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
    pub fn read(path: &Path) -> Result<FileConfig, String> {
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

/// `fanout config check FILE`: the settings the file alone gives (over the defaults and the
/// environment, as if no flag were given), validated; the error names the file.
pub fn check_file(path: &Path) -> Result<(Config, GatewayConfig), String> {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut args = <Defaults as clap::Parser>::try_parse_from(["fanout"]).map_err(|e| e.to_string())?.serve;
    FileConfig::read(path)?.apply(&mut args, |_| false);
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
}
