//! fanout-load: a WebSocket load generator that measures fanout, or any other WebSocket server,
//! from outside.
//!
//! Layers, top to bottom. A module imports only modules on lines below its own, so none imports
//! one that imports it back (a `mod` declaration is not an import):
//!
//! ```text
//! main                        the process: flags in, the run, the table out, --json and --svg
//! cli, chart                  command line -> config::Config; the SVG of a report::Summary
//! coord                       reactor threads, child processes, the monitor, the per-second series
//! steer                       the decisions between phases from merged reports (n2, shootout, broadcast)
//! scenario                    run_thread: the configured scenario's Driver on a net::reactor
//! scenario/{echo, broadcast, n2, connect, idle, shootout}   one Driver each
//! scenario/soak               its own threads: the mix, the sampler, the verdict
//! scenario/publisher          broadcast's HTTP publisher: keep-alive connections, requests, answers
//! scenario/phase              what the scenarios share: setup, the measured window, the drain
//! net/reactor, net/connect    the loop, the client upgrade, frames in and out; opening sockets
//! net, report                 Net and Driver, what a scenario acts through; figures and text
//! config, shared              the scenario, its flags, Config; what the threads and coord share
//! plan, stats, wire, pusher, util, sys, tls, bound   where (Target), measurements, frames, Pusher, clock, /proc, TLS, the bottleneck verdict
//! ```
//!
//! From the server crate only `fanout::proto` is used: the generator must measure servers from
//! outside, through their sockets.

mod bound;
mod chart;
mod cli;
mod config;
mod coord;
mod net;
mod plan;
mod pusher;
mod report;
mod scenario;
mod shared;
mod stats;
mod steer;
mod sys;
mod tls;
mod util;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = cli::Cli::parse();
    let cfg = match config::Config::from_cli(cli, args.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("fanout-load: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(index) = cfg.common.child_index {
        let epoch = cfg.common.epoch_ns.unwrap_or_else(util::unix_now_ns);
        return match coord::run_child(cfg, index, epoch) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fanout-load: child {index}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    for w in &cfg.warnings {
        eprintln!("fanout-load: warning: {w}");
    }
    if let config::Scenario::Soak(args) = &cfg.scenario {
        // A soak is judged, not measured: it runs its own threads and prints its own verdict.
        return match scenario::soak::run(&cfg, args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("fanout-load: soak: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result =
        if cfg.common.processes > 1 { coord::run_parent(cfg.clone(), &args) } else { coord::run_single(cfg.clone()) };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report::table(&summary));
    if let Some(w) = report::cpu_warning(&summary) {
        // Loud on the terminal too, where the table may have scrolled past.
        eprintln!("{w}");
    }
    let mut status = ExitCode::SUCCESS;
    if let Some(path) = &cfg.common.json {
        let text = serde_json::to_string_pretty(&summary).expect("the summary serialises");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("fanout-load: {}: {e}", path.display());
            status = ExitCode::FAILURE;
        }
    }
    if let Some(path) = &cfg.common.svg {
        if let Err(e) = chart::draw(path, &summary) {
            eprintln!("fanout-load: {e}");
            status = ExitCode::FAILURE;
        }
    }
    status
}
