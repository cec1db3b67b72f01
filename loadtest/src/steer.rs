//! The decisions between phases that need every thread's view, made once by the top-level
//! monitor from the merged `Reached` reports of all threads and processes.
//!
//! Owns: `Steer` (per scenario: what the next phase is and the value sent with it, or that the
//! run ends) and what it measures on the way (n2's iteration times, shootout's steps). Must not:
//! read sockets, run threads or talk to children; `coord` feeds it events and carries out its
//! answers. Pure bookkeeping over `Instant`s handed in, so it is unit-tested without a server.
//!
//! The phases it drives:
//! - `n2`: phase k (k >= 1) is iteration k; its value is N, the clients open in all once set up.
//!   Every thread reports k once each of its own clients has received all N messages of the
//!   iteration, so the iteration is over when every thread has reported it, in whatever process.
//!   With `--rate`, the next iteration opens an interval after the last one began, not before
//!   (`Next::OpenAt`), and its time runs from then.
//! - `shootout`: odd phases connect a step (value: the clients the run should have open in all),
//!   even phases sample it (each thread reports its share of the round trips as a histogram and
//!   the broadcast deliveries it counted); the next step, or the end, is decided here from the
//!   merged histogram.
//! - `broadcast`, `slow`: phase 1 publishes; the publisher's thread reports 1 with its final
//!   count once every publish is answered, the others at once; phase 2 carries that count to
//!   every subscriber, in every process, which drains until it has it (or `--drain` runs out).
//! - the others: the next phase, with no value.

use std::time::{Duration, Instant};

use crate::config::{Config, Scenario};
use crate::stats::{Hist, Stats, Step};

/// What the coordinator does once every source has reached a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Open this phase, with this value for the drivers.
    Open(u32, Option<u64>),
    /// Open this phase, with this value, at this instant (a paced n2 iteration).
    OpenAt(Instant, u32, Option<u64>),
    /// End the run in order: drivers stop sending and report.
    Finish,
}

#[derive(Debug)]
enum Kind {
    Plain,
    N2 {
        clients: u64,
        budget: Option<u64>,
        /// The least time from one iteration's start to the next (`--rate`).
        interval: Option<Duration>,
    },
    Shootout {
        target: u64,
        step: u64,
        most: u64,
        quantile: f64,
        limit_us: u64,
        clients: u64,
    },
    Broadcast,
}

/// The central decisions of one run.
#[derive(Debug)]
pub struct Steer {
    kind: Kind,
    duration: Duration,
    /// When the measured phase (phase 1) was opened.
    go: Option<Instant>,
    /// When the phase now running was opened.
    opened: Option<Instant>,
    /// n2: iteration times (us) since the last `take_second`, and all of them.
    second: Hist,
    iterations: Hist,
    steps: Vec<Step>,
    step_latency: Hist,
    pub notes: Vec<String>,
}

impl Steer {
    pub fn new(cfg: &Config) -> Steer {
        let c = &cfg.common;
        let kind = match &cfg.scenario {
            Scenario::N2(a) => Kind::N2 {
                clients: 0,
                budget: c.messages,
                interval: (a.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / a.rate)),
            },
            Scenario::Shootout(a) => Kind::Shootout {
                target: a.initial.unwrap_or(a.step).max(1).min(cfg.conns),
                step: a.step.max(1),
                most: cfg.conns,
                quantile: (a.percentile / 100.0).clamp(0.0, 1.0),
                limit_us: (a.limit_ms * 1000.0) as u64,
                clients: 0,
            },
            Scenario::Broadcast(_) | Scenario::Slow(_) => Kind::Broadcast,
            _ => Kind::Plain,
        };
        Steer {
            kind,
            duration: c.duration,
            go: None,
            opened: None,
            second: Hist::default(),
            iterations: Hist::default(),
            steps: Vec::new(),
            step_latency: Hist::default(),
            notes: Vec::new(),
        }
    }

    /// Every source still running reached `phase` at `now`, with `open` connections, the sum
    /// of the values given and the merged histogram. Returns what comes next.
    pub fn reached(&mut self, phase: u32, open: u64, value: Option<u64>, hist: Option<&Hist>, now: Instant) -> Next {
        let next = self.decide(phase, open, value, hist, now);
        let (opened, p) = match next {
            Next::Open(p, _) => (now, p),
            Next::OpenAt(at, p, _) => (at, p),
            Next::Finish => return next,
        };
        if p == 1 {
            self.go = Some(opened);
        }
        self.opened = Some(opened);
        next
    }

    fn time_up(&self, now: Instant) -> bool {
        self.go.is_some_and(|g| now >= g + self.duration)
    }

    fn decide(&mut self, phase: u32, open: u64, value: Option<u64>, hist: Option<&Hist>, now: Instant) -> Next {
        let time_up = self.time_up(now);
        let since = self.opened.map(|o| now.saturating_duration_since(o).as_micros() as u64);
        match &mut self.kind {
            Kind::Plain => Next::Open(phase + 1, None),
            Kind::Broadcast => Next::Open(phase + 1, if phase == 1 { value } else { None }),
            Kind::N2 { clients, budget, interval } => {
                if phase == 0 {
                    *clients = open;
                    if open == 0 {
                        self.notes.push("no client connected".into());
                        return Next::Finish;
                    }
                    return Next::Open(1, Some(open));
                }
                if let Some(us) = since {
                    self.second.record(us);
                    self.iterations.record(us);
                }
                let n = *clients;
                let over_budget = budget.is_some_and(|m| (u64::from(phase) + 1) * n > m);
                let due = interval.zip(self.opened).map(|(i, o)| o + i).filter(|&at| at > now);
                match due {
                    _ if time_up || over_budget => Next::Finish,
                    Some(at) => Next::OpenAt(at, phase + 1, Some(n)),
                    None => Next::Open(phase + 1, Some(n)),
                }
            }
            Kind::Shootout { target, step, most, quantile, limit_us, clients } => {
                if phase == 0 {
                    return Next::Open(1, Some(*target));
                }
                if phase % 2 == 1 {
                    // A step's clients are connected: sample it.
                    *clients = open;
                    if open == 0 {
                        self.notes.push("no client connected".into());
                        return Next::Finish;
                    }
                    return Next::Open(phase + 1, None);
                }
                let empty = Hist::default();
                let h = hist.unwrap_or(&empty);
                if h.is_empty() {
                    self.notes.push(format!("step with {clients} clients: no round trip measured"));
                    return Next::Finish;
                }
                self.steps.push(Step { clients: *clients, rtt: h.summary(), deliveries: value.unwrap_or(0) });
                self.step_latency.add(h);
                let over = h.q(*quantile) > *limit_us;
                if over || *target >= *most || time_up {
                    return Next::Finish;
                }
                *target = (*target + *step).min(*most);
                Next::Open(phase + 1, Some(*target))
            }
        }
    }

    /// n2: the iteration times recorded since the last call (for the per-second series).
    pub fn take_second(&mut self) -> Option<Hist> {
        if self.second.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.second))
    }

    /// Puts what was measured here into the merged stats.
    pub fn finish(self, stats: &mut Stats) {
        match self.kind {
            Kind::N2 { .. } => {
                stats.counters.iterations = self.iterations.0.len();
                stats.latency = self.iterations;
            }
            Kind::Shootout { .. } => {
                stats.steps = self.steps;
                stats.latency = self.step_latency;
            }
            Kind::Plain | Kind::Broadcast => {}
        }
        stats.notes.extend(self.notes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steer(kind: Kind, duration: Duration) -> Steer {
        Steer {
            kind,
            duration,
            go: None,
            opened: None,
            second: Hist::default(),
            iterations: Hist::default(),
            steps: Vec::new(),
            step_latency: Hist::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn n2_iterates_with_the_client_count_until_the_budget() {
        let mut s = steer(Kind::N2 { clients: 0, budget: Some(30), interval: None }, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(s.reached(0, 10, None, None, t), Next::Open(1, Some(10)));
        assert_eq!(s.reached(1, 10, None, None, t + Duration::from_millis(2)), Next::Open(2, Some(10)));
        assert_eq!(s.reached(2, 10, None, None, t + Duration::from_millis(3)), Next::Open(3, Some(10)));
        // A fourth iteration would send 40 messages of the 30 allowed.
        assert_eq!(s.reached(3, 10, None, None, t + Duration::from_millis(5)), Next::Finish);
        let mut stats = Stats::default();
        s.finish(&mut stats);
        assert_eq!(stats.counters.iterations, 3);
        assert!(stats.latency.q(1.0) >= 1900 && stats.latency.q(1.0) <= 2100, "{}", stats.latency.q(1.0));
    }

    #[test]
    fn n2_stops_at_the_duration_and_without_clients() {
        let mut s = steer(Kind::N2 { clients: 0, budget: None, interval: None }, Duration::from_millis(10));
        let t = Instant::now();
        assert_eq!(s.reached(0, 4, None, None, t), Next::Open(1, Some(4)));
        assert_eq!(s.reached(1, 4, None, None, t + Duration::from_millis(20)), Next::Finish);
        let mut none = steer(Kind::N2 { clients: 0, budget: None, interval: None }, Duration::from_secs(1));
        assert_eq!(none.reached(0, 0, None, None, t), Next::Finish);
    }

    #[test]
    fn a_paced_n2_opens_each_iteration_an_interval_after_the_last_began() {
        let interval = Some(Duration::from_millis(10));
        let mut s = steer(Kind::N2 { clients: 0, budget: None, interval }, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(s.reached(0, 3, None, None, t), Next::Open(1, Some(3)));
        // Done after 2 ms: the next one waits for the 10 ms mark.
        let at = t + Duration::from_millis(10);
        assert_eq!(s.reached(1, 3, None, None, t + Duration::from_millis(2)), Next::OpenAt(at, 2, Some(3)));
        // Done after 12 ms, past the next mark: at once.
        let late = at + Duration::from_millis(12);
        assert_eq!(s.reached(2, 3, None, None, late), Next::Open(3, Some(3)));
        let mut stats = Stats::default();
        s.finish(&mut stats);
        // Iteration times run from when each began, not from when it was decided.
        assert_eq!(stats.counters.iterations, 2);
        assert!(stats.latency.q(1.0) >= 11_900 && stats.latency.q(1.0) <= 12_100, "{}", stats.latency.q(1.0));
    }

    #[test]
    fn shootout_steps_until_the_merged_percentile_passes_the_limit() {
        let kind = Kind::Shootout { target: 2, step: 2, most: 100, quantile: 0.95, limit_us: 1000, clients: 0 };
        let mut s = steer(kind, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(s.reached(0, 0, None, None, t), Next::Open(1, Some(2)));
        assert_eq!(s.reached(1, 2, None, None, t), Next::Open(2, None));
        let mut fast = Hist::default();
        for _ in 0..40 {
            fast.record(100);
        }
        assert_eq!(s.reached(2, 2, Some(80), Some(&fast), t), Next::Open(3, Some(4)));
        assert_eq!(s.reached(3, 4, None, None, t), Next::Open(4, None));
        // Two threads' halves merged: the slow half puts p95 over the limit.
        let mut slow = fast.clone();
        for _ in 0..40 {
            slow.record(5000);
        }
        assert_eq!(s.reached(4, 4, Some(320), Some(&slow), t), Next::Finish);
        let mut stats = Stats::default();
        s.finish(&mut stats);
        assert_eq!(stats.steps.len(), 2);
        assert_eq!((stats.steps[0].clients, stats.steps[0].deliveries), (2, 80));
        assert_eq!(stats.steps[1].clients, 4);
        assert!(stats.steps[1].rtt.p95 > 1000);
    }

    #[test]
    fn broadcast_carries_the_final_count_to_phase_two() {
        let mut s = steer(Kind::Broadcast, Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(s.reached(0, 5, None, None, t), Next::Open(1, None));
        assert_eq!(s.reached(1, 5, Some(123), None, t), Next::Open(2, Some(123)));
    }
}
