//! `broadcast` and `slow`: N subscribers and one publisher; latency from the timestamp the
//! publisher wrote into each message, and loss, duplicates and order from sequence numbers.
//!
//! Owns: the three wire dialects and the publisher's schedule. `--protocol fanout` subscribes to a
//! channel, reads the channel's `seq` from `subscribed` and from each `message`, and publishes
//! with `publish` ops (acknowledged with `ack`) or `POST /api/publish`. `--protocol raw` is for a
//! server that sends every message to every connection: connection 0 publishes `{"t":..,"n":..}`
//! and receives its own messages like everyone else, and `n` plays the part of `seq`.
//! `--protocol pusher` waits for `pusher:connection_established`, subscribes, waits for
//! `pusher_internal:subscription_succeeded` and answers `pusher:ping`; it publishes through the
//! signed HTTP API, and `n` in the event's data (a JSON string) plays the part of `seq`. The HTTP
//! requests themselves are `publisher`'s, the Pusher frames `crate::pusher`'s. With `slow`
//! subscribers (spread evenly over all connections), those stop reading once subscribed; they
//! are read again only after the run, to learn whether the server closed them.
//!
//! Payload size: `--payload` is the size of the data object (timestamp, counter, padding).
//!
//! Ending: phase 1 publishes. The publisher's thread reports phase 1 reached with its final count
//! (last acknowledged seq, or messages sent in raw mode) once every publish is answered or the
//! drain ran out; every other thread reports it at once. The monitor opens phase 2 with that
//! count, in every process alike, and each thread's subscribers are done once they have all of
//! it, or when `--drain` after the later of the deadline and phase 2 runs out: a message that
//! never came is then counted lost, whichever process its subscriber lives in. Only when the
//! count is unknown (the publisher's process died) do subscribers end on `QUIET`.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use fanout::proto::OpCode;

use super::phase::{filler, micros_between, open_all, Setup, Window};
use super::publisher::{Api, HttpPublisher};
use crate::config::{BroadcastArgs, Config, Via, Wire};
use crate::net::{Driver, Ended, Kind, Net};
use crate::plan::{is_slow, Share};
use crate::pusher::{self, Step, Subscriber};
use crate::stats::{SeqOutcome, SeqTracker};
use crate::wire::{json_str, json_u64};

/// Without the publisher's final count, a subscriber that hears nothing for this long after the
/// publisher stopped is done.
const QUIET: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Subscriber,
    Slow,
    Publisher,
    /// raw: connection 0 publishes and receives like every other client.
    PublisherSubscriber,
}

#[derive(Debug)]
struct Slot {
    role: Role,
    tracker: Option<SeqTracker>,
    /// --protocol pusher: where the subscription is.
    pusher: Subscriber,
}

pub struct Broadcast {
    share: Share,
    wire: Wire,
    via: Via,
    channel: String,
    first_message: Option<String>,
    total: u64,
    slow: u64,
    pad: String,
    rate: f64,
    interval_us: u64,
    window_size: u64,
    duration: Duration,
    drain: Duration,
    /// Global index of the publisher's (first) connection, if this thread has it.
    publisher_index: Option<u64>,
    /// How many connections the publisher opens from `publisher_index` on (0 for raw).
    publisher_conns: u64,
    /// The WebSocket publisher's connection (fanout over ws, raw).
    publisher: Option<usize>,
    /// The HTTP publisher (fanout over http, pusher), on the publisher's thread.
    http: Option<HttpPublisher>,
    setup: Setup,
    window: Window,
    slots: Vec<Option<Slot>>,
    // Publisher state.
    budget: u64,
    sent: u64,
    unacked: u64,
    ack_times: VecDeque<Instant>,
    next_due: Option<Instant>,
    last_seq: u64,
    max_lag: Duration,
    final_seq: Option<u64>,
    /// Phase 1 reported (the publisher's final count, or at once on the other threads).
    reported: bool,
    /// Phase 2 opened: when, and the publisher's final count it carried.
    published: Option<(Instant, Option<u64>)>,
    // Subscriber state.
    /// A Pusher event's data, unescaped (kept for its capacity).
    scratch: Vec<u8>,
    last_delivery: Option<Instant>,
    /// The clock reading of the last receive time seen: every frame of one read shares it, and
    /// converting an `Instant` per delivery was 8% of the generator's time.
    at_ns: Option<(Instant, u64)>,
    slow_resumed: bool,
    slow_closed: u64,
    last_check: Option<Instant>,
    finished: bool,
}

impl Broadcast {
    pub fn new(cfg: &Config, args: &BroadcastArgs, slow: u64, share: Share) -> Broadcast {
        let c = &cfg.common;
        let publisher_index = share.first.then_some(match args.protocol {
            Wire::Fanout | Wire::Pusher => cfg.conns,
            Wire::Raw => 0,
        });
        let publisher_conns = args.publisher_conns();
        let extra = if publisher_index.is_some() { publisher_conns } else { 0 };
        let interval_us = if args.rate > 0.0 { (1e6 / args.rate).round() as u64 } else { 0 };
        let api = match (args.protocol, args.via()) {
            (Wire::Pusher, _) => Some(Api::Pusher {
                path: format!("/apps/{}/events", args.app_id.as_deref().unwrap_or_default()),
                key: args.app_key.clone().unwrap_or_default(),
                secret: args.app_secret.clone().unwrap_or_default(),
            }),
            (Wire::Fanout, Via::Http) => Some(Api::Fanout { key: args.api_key.clone() }),
            _ => None,
        };
        let http = api
            .filter(|_| publisher_index.is_some())
            .map(|api| HttpPublisher::new(api, cfg.target.endpoint(cfg.conns).host.clone(), args.channel.clone()));
        Broadcast {
            wire: args.protocol,
            via: args.via(),
            channel: args.channel.clone(),
            first_message: args.first_message.clone(),
            total: cfg.conns,
            slow,
            // The data object's fixed part ({"t":..,"n":..,"p":""}) is about 40 bytes.
            pad: filler(c.payload.saturating_sub(40)),
            rate: args.rate,
            interval_us,
            window_size: args.in_flight.max(1) as u64,
            duration: c.duration,
            drain: c.drain,
            publisher_index,
            publisher_conns,
            publisher: None,
            http,
            setup: Setup::new(share.conns.end - share.conns.start + extra, c.setup_timeout + cfg.ramp_time()),
            window: Window::default(),
            slots: Vec::new(),
            budget: c.messages.unwrap_or(u64::MAX),
            sent: 0,
            unacked: 0,
            ack_times: VecDeque::new(),
            next_due: None,
            last_seq: 0,
            max_lag: Duration::ZERO,
            final_seq: None,
            reported: false,
            published: None,
            scratch: Vec::new(),
            last_delivery: None,
            at_ns: None,
            slow_resumed: false,
            slow_closed: 0,
            last_check: None,
            finished: false,
            share,
        }
    }

    fn slot(&mut self, id: usize) -> Option<&mut Slot> {
        self.slots.get_mut(id).and_then(Option::as_mut)
    }

    fn publish(&mut self, net: &mut Net, now: Instant) {
        let n = self.sent + 1;
        let t = net.clock.ns_at(now);
        let (pad, channel) = (&self.pad, &self.channel);
        let len = match (&mut self.http, self.publisher, self.wire) {
            (Some(http), _, _) => Some(http.publish(net, now, n, t, pad)),
            (None, Some(id), Wire::Fanout) => net.send_with(id, OpCode::Text, |b| {
                let _ = write!(
                    b,
                    r#"{{"op":"publish","channel":"{channel}","id":{n},"data":{{"t":{t},"n":{n},"p":"{pad}"}}}}"#
                );
            }),
            (None, Some(id), Wire::Raw) => net.send_with(id, OpCode::Text, |b| {
                let _ = write!(b, r#"{{"t":{t},"n":{n},"p":"{pad}"}}"#);
            }),
            _ => None,
        };
        let Some(len) = len else {
            self.window.stop(now);
            return;
        };
        self.sent = n;
        self.budget -= 1;
        self.unacked += 1;
        if self.http.is_none() {
            // An HTTP publisher keeps its own queue per connection.
            self.ack_times.push_back(now);
        }
        net.stats.counters.count_sent(len);
        self.window.touch(now);
    }

    /// The server answered the publish written at `sent` (ack op, HTTP 200, or in raw mode our
    /// own message back).
    fn acked(&mut self, net: &mut Net, sent: Option<Instant>, seq: Option<u64>, ok: bool, at: Instant) {
        self.unacked = self.unacked.saturating_sub(1);
        if let Some(sent) = sent {
            net.stats.ack_latency.record(micros_between(sent, at));
        }
        if ok {
            net.stats.counters.acked += 1;
            if let Some(s) = seq {
                self.last_seq = self.last_seq.max(s);
            }
        } else {
            net.stats.counters.errors += 1;
        }
    }

    /// Publishes what is due; returns when the next publish is due.
    fn run_publisher(&mut self, net: &mut Net) -> Option<Instant> {
        let ready = match (&self.http, self.publisher) {
            (Some(http), _) => http.ready(),
            (None, Some(id)) => net.is_open(id),
            (None, None) => return None,
        };
        let now = net.now;
        if !self.window.tick(now) || !ready {
            self.window.stop(now);
            return None;
        }
        if self.rate > 0.0 {
            let interval = Duration::from_micros(self.interval_us.max(1));
            let mut due = *self.next_due.get_or_insert(now);
            // A bounded burst when behind, so reads are not starved; the lag shows in latency.
            let mut burst = 0;
            while due <= now && burst < 10_000 && self.window.running() {
                if self.budget == 0 {
                    self.window.stop(now);
                    break;
                }
                self.max_lag = self.max_lag.max(now - due);
                self.publish(net, now);
                due += interval;
                burst += 1;
            }
            self.next_due = Some(due);
            return Some(due);
        }
        while self.unacked < self.window_size && self.window.running() {
            if self.budget == 0 {
                self.window.stop(now);
                break;
            }
            self.publish(net, now);
        }
        None
    }

    /// A delivery: `payload` holds its `seq` (or `n`) and `t`; `len` is the size counted as
    /// received (the frame's payload).
    fn on_delivery(&mut self, net: &mut Net, id: usize, payload: &[u8], len: usize, at: Instant) {
        let (seq, t) = match self.wire {
            Wire::Fanout => (json_u64(payload, "seq"), json_u64(payload, "t")),
            Wire::Raw | Wire::Pusher => (json_u64(payload, "n"), json_u64(payload, "t")),
        };
        let (Some(seq), Some(t)) = (seq, t) else {
            if self.wire != Wire::Raw {
                net.stats.counters.errors += 1;
            }
            return;
        };
        let Some(slot) = self.slot(id) else { return };
        let role = slot.role;
        let Some(tracker) = slot.tracker.as_mut() else {
            return;
        };
        let outcome = tracker.record(seq);
        let c = &mut net.stats.counters;
        match outcome {
            SeqOutcome::Fresh | SeqOutcome::Late => {
                if outcome == SeqOutcome::Late {
                    c.out_of_order += 1;
                }
                c.received += 1;
                c.bytes_received += len as u64;
                // Recorded as measured; the coordinated-omission correction for --rate is
                // applied to the merged histogram (`Hist::corrected`).
                let at_ns = match self.at_ns {
                    Some((seen, ns)) if seen == at => ns,
                    _ => {
                        let ns = net.clock.ns_at(at);
                        self.at_ns = Some((at, ns));
                        ns
                    }
                };
                net.record(at_ns.saturating_sub(t) / 1000);
                self.window.touch(at);
                self.last_delivery = Some(at);
                if role == Role::PublisherSubscriber && self.window.go.is_some() {
                    let sent = self.ack_times.pop_front();
                    self.acked(net, sent, Some(seq), true, at);
                }
            }
            SeqOutcome::Duplicate => c.duplicated += 1,
            SeqOutcome::Old => {}
        }
    }

    /// A frame on a Pusher subscriber's connection.
    fn on_pusher(&mut self, net: &mut Net, id: usize, role: Role, frame: &[u8], at: Instant) {
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        match slot.pusher.on_frame(frame, self.channel.as_bytes(), pusher::EVENT.as_bytes()) {
            Step::Subscribe => {
                let channel = &self.channel;
                net.send_with(id, OpCode::Text, |b| pusher::subscribe(b, channel));
            }
            Step::Pong => {
                net.send(id, OpCode::Text, pusher::PONG);
            }
            Step::Subscribed => {
                slot.tracker = Some(SeqTracker::new(0));
                self.setup.done_one();
                if role == Role::Slow {
                    net.pause(id);
                }
            }
            Step::Delivery(data) => {
                let mut text = std::mem::take(&mut self.scratch);
                if data.text_into(&mut text) {
                    self.on_delivery(net, id, &text, frame.len(), at);
                } else {
                    net.stats.counters.errors += 1;
                }
                self.scratch = text;
            }
            Step::Error(data) => {
                net.stats.counters.errors += 1;
                let code = json_u64(data, "code").or_else(|| json_u64(data, "status"));
                net.stats.fail(format!("pusher:error {}", code.map_or_else(|| "?".to_owned(), |c| c.to_string())));
                if slot.tracker.is_none() {
                    // It will never be set up: stop waiting for it.
                    net.close(id, false);
                }
            }
            Step::Ignore => {}
            Step::Garbled => net.stats.counters.errors += 1,
        }
    }

    /// Whether every healthy subscriber of this thread has everything up to `last`.
    fn all_caught_up(&self, last: u64) -> bool {
        self.slots.iter().flatten().all(|s| match s.role {
            Role::Subscriber | Role::PublisherSubscriber => {
                s.tracker.as_ref().is_none_or(|t| t.base() + t.unique >= last)
            }
            _ => true,
        })
    }
}

impl Driver for Broadcast {
    fn start(&mut self, net: &mut Net) {
        open_all(net, &self.share);
        if let Some(index) = self.publisher_index.filter(|_| self.wire != Wire::Raw) {
            let kind = if self.via == Via::Http { Kind::Raw } else { Kind::Ws };
            for k in 0..self.publisher_conns {
                net.open(index + k, kind);
            }
        }
        self.setup.check(net);
    }

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase == 1 {
            self.window.begin(net.now, self.duration);
            if self.publisher_index.is_none() {
                // Nothing to publish here: phase 1 is the publisher's to finish.
                self.reported = true;
                net.reached(1);
            }
        }
        if phase == 2 {
            self.published = Some((net.now, net.shared.phase_arg(2)));
        }
    }

    fn on_open(&mut self, net: &mut Net, id: usize) {
        let Some(index) = net.index_of(id) else { return };
        let publisher = self.publisher_index.is_some_and(|p| (p..p + self.publisher_conns.max(1)).contains(&index));
        let role = if publisher {
            match self.wire {
                Wire::Fanout | Wire::Pusher => Role::Publisher,
                Wire::Raw => Role::PublisherSubscriber,
            }
        } else if is_slow(index, self.total, self.slow) {
            Role::Slow
        } else {
            Role::Subscriber
        };
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, || None);
        }
        let mut slot = Slot { role, tracker: None, pusher: Subscriber::default() };
        match (&mut self.http, role) {
            (Some(http), Role::Publisher) => http.add(net, id),
            (None, Role::Publisher | Role::PublisherSubscriber) => self.publisher = Some(id),
            _ => {}
        }
        match (self.wire, role) {
            (_, Role::Publisher) => self.setup.done_one(),
            // Subscribes once the server says the connection is established.
            (Wire::Pusher, _) => {}
            (Wire::Fanout, _) => {
                let channel = &self.channel;
                net.send_with(id, OpCode::Text, |b| {
                    let _ = write!(b, r#"{{"op":"subscribe","channel":"{channel}"}}"#);
                });
            }
            (Wire::Raw, _) => {
                if let Some(m) = &self.first_message {
                    net.send(id, OpCode::Text, m.as_bytes());
                }
                slot.tracker = Some(SeqTracker::new(0));
                if role == Role::Slow {
                    net.pause(id);
                }
                self.setup.done_one();
            }
        }
        self.slots[id] = Some(slot);
    }

    fn on_message(&mut self, net: &mut Net, id: usize, _text: bool, payload: &[u8], at: Instant) {
        let Some(slot) = self.slot(id) else { return };
        let role = slot.role;
        if role == Role::Slow && self.slow_resumed {
            // The backlog of a slow subscriber, read after the run: not measured.
            return;
        }
        match self.wire {
            Wire::Raw => return self.on_delivery(net, id, payload, payload.len(), at),
            Wire::Pusher => return self.on_pusher(net, id, role, payload, at),
            Wire::Fanout => {}
        }
        let op = json_str(payload, "op").unwrap_or_default();
        match (role, op) {
            (Role::Publisher, b"ack") => {
                let sent = self.ack_times.pop_front();
                self.acked(net, sent, json_u64(payload, "seq"), true, at);
            }
            (Role::Publisher, b"error") => {
                net.stats.fail("publish: error op");
                let sent = self.ack_times.pop_front();
                self.acked(net, sent, None, false, at);
            }
            (_, b"message") => self.on_delivery(net, id, payload, payload.len(), at),
            (_, b"subscribed") => {
                let base = json_u64(payload, "seq").unwrap_or(0);
                if let Some(slot) = self.slot(id) {
                    if slot.tracker.is_none() {
                        slot.tracker = Some(SeqTracker::new(base));
                        self.setup.done_one();
                        if role == Role::Slow {
                            net.pause(id);
                        }
                    }
                }
            }
            (_, b"error") => {
                net.stats.counters.errors += 1;
                net.stats.fail(format!(
                    "server error: {}",
                    String::from_utf8_lossy(json_str(payload, "code").unwrap_or(b"?"))
                ));
            }
            _ => {}
        }
    }

    fn on_raw(&mut self, net: &mut Net, id: usize, data: &[u8], at: Instant) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        http.on_data(net, id, data);
        let mut answers = std::mem::take(&mut http.answers);
        for a in answers.drain(..) {
            self.acked(net, Some(a.sent), a.seq, a.status == 200, at);
        }
        if let Some(http) = self.http.as_mut() {
            // Back, empty, for its capacity.
            http.answers = answers;
        }
    }

    fn on_end(&mut self, net: &mut Net, end: &Ended) {
        let slot = end.id.and_then(|id| self.slots.get_mut(id)?.take());
        match &slot {
            None if !end.was_open => self.setup.done_one(),
            Some(s) if s.tracker.is_none() && s.role != Role::Publisher => {
                // Closed before its subscription was confirmed.
                self.setup.done_one();
            }
            _ => {}
        }
        if let Some(s) = slot {
            if s.role == Role::Slow && end.reason != crate::net::EndReason::Local {
                self.slow_closed += 1;
            }
            match (&mut self.http, end.id) {
                // An HTTP connection is replaced; its requests in flight will never be answered.
                (Some(http), Some(id)) if s.role == Role::Publisher => {
                    let lost = http.on_end(net, id);
                    self.unacked = self.unacked.saturating_sub(lost);
                }
                _ if matches!(s.role, Role::Publisher | Role::PublisherSubscriber) => {
                    self.publisher = None;
                    self.window.stop(net.now);
                }
                _ => {}
            }
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        let setup_wake = self.setup.check(net);
        if self.window.go.is_none() {
            return setup_wake;
        }
        let now = net.now;
        let publish_wake = self.run_publisher(net);
        self.window.tick(now);
        let Some(stopped) = self.window.stopped else {
            return [publish_wake, self.window.deadline].into_iter().flatten().min();
        };
        if !self.slow_resumed && self.slow > 0 {
            // Read the slow subscribers again to learn which ones the server closed.
            self.slow_resumed = true;
            let ids: Vec<usize> = (0..self.slots.len())
                .filter(|&id| matches!(self.slots[id], Some(Slot { role: Role::Slow, .. })))
                .collect();
            for id in ids {
                net.resume(id);
            }
        }
        // The publisher's thread: once every publish is answered (or the drain ran out), the
        // final count is known; the monitor passes it to every thread of every process.
        if self.publisher_index.is_some() && self.final_seq.is_none() {
            let gone = match &self.http {
                Some(http) => !http.ready(),
                None => self.publisher.is_none(),
            };
            if self.unacked == 0 || gone || now >= stopped + self.drain {
                let last = match self.wire {
                    Wire::Fanout | Wire::Pusher => self.last_seq,
                    Wire::Raw => self.sent,
                };
                self.final_seq = Some(last);
            }
        }
        if let (false, Some(last)) = (self.reported, self.final_seq) {
            self.reported = true;
            net.reached_with(1, Some(last), None);
        }
        // Subscribers: done once caught up with the publisher's final count, or once the drain
        // ran out; on a quiet spell only when that count never came.
        if self.last_check.is_none_or(|t| now >= t + Duration::from_millis(20)) {
            self.last_check = Some(now);
            let slow_wait = self.slow > 0 && now < stopped + Duration::from_millis(300);
            let done = match self.published {
                Some((at, Some(last))) => self.all_caught_up(last) || now >= stopped.max(at) + self.drain,
                Some((at, None)) => {
                    let quiet = self.last_delivery.unwrap_or(stopped).max(stopped).max(at) + QUIET;
                    now >= quiet || now >= stopped.max(at) + self.drain
                }
                None => false,
            };
            if done && !slow_wait {
                self.finished = true;
            }
        }
        [publish_wake, Some(now + Duration::from_millis(20))].into_iter().flatten().min()
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
        net.stats.co_interval_us = self.interval_us;
        let d = &mut net.stats.delivery;
        let mut slow_total = 0;
        for slot in self.slots.iter().flatten() {
            match (slot.role, &slot.tracker) {
                (Role::Subscriber | Role::PublisherSubscriber, Some(t)) => {
                    d.subscribers += 1;
                    d.sum_base += t.base();
                    d.unique += t.unique;
                }
                (Role::Slow, _) => slow_total += 1,
                _ => {}
            }
        }
        d.slow_closed += self.slow_closed;
        d.slow_open += slow_total;
        if let Some(last) = self.final_seq {
            d.last_seq = last;
        }
        let tolerated = Duration::from_micros(self.interval_us * 5).max(Duration::from_millis(10));
        if self.max_lag > tolerated {
            net.stats
                .notes
                .push(format!("the publisher fell behind its schedule by up to {} ms", self.max_lag.as_millis()));
        }
    }
}
