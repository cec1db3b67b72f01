//! The scenarios, one `Driver` each.
//!
//! Owns: `run_thread` (builds the right driver for the configured scenario and runs its reactor).
//! The phase helpers every scenario uses live in `phase`, below the scenarios, which import it and
//! never this module. Each scenario module owns its message formats and its accounting; none
//! knows about other threads or processes except through `Net::reached` and the `Shared` atomics.

pub mod broadcast;
pub mod connect;
pub mod echo;
pub mod idle;
pub mod n2;
pub mod phase;
pub mod publisher;
pub mod shootout;
pub mod soak;

use mio::Poll;

use crate::config::{Config, Scenario};
use crate::net::reactor::Reactor;
use crate::net::Net;
use crate::plan::Share;
use crate::stats::Stats;

/// Runs this thread's part of the configured scenario to the end.
pub fn run_thread(cfg: &Config, share: Share, poll: Poll, net: Net) -> Stats {
    match &cfg.scenario {
        Scenario::Echo(a) => Reactor::new(poll, net, echo::Echo::new(cfg, a, share)).run(),
        Scenario::Broadcast(a) => Reactor::new(poll, net, broadcast::Broadcast::new(cfg, a, 0, share)).run(),
        Scenario::Slow(a) => Reactor::new(poll, net, broadcast::Broadcast::new(cfg, &a.broadcast, a.slow, share)).run(),
        Scenario::N2(_) => Reactor::new(poll, net, n2::N2::new(cfg, share)).run(),
        Scenario::Connect(a) => Reactor::new(poll, net, connect::Connect::new(cfg, a, share)).run(),
        Scenario::Idle(_) => Reactor::new(poll, net, idle::Idle::new(cfg, share)).run(),
        Scenario::Shootout(a) => Reactor::new(poll, net, shootout::Shootout::new(cfg, a, share)).run(),
        // soak starts its own threads (`soak::run`), never through `coord`.
        Scenario::Soak(_) => Stats::default(),
    }
}
