//! The soak's WebSocket side, one `Driver` per reactor thread: steady subscribers, flappers
//! (unsubscribe, then resubscribe with `since`), churn (open, subscribe, read, close clean or with
//! a reset) and slow readers (subscribe to every channel, stop reading).
//!
//! Invariants it checks: every healthy subscriber (steady, flapper, churn while it lives) sees
//! each seq of its channel exactly once and in order from its subscribe on (a resume continues
//! after the last seq it saw); no message arrives before `subscribed` or after `unsubscribed`;
//! no healthy connection is closed by the server or fails to connect; at the end every steady
//! subscriber and subscribed flapper reached its channel's last acknowledged publish. A slow
//! reader may only end with the server's 1008, or with EOF after its backlog (the 1008 frame
//! dropped with the queue after the server's close timeout). Must not: publish, or judge the
//! server's resources (the sampler does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout::proto::OpCode;

use super::state::{add, channel_index, channel_name, SoakState};
use crate::net::{Driver, EndReason, Ended, Kind, Net};
use crate::wire::{json_str, json_u64};

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Steady,
    Flapper,
    Churn,
    Slow,
}

/// A healthy subscriber's place in its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not subscribed; (re)subscribe at this instant.
    Away(Instant),
    /// `subscribe` sent, `since` as sent.
    Subscribing(Option<u64>),
    /// Subscribed; a flapper unsubscribes, a churn connection closes, at the instant given.
    Live(Option<Instant>),
    Unsubscribing,
}

#[derive(Debug)]
struct Slot {
    role: Role,
    ch: usize,
    phase: Phase,
    /// The seq expected next, once subscribed.
    next: Option<u64>,
    /// Slow: channels subscribed, when it stopped reading, when it read again.
    subscribed: usize,
    paused: Option<Instant>,
    resumed: Option<Instant>,
}

/// How much of the mix one thread runs.
#[derive(Debug, Clone)]
pub struct Share {
    pub steady: u64,
    pub flappers: u64,
    pub slow: u64,
    pub churn_rate: f64,
    pub churn_life: Duration,
    pub flap_hold: Duration,
    pub slow_hold: Duration,
    pub channels: usize,
    /// Connection indices of this thread start here (they only name the connection).
    pub first_index: u64,
    pub drain: Duration,
}

/// A slow reader that read again (and pinged) and was still open this long after was not closed
/// by the server.
const SLOW_READ_AGAIN: Duration = Duration::from_secs(10);
/// A slow reader stops reading at least this long before a slow consumer closed elsewhere makes
/// it read again.
const SLOW_MIN: Duration = Duration::from_secs(5);
/// A connect outstanding this long is forgotten (it failed: counted by `on_end`).
const PENDING_FORGET: Duration = Duration::from_secs(30);

pub struct SoakDriver {
    share: Share,
    state: Arc<SoakState>,
    slots: HashMap<usize, Slot>,
    /// Connects queued and not yet open: index -> (role, queued at).
    pending: HashMap<u64, (Role, Instant)>,
    next_index: u64,
    next_churn: Option<Instant>,
    drain_until: Option<Instant>,
    done: bool,
    /// Connections this thread holds open or is opening, for the sampler.
    held: Arc<AtomicU64>,
    /// The server's count of slow consumers closed, as last seen.
    server_slow: u64,
}

impl SoakDriver {
    pub fn new(share: Share, state: Arc<SoakState>, held: Arc<AtomicU64>) -> SoakDriver {
        let next_index = share.first_index;
        SoakDriver {
            share,
            state,
            slots: HashMap::new(),
            pending: HashMap::new(),
            next_index,
            next_churn: None,
            drain_until: None,
            done: false,
            held,
            server_slow: 0,
        }
    }

    fn open(&mut self, net: &mut Net, role: Role) {
        let index = self.next_index;
        self.next_index += 1;
        self.pending.insert(index, (role, net.now));
        net.open(index, Kind::Ws);
    }

    fn count(&self, role: Role) -> u64 {
        let open = self.slots.values().filter(|s| s.role == role).count();
        let pending = self.pending.values().filter(|(r, _)| *r == role).count();
        (open + pending) as u64
    }

    /// Opens what the long-lived roles lack (at the start, and after a connection ended).
    fn top_up(&mut self, net: &mut Net) {
        for (role, want) in
            [(Role::Steady, self.share.steady), (Role::Flapper, self.share.flappers), (Role::Slow, self.share.slow)]
        {
            for _ in self.count(role)..want {
                self.open(net, role);
            }
        }
    }

    fn rand_between(net: &mut Net, mean: Duration) -> Duration {
        // Uniform in 0.5x..1.5x of the mean.
        mean.mul_f64(0.5 + net.rng.below(1000) as f64 / 1000.0)
    }

    fn subscribe(net: &mut Net, id: usize, ch: usize, since: Option<u64>) {
        let name = channel_name(ch);
        let text = match since {
            Some(s) => format!(r#"{{"op":"subscribe","channel":"{name}","since":{s}}}"#),
            None => format!(r#"{{"op":"subscribe","channel":"{name}"}}"#),
        };
        net.send(id, OpCode::Text, text.as_bytes());
    }

    /// A message for a healthy subscriber: in order, or a failure.
    fn on_seq(&mut self, id: usize, ch: usize, seq: u64) {
        let Some(s) = self.slots.get_mut(&id) else { return };
        let role = s.role;
        if ch != s.ch {
            self.state.fail(format!(
                "{role:?} subscriber of {} got a message of {}",
                channel_name(s.ch),
                channel_name(ch)
            ));
            return;
        }
        let expected = match (s.phase, s.next) {
            (Phase::Live(_) | Phase::Unsubscribing, Some(e)) => e,
            // After `unsubscribed` (Away) nothing of the channel may come: the server orders the
            // reply behind the publishes that reached its worker before the unsubscribe.
            (phase, _) => {
                self.state.fail(format!("{role:?} subscriber got seq {seq} of {} while {phase:?}", channel_name(ch)));
                return;
            }
        };
        if seq == expected {
            add(&self.state.n.delivered, 1);
            s.next = Some(seq + 1);
        } else if seq < expected {
            add(&self.state.n.dups, 1);
            self.state
                .fail(format!("{role:?} subscriber of {}: seq {seq} again (expected {expected})", channel_name(ch)));
        } else {
            add(&self.state.n.gaps, seq - expected);
            self.state.fail(format!(
                "{role:?} subscriber of {}: gap, seq {seq} after {}",
                channel_name(ch),
                expected - 1
            ));
            s.next = Some(seq + 1);
        }
    }

    fn on_subscribed(&mut self, net: &mut Net, id: usize, ch: usize, seq: u64, payload: &[u8]) {
        let share_channels = self.share.channels;
        let Some(s) = self.slots.get_mut(&id) else { return };
        if s.role == Role::Slow {
            s.subscribed += 1;
            if s.subscribed == share_channels {
                net.pause(id);
                s.paused = Some(net.now);
            }
            return;
        }
        let Phase::Subscribing(since) = s.phase else {
            self.state.fail(format!("{:?} subscriber: `subscribed` while {:?}", s.role, s.phase));
            return;
        };
        if ch != s.ch {
            self.state.fail(format!("subscribed to {} but the answer names {}", channel_name(s.ch), channel_name(ch)));
            return;
        }
        s.next = Some(match since {
            Some(last) => {
                if !contains(payload, br#""recovered":true"#) {
                    self.state.fail(format!(
                        "resume of {} after seq {last} not recovered: {}",
                        channel_name(ch),
                        String::from_utf8_lossy(payload)
                    ));
                    seq + 1
                } else if seq < last {
                    self.state.fail(format!("resume of {} after seq {last} answered seq {seq}", channel_name(ch)));
                    seq + 1
                } else {
                    add(&self.state.n.resumes, 1);
                    last + 1
                }
            }
            None => seq + 1,
        });
        let until = match s.role {
            Role::Flapper => Some(net.now + Self::rand_between(net, self.share.flap_hold)),
            Role::Churn => Some(net.now + Self::rand_between(net, self.share.churn_life)),
            _ => None,
        };
        s.phase = Phase::Live(until);
        add(&self.state.n.subscribes, 1);
    }

    /// Timed steps of every slot: flappers leave and come back, churn closes, slow readers read
    /// again and, if still open after that, are closed by us.
    fn step_slots(&mut self, net: &mut Net) {
        let now = net.now;
        // The server closed k slow consumers: the k readers paused longest (the same stream
        // reaches them all, so they hold the most) read again now, while the server still tries
        // to send its 1008 (for its close timeout), so that the answer can be seen.
        let server_slow = self.state.server_slow.load(Ordering::Relaxed);
        let closed = server_slow.saturating_sub(self.server_slow) as usize;
        self.server_slow = server_slow;
        let mut actions = Vec::new();
        if closed > 0 {
            let mut paused: Vec<(Instant, usize)> = self
                .slots
                .iter()
                .filter_map(|(&id, s)| match (s.role, s.paused, s.resumed) {
                    (Role::Slow, Some(p), None) if now >= p + SLOW_MIN => Some((p, id)),
                    _ => None,
                })
                .collect();
            paused.sort();
            actions.extend(paused.iter().take(closed).map(|&(_, id)| (id, 'r')));
        }
        for (&id, s) in &self.slots {
            match (s.role, s.phase) {
                (Role::Slow, _) => match (s.paused, s.resumed) {
                    (Some(p), None) if now >= p + self.share.slow_hold && !actions.contains(&(id, 'r')) => {
                        actions.push((id, 'r'))
                    }
                    (_, Some(r)) if now >= r + SLOW_READ_AGAIN => actions.push((id, 'o')),
                    _ => {}
                },
                (Role::Flapper, Phase::Live(Some(t))) if now >= t => actions.push((id, 'u')),
                (Role::Flapper, Phase::Away(t)) if now >= t => actions.push((id, 's')),
                (Role::Churn, Phase::Live(Some(t))) if now >= t => actions.push((id, 'c')),
                _ => {}
            }
        }
        for (id, what) in actions {
            match what {
                'r' => {
                    net.resume(id);
                    // A server socket that gave up long ago is gone without a word (an orphan
                    // whose zero-window probes ran out sends no RST): a ping then draws the RST
                    // that tells it from a connection the server has not closed (which answers).
                    net.send(id, OpCode::Ping, b"soak");
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.resumed = Some(now);
                    }
                }
                'o' => {
                    add(&self.state.n.slow_open, 1);
                    self.slots.remove(&id);
                    net.close(id, true);
                }
                'u' => {
                    let ch = self.slots[&id].ch;
                    let text = format!(r#"{{"op":"unsubscribe","channel":"{}"}}"#, channel_name(ch));
                    net.send(id, OpCode::Text, text.as_bytes());
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.phase = Phase::Unsubscribing;
                    }
                }
                's' => {
                    let s = &self.slots[&id];
                    let (ch, since) = (s.ch, s.next.map(|n| n - 1));
                    Self::subscribe(net, id, ch, since);
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.phase = Phase::Subscribing(since);
                    }
                }
                _ => {
                    // A churn connection ends: half with a close frame and FIN, half with a reset.
                    let abort = net.rng.below(2) == 0;
                    add(if abort { &self.state.n.churn_reset } else { &self.state.n.churn_clean }, 1);
                    self.slots.remove(&id);
                    net.close(id, abort);
                }
            }
        }
    }

    /// Whether every subscribed long-lived subscriber reached its channel's last acknowledged seq.
    fn behind(&self) -> Vec<(Role, usize, u64, u64)> {
        let mut behind = Vec::new();
        for s in self.slots.values() {
            if matches!(s.role, Role::Steady | Role::Flapper)
                && matches!(s.phase, Phase::Live(_) | Phase::Unsubscribing)
            {
                let acked = self.state.acked[s.ch].load(Ordering::Relaxed);
                let seen = s.next.map_or(0, |n| n - 1);
                if seen < acked {
                    behind.push((s.role, s.ch, seen, acked));
                }
            }
        }
        behind
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Driver for SoakDriver {
    fn start(&mut self, net: &mut Net) {
        self.top_up(net);
        if self.share.churn_rate > 0.0 {
            self.next_churn = Some(net.now);
        }
    }

    fn on_phase(&mut self, _net: &mut Net, _phase: u32) {}

    fn on_open(&mut self, net: &mut Net, id: usize) {
        let Some(index) = net.index_of(id) else { return };
        let Some((role, _)) = self.pending.remove(&index) else { return };
        let ch = (index % self.share.channels as u64) as usize;
        let mut slot =
            Slot { role, ch, phase: Phase::Subscribing(None), next: None, subscribed: 0, paused: None, resumed: None };
        match role {
            Role::Slow => {
                add(&self.state.n.slow_opened, 1);
                for c in 0..self.share.channels {
                    Self::subscribe(net, id, c, None);
                }
            }
            Role::Churn => {
                add(&self.state.n.churn_opened, 1);
                Self::subscribe(net, id, ch, None);
            }
            Role::Flapper if self.drain_until.is_none() => {
                // Flappers start away for a moment so that their cycles spread out.
                let d = Self::rand_between(net, self.share.flap_hold / 5);
                slot.phase = Phase::Away(net.now + d);
            }
            _ => Self::subscribe(net, id, ch, None),
        }
        self.slots.insert(id, slot);
    }

    fn on_message(&mut self, net: &mut Net, id: usize, text: bool, payload: &[u8], _at: Instant) {
        let Some(role) = self.slots.get(&id).map(|s| s.role) else { return };
        if !text {
            self.state.fail(format!("{role:?} subscriber got a binary message"));
            return;
        }
        let op = json_str(payload, "op").unwrap_or_default();
        let ch = json_str(payload, "channel").and_then(channel_index);
        match (op, ch) {
            (b"message", Some(ch)) if ch < self.share.channels => {
                if role != Role::Slow {
                    match json_u64(payload, "seq") {
                        Some(seq) => self.on_seq(id, ch, seq),
                        None => self.state.fail(format!("a message without seq: {}", String::from_utf8_lossy(payload))),
                    }
                }
            }
            (b"subscribed", Some(ch)) if ch < self.share.channels => {
                let seq = json_u64(payload, "seq").unwrap_or(0);
                self.on_subscribed(net, id, ch, seq, payload);
            }
            (b"unsubscribed", Some(_)) => match self.slots.get_mut(&id) {
                Some(s) if s.phase == Phase::Unsubscribing => {
                    add(&self.state.n.unsubscribes, 1);
                    let away = Self::rand_between(net, self.share.flap_hold / 5);
                    s.phase = Phase::Away(net.now + away);
                }
                _ => self.state.fail(format!("{role:?} subscriber: unexpected `unsubscribed`")),
            },
            _ => self.state.fail(format!("{role:?} subscriber got {}", String::from_utf8_lossy(payload))),
        }
    }

    fn on_end(&mut self, net: &mut Net, end: &Ended) {
        let slot = end.id.and_then(|id| self.slots.remove(&id));
        match slot {
            Some(s) if s.role == Role::Slow => match &end.reason {
                EndReason::CloseFrame(1008) => add(&self.state.n.slow_1008, 1),
                EndReason::Eof | EndReason::Reset => add(&self.state.n.slow_eof, 1),
                r => self.state.fail(format!("slow reader ended with {} (expected 1008 or EOF)", r.label())),
            },
            Some(s) if end.reason != EndReason::Local => {
                self.state.fail(format!(
                    "{:?} subscriber of {} ended: {}",
                    s.role,
                    channel_name(s.ch),
                    end.reason.label()
                ));
            }
            Some(_) => {}
            None if !end.was_open && !self.done => {
                self.state.fail(format!("a connect failed: {}", end.reason.label()));
            }
            None => {}
        }
        if self.drain_until.is_none() && !self.state.stopping() {
            self.top_up(net);
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        let now = net.now;
        self.held.store(self.slots.len() as u64 + net.opening() as u64, Ordering::Relaxed);
        self.pending.retain(|_, (_, at)| now.saturating_duration_since(*at) < PENDING_FORGET);
        if self.state.stopping() && self.drain_until.is_none() {
            // The publisher has stopped: from now on only wait for the last publishes to arrive.
            self.drain_until = Some(now + self.share.drain);
            net.cancel_queued();
        }
        if let Some(until) = self.drain_until {
            let behind = self.behind();
            if behind.is_empty() || now >= until {
                for (role, ch, seen, acked) in behind.iter().take(5) {
                    self.state.fail(format!(
                        "{role:?} subscriber of {} saw up to seq {seen}, but {acked} was published",
                        channel_name(*ch)
                    ));
                }
                if behind.len() > 5 {
                    self.state.fail(format!("... and {} more subscribers behind", behind.len() - 5));
                }
                self.done = true;
            }
            return Some(now + Duration::from_millis(20));
        }
        if let Some(t) = self.next_churn {
            let mut t = t;
            while t <= now {
                self.open(net, Role::Churn);
                t += Duration::from_secs_f64(1.0 / self.share.churn_rate);
            }
            self.next_churn = Some(t);
        }
        self.step_slots(net);
        Some(now + Duration::from_millis(50))
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn finish(&mut self, _net: &mut Net) {}
}
