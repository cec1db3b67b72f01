//! Pusher webhooks (`channel_occupied`, `channel_vacated`, `member_added`, `member_removed`,
//! `client_event`, `cache_miss`), batched per target and POSTed from a thread of their own.
//!
//! Owns: the webhook body and headers, the queue, batching, retries and their counters.
//! Invariants: [`Webhooks::send`] never blocks and never does I/O (the event loops call it): it
//! filters, counts and hands the event to a channel; every HTTP request happens on the sender
//! thread. Memory is bounded: at most `queue_capacity` events are held, from `send` until their
//! batch is delivered or given up; over that, events are dropped and counted. Events for one
//! target go out in the order they were sent; a batch is retried before the next one for the
//! same target is tried, and given up after `retries`. A dead endpoint costs the thread at most
//! `request_timeout` per attempt, so other targets are delayed but never blocked for good.
//! TLS is not compiled in: targets must be `http://` ([`WebhookTarget::check_url`]).

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::signature::webhook_signature;

/// Where one app's webhooks go, and which events it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The endpoint, `http://host[:port]/path`.
    pub url: String,
    /// Sent as `X-Pusher-Key`.
    pub app_key: String,
    /// Signs the body (`X-Pusher-Signature`); never sent or logged.
    pub app_secret: String,
    /// The event names this target receives; empty means all of them.
    pub events: Vec<String>,
}

impl WebhookTarget {
    /// Whether this target asked for events named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == name)
    }

    /// Refuses a URL this build cannot deliver to (anything but `http://host...`), so that the
    /// settings can say so at startup rather than count failures later.
    pub fn check_url(&self) -> Result<(), String> {
        match self.url.strip_prefix("http://") {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
            _ => Err(format!(
                "webhook URL {:?}: only http://host[:port]/path is supported (no TLS in this build)",
                self.url
            )),
        }
    }
}

/// One webhook event. Build it with the constructors, which set the fields each kind carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEvent {
    /// `channel_occupied`, `channel_vacated`, `member_added`, `member_removed`, `client_event` or
    /// `cache_miss`.
    pub name: &'static str,
    /// The channel the event is about.
    pub channel: String,
    /// The member (member events) or, on a presence channel, the sender of a client event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A client event's name (`client-...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A client event's data, the string as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The socket that sent a client event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
}

impl WebhookEvent {
    fn about(name: &'static str, channel: &str) -> Self {
        WebhookEvent { name, channel: channel.into(), user_id: None, event: None, data: None, socket_id: None }
    }
    /// A channel got its first subscriber.
    pub fn channel_occupied(channel: &str) -> Self {
        Self::about("channel_occupied", channel)
    }
    /// A channel lost its last subscriber.
    pub fn channel_vacated(channel: &str) -> Self {
        Self::about("channel_vacated", channel)
    }
    /// A user's first connection joined a presence channel.
    pub fn member_added(channel: &str, user_id: &str) -> Self {
        WebhookEvent { user_id: Some(user_id.into()), ..Self::about("member_added", channel) }
    }
    /// A user's last connection left a presence channel.
    pub fn member_removed(channel: &str, user_id: &str) -> Self {
        WebhookEvent { user_id: Some(user_id.into()), ..Self::about("member_removed", channel) }
    }
    /// A client sent `event` on a private or presence channel (`user_id` on presence channels).
    pub fn client_event(channel: &str, event: &str, data: &str, socket_id: &str, user_id: Option<&str>) -> Self {
        WebhookEvent {
            user_id: user_id.map(Into::into),
            event: Some(event.into()),
            data: Some(data.into()),
            socket_id: Some(socket_id.into()),
            ..Self::about("client_event", channel)
        }
    }
    /// A client subscribed to a cache channel that holds no event.
    pub fn cache_miss(channel: &str) -> Self {
        Self::about("cache_miss", channel)
    }
}

/// How webhooks are queued, batched and retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Events held at most, queued or in batches not yet delivered (default 10,000). Over it,
    /// `send` drops the event and counts it: memory stays bounded when an endpoint is down.
    pub queue_capacity: usize,
    /// How long a target's batch stays open after its first event (default 250 ms): longer means
    /// fewer, larger requests and later delivery.
    pub batch_window: Duration,
    /// A batch is sent at once when it holds this many events (default 100).
    pub max_batch_events: usize,
    /// One request's whole time: connect, send, response (default 5 s). It bounds what a hanging
    /// endpoint costs the sender thread, and so the other targets, per attempt.
    pub request_timeout: Duration,
    /// Attempts after the first before a batch is given up (default 3).
    pub retries: u32,
    /// The first retry's delay, doubled for each further one (default 100 ms).
    pub backoff: Duration,
    /// How long `stop` keeps delivering what is queued (default 5 s); what is left then is
    /// counted as failed.
    pub stop_timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            queue_capacity: 10_000,
            batch_window: Duration::from_millis(250),
            max_batch_events: 100,
            request_timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(100),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// The sender's counters, read at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookMetrics {
    /// Events held now: queued, batched, or in a batch being sent or retried.
    pub queued: usize,
    /// Batches delivered (a 2xx answer).
    pub sent_batches: u64,
    /// Batches given up after their retries, or left when `stop` ran out of time.
    pub failed_batches: u64,
    /// Attempts after a failure.
    pub retries: u64,
    /// Events dropped by `send`: the queue was full, or the sender had stopped.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

enum Msg {
    Event(Arc<WebhookTarget>, WebhookEvent),
    Stop,
}

struct Inner {
    tx: Sender<Msg>,
    counters: Arc<Counters>,
    capacity: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The webhook sender: a handle to its thread. Cheap to clone; every clone feeds the same thread.
/// When the last clone is dropped the thread flushes as `stop` does and ends.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl Webhooks {
    /// Spawns the sender thread.
    pub fn start(settings: WebhookSettings) -> Webhooks {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let capacity = settings.queue_capacity;
        let mut thread = SenderThread::new(settings, rx, counters.clone());
        let handle = std::thread::Builder::new()
            .name("pusher-webhooks".into())
            .spawn(move || thread.run())
            .expect("spawn the webhook thread");
        Webhooks { inner: Arc::new(Inner { tx, counters, capacity, thread: Mutex::new(Some(handle)) }) }
    }

    /// Queues `event` for `target` without blocking. An event the target did not ask for is
    /// ignored; over capacity, or after `stop`, the event is dropped and counted.
    pub fn send(&self, target: &Arc<WebhookTarget>, event: WebhookEvent) {
        if !target.wants(event.name) {
            return;
        }
        let c = &self.inner.counters;
        if c.queued.fetch_add(1, Relaxed) >= self.inner.capacity {
            c.queued.fetch_sub(1, Relaxed);
            c.dropped.fetch_add(1, Relaxed);
            return;
        }
        if self.inner.tx.send(Msg::Event(target.clone(), event)).is_err() {
            c.queued.fetch_sub(1, Relaxed);
            c.dropped.fetch_add(1, Relaxed);
        }
    }

    /// The counters now.
    pub fn metrics(&self) -> WebhookMetrics {
        let c = &self.inner.counters;
        WebhookMetrics {
            queued: c.queued.load(Relaxed),
            sent_batches: c.sent.load(Relaxed),
            failed_batches: c.failed.load(Relaxed),
            retries: c.retries.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
        }
    }

    /// Seals every open batch and delivers what is held, retries included, within
    /// `stop_timeout` (a request's timeout is cut to the time left); what is left then counts as
    /// failed. Waits for the thread to end. Later `send`s are dropped and counted. Idempotent.
    pub fn stop(&self) {
        let handle = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = self.inner.tx.send(Msg::Stop);
            if handle.join().is_err() {
                log::error!("the webhook thread panicked");
            }
        }
    }
}

/// A batch sealed for delivery.
struct Batch {
    body: Vec<u8>,
    signature: String,
    events: usize,
    attempts: u32,
    due: Instant,
}

/// One target's state on the sender thread: its open batch and the sealed ones, oldest first.
struct TargetState {
    target: Arc<WebhookTarget>,
    open: Vec<WebhookEvent>,
    open_until: Instant,
    sealed: VecDeque<Batch>,
}

impl TargetState {
    /// Turns the open batch into a sealed one, due now: the body and its signature are made here,
    /// once, so that every retry sends the same bytes.
    fn seal(&mut self, now: Instant) {
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let body = serde_json::to_vec(&Body { time_ms, events: &self.open }).expect("events serialise");
        let signature = webhook_signature(&self.target.app_secret, &body);
        let events = std::mem::take(&mut self.open).len();
        self.sealed.push_back(Batch { body, signature, events, attempts: 0, due: now });
    }
}

#[derive(Serialize)]
struct Body<'a> {
    time_ms: u64,
    events: &'a [WebhookEvent],
}

struct SenderThread {
    settings: WebhookSettings,
    rx: Receiver<Msg>,
    counters: Arc<Counters>,
    agent: ureq::Agent,
    /// Keyed by the target's address; the state holds the `Arc`, so the address stays unique.
    targets: HashMap<usize, TargetState>,
    disconnected: bool,
}

impl SenderThread {
    /// The HTTP agent: no redirects (a 3xx is a failure), no proxy from the environment, a 2xx
    /// is read as success and anything else as a failure rather than an error.
    fn new(settings: WebhookSettings, rx: Receiver<Msg>, counters: Arc<Counters>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.request_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("fanout-webhooks")
            .build()
            .into();
        SenderThread { settings, rx, counters, agent, targets: HashMap::new(), disconnected: false }
    }

    fn run(&mut self) {
        let mut deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.seal(now, deadline.is_some());
            self.deliver_due(deadline);
            if let Some(deadline) = deadline {
                // Done, out of time, or nothing left that could go before the deadline.
                let hopeless = self.next_wake().is_none_or(|t| t >= deadline);
                if hopeless || Instant::now() >= deadline {
                    break;
                }
            }
            // One message, then whatever else is already there (up to a burst) before the next
            // seal-and-deliver pass.
            let mut msg = self.wait(self.next_wake().map(|t| deadline.map_or(t, |d| t.min(d))));
            let mut taken = 0;
            while let Some(m) = msg.take() {
                match m {
                    Msg::Event(target, event) if deadline.is_none() => self.add(target, event),
                    Msg::Event(..) => self.drop_events(1),
                    Msg::Stop => _ = deadline.get_or_insert_with(|| later(self.settings.stop_timeout)),
                }
                taken += 1;
                if taken < BURST {
                    msg = self.rx.try_recv().ok();
                }
            }
            if self.disconnected {
                deadline.get_or_insert_with(|| later(self.settings.stop_timeout));
            }
        }
        // Out of time, or stopped: what is left was not delivered.
        for state in std::mem::take(&mut self.targets).into_values() {
            let open = state.open.len();
            let batches = state.sealed.len() as u64 + u64::from(open > 0);
            let events = open + state.sealed.iter().map(|b| b.events).sum::<usize>();
            self.counters.failed.fetch_add(batches, Relaxed);
            self.counters.queued.fetch_sub(events, Relaxed);
        }
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Event(..) = msg {
                self.drop_events(1);
            }
        }
    }

    /// Counts events that arrived after `stop` as dropped, and no longer held.
    fn drop_events(&self, events: usize) {
        self.counters.queued.fetch_sub(events, Relaxed);
        self.counters.dropped.fetch_add(events as u64, Relaxed);
    }

    /// Waits for a message until `until` (for ever if `None`); `None` on timeout or disconnection.
    fn wait(&mut self, until: Option<Instant>) -> Option<Msg> {
        let timeout = until.map(|t| t.saturating_duration_since(Instant::now()));
        if self.disconnected {
            std::thread::sleep(timeout.unwrap_or(Duration::ZERO));
            return None;
        }
        let result = match timeout {
            Some(timeout) => self.rx.recv_timeout(timeout),
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match result {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.disconnected = true;
                None
            }
        }
    }

    /// Adds an event to its target's open batch, sealing the batch when it is full.
    fn add(&mut self, target: Arc<WebhookTarget>, event: WebhookEvent) {
        let now = Instant::now();
        let state = self.targets.entry(Arc::as_ptr(&target) as usize).or_insert_with(|| TargetState {
            target,
            open: Vec::new(),
            open_until: now,
            sealed: VecDeque::new(),
        });
        if state.open.is_empty() {
            state.open_until = now.checked_add(self.settings.batch_window).unwrap_or(now);
        }
        state.open.push(event);
        if state.open.len() >= self.settings.max_batch_events.max(1) {
            state.seal(now);
        }
    }

    /// Seals every open batch whose window has passed (all of them when `all`).
    fn seal(&mut self, now: Instant, all: bool) {
        for state in self.targets.values_mut() {
            if !state.open.is_empty() && (all || state.open_until <= now) {
                state.seal(now);
            }
        }
    }

    /// The earliest open-batch end or due retry; `None` when nothing is held.
    fn next_wake(&self) -> Option<Instant> {
        let opens = self.targets.values().filter(|s| !s.open.is_empty()).map(|s| s.open_until);
        let heads = self.targets.values().filter_map(|s| s.sealed.front()).map(|b| b.due);
        opens.chain(heads).min()
    }

    /// One attempt for each target whose oldest batch is due; removes targets left empty.
    fn deliver_due(&mut self, deadline: Option<Instant>) {
        let keys: Vec<usize> = self.targets.keys().copied().collect();
        for key in keys {
            let Some(state) = self.targets.get_mut(&key) else { continue };
            let now = Instant::now();
            let Some(batch) = state.sealed.front_mut().filter(|b| b.due <= now) else { continue };
            let mut timeout = self.settings.request_timeout;
            if let Some(deadline) = deadline {
                timeout = timeout.min(deadline.saturating_duration_since(now));
                if timeout.is_zero() {
                    return;
                }
            }
            match post(&self.agent, &state.target, batch, timeout) {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Relaxed);
                    self.counters.queued.fetch_sub(batch.events, Relaxed);
                    state.sealed.pop_front();
                }
                Err(why) if batch.attempts < self.settings.retries => {
                    batch.attempts += 1;
                    let delay = self.settings.backoff.saturating_mul(2u32.saturating_pow(batch.attempts - 1));
                    batch.due = later(delay.min(MAX_BACKOFF));
                    self.counters.retries.fetch_add(1, Relaxed);
                    log::debug!(
                        "webhook to {}: {why}; retry {} of {}",
                        state.target.url,
                        batch.attempts,
                        self.settings.retries
                    );
                }
                Err(why) => {
                    log::warn!(
                        "webhook to {}: {why}; {} events given up after {} attempts",
                        state.target.url,
                        batch.events,
                        batch.attempts + 1
                    );
                    self.counters.failed.fetch_add(1, Relaxed);
                    self.counters.queued.fetch_sub(batch.events, Relaxed);
                    state.sealed.pop_front();
                }
            }
            if state.open.is_empty() && state.sealed.is_empty() {
                self.targets.remove(&key);
            }
        }
    }
}

/// Messages taken from the channel at most between two seal-and-deliver passes.
const BURST: usize = 1024;

/// The longest wait between two attempts, whatever the backoff and retries say.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// `now + d`, saturating at a year from now (an `Instant` cannot hold any `Duration`).
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(Duration::from_secs(365 * 24 * 3600))).unwrap_or(now)
}

/// One POST of a batch; `Err` says why it did not get a 2xx.
fn post(agent: &ureq::Agent, target: &WebhookTarget, batch: &Batch, timeout: Duration) -> Result<(), String> {
    let response = agent
        .post(&target.url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("Content-Type", "application/json")
        .header("X-Pusher-Key", &target.app_key)
        .header("X-Pusher-Signature", &batch.signature)
        .send(&batch.body[..])
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read a little of the answer so that the connection can be reused; its content is not used.
    let mut body = response.into_body();
    let _ = std::io::copy(&mut body.as_reader().take(64 * 1024), &mut std::io::sink());
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

#[cfg(test)]
mod tests;
