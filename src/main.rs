//! The `fanout` binary: parse the settings, run the gateway, mint tokens.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use fanout::config::ServeArgs;
use fanout::gateway::{self, auth};
use signal_hook::consts::{SIGINT, SIGTERM};
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
    Serve(ServeArgs),
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
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Token { secret, sub, subscribe, publish, ttl }) => {
            let exp = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + ttl).as_secs();
            let clean = |v: Vec<String>| v.into_iter().filter(|p| !p.is_empty()).collect();
            let claims = auth::Claims { sub, exp, subscribe: clean(subscribe), publish: clean(publish) };
            println!("{}", auth::mint(&claims, &secret));
            return ExitCode::SUCCESS;
        }
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    env_logger::Builder::new().parse_filters(&args.log_level).parse_default_env().init();
    let (server, gateway_config) = match args.into_configs() {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = match gateway::start(server, gateway_config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("fanout: listening on {}", gateway::describe(handle.local_addr()));
    // First SIGTERM/SIGINT: drain gracefully. Second: exit at once.
    let trigger = handle.shutdown_trigger();
    match Signals::new([SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for (seen, signal) in signals.forever().enumerate() {
                    if seen == 0 {
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
    match handle.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e}");
            ExitCode::FAILURE
        }
    }
}
