//! The `fanout` binary: subcommands (`serve`, the default; `config`; `token`), signals,
//! logging and the open-file limit.
//!
//! Owns: the process: exit codes (0 served and drained, 1 could not serve, 2 bad settings), the
//! first SIGTERM/SIGINT drains and a second exits at once, SIGHUP reloads the TLS certificate, the
//! "listening on" line on stderr that tests and scripts wait for (after the admin listener's
//! line, when there is one). Must not: hold settings logic (that is `settings`) or protocol
//! logic (that is `app` and `native`).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use fanout_gateway::app as gateway;
use fanout_gateway::native::auth;
use fanout_gateway::settings::{self, ServeArgs};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Parser)]
#[command(
    name = "fanout",
    version,
    about = "WebSocket fan-out gateway: clients subscribe to channels, backends publish over HTTP",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `fanout` alone (or with serve flags) is `fanout serve`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default): 127.0.0.1:8080 with the demo page at /.
    Serve(Box<ServeArgs>),
    /// Print a commented default configuration file, or check one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a signed client token.
    Token {
        /// The HS256 secret the server checks tokens with.
        #[arg(long, env = "FANOUT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// Who the token is for.
        #[arg(long)]
        sub: String,
        /// Comma-separated channel patterns it may subscribe to (`*` as a suffix wildcard).
        #[arg(long, value_delimiter = ',', default_value = "")]
        subscribe: Vec<String>,
        /// Comma-separated channel patterns it may publish to.
        #[arg(long, value_delimiter = ',', default_value = "")]
        publish: Vec<String>,
        /// Lifetime: a number with s, m, h or d (e.g. 1h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// Valid only this long from now (the `nbf` claim), e.g. 10m; the lifetime counts from
        /// then. Unset: valid at once, no `nbf`.
        #[arg(long, value_parser = parse_ttl)]
        not_before: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every setting with its default, as a commented TOML file.
    Default,
    /// Check a configuration file: unknown keys, bad values and bad combinations.
    Check {
        /// The TOML file.
        file: std::path::PathBuf,
    },
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected a number and s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (args, serve_matches) = match cli.command {
        Some(Command::Token { secret, sub, subscribe, publish, ttl, not_before }) => {
            let from =
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + not_before.unwrap_or_default();
            let (exp, nbf) = ((from + ttl).as_secs(), not_before.map(|_| from.as_secs()));
            let clean = |v: Vec<String>| v.into_iter().filter(|p| !p.is_empty()).collect();
            let claims = auth::Claims { sub, exp, nbf, subscribe: clean(subscribe), publish: clean(publish) };
            println!("{}", auth::mint(&claims, &secret));
            return ExitCode::SUCCESS;
        }
        Some(Command::Config(ConfigCommand::Default)) => {
            print!("{}", settings::default_file());
            return ExitCode::SUCCESS;
        }
        Some(Command::Config(ConfigCommand::Check { file })) => {
            // What `serve --config FILE` would run with here: the environment over the file.
            return match settings::check_file(&file) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fanout: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Serve(args)) => (*args, matches.subcommand_matches("serve").expect("serve matched").clone()),
        None => (cli.serve, matches.clone()),
    };
    // Flags and FANOUT_* variables win over the file; the file wins over defaults.
    let args = match args.with_file(&serve_matches) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new().parse_filters(&args.log_level).parse_default_env().init();
    let (server, gateway_config) = match args.into_configs() {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::from(2);
        }
    };
    raise_file_limit(server.max_connections);
    let demo = gateway_config.demo;
    let servers = match gateway::start_servers(server, gateway_config) {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = &servers.main;
    if let Some(admin) = servers.admin_addr() {
        // Before the "listening on" line, which tests and scripts wait for.
        eprintln!("fanout: admin listener at http://{admin}/ (/metrics, /api/stats, /healthz)");
    }
    eprintln!("fanout: listening on {}", gateway::describe(handle.local_addr(), handle.tls_local_addr(), demo));
    // First SIGTERM/SIGINT: drain gracefully. Second: exit at once. SIGHUP: reload the TLS
    // certificate and key.
    let trigger = handle.shutdown_trigger();
    let reloader = handle.tls_local_addr().map(|_| handle.tls_reloader());
    match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                let mut seen = 0;
                for signal in signals.forever() {
                    if signal == SIGHUP {
                        match reloader.as_ref().map(|r| r.reload()) {
                            Some(Ok(())) => log::info!("SIGHUP: new TLS handshakes use the reloaded certificate"),
                            Some(Err(e)) => log::warn!("SIGHUP: keeping the serving TLS certificate: {e}"),
                            None => log::info!("SIGHUP: no TLS certificate to reload"),
                        }
                        continue;
                    }
                    seen += 1;
                    if seen == 1 {
                        log::info!("signal {signal}: draining; a second signal exits at once");
                        trigger.shutdown();
                    } else {
                        log::warn!("signal {signal} again: exiting now");
                        std::process::exit(130);
                    }
                }
            });
        }
        Err(e) => log::warn!("cannot handle signals ({e}); SIGTERM stops the process abruptly"),
    }
    // The admin listener stops once the main server has drained.
    match servers.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: each connection is a descriptor.
fn raise_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + 64 => log::warn!(
            "the open-file limit is {limit}, below --max-connections {max_connections}: raise the hard limit (ulimit -Hn, LimitNOFILE=) or connections will fail with EMFILE"
        ),
        Ok(limit) => log::debug!("open-file limit {limit}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}
