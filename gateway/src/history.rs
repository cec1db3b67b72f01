//! Per-channel sequence numbers, subscriber counts and the bounded history that lets a
//! reconnecting client catch up.
//!
//! Owns: `History<T>`, generic over what an entry holds (the gateway stores one shared
//! `space::Event` per publish, which builds the native and the Pusher frame from one copy of the
//! event name and data). Counts a channel's native subscribers and its Pusher subscribers apart,
//! so the Pusher side can tell a channel's first and last subscriber (its `channel_occupied` and
//! `channel_vacated` webhooks) and skip encoding for nobody. A cache channel (`keep_last`) keeps
//! its last entry even when `size` is 0, within `ttl`. Invariants: `seq` starts at 1 per channel and grows by one per publish; the
//! history of a channel holds at most `size` messages, none older than `ttl`; a channel is
//! forgotten only when it has no subscribers and no live history, and the number of channels
//! is capped, so invented channel names cannot grow memory without bound. Each channel has an
//! epoch naming this life of its history (the process's random base plus a counter of channel
//! creations): a channel forgotten and created again, or any channel after a restart, has a new
//! epoch, so a resume with the old epoch is never mistaken for a recovery even though `seq`
//! starts again at 1.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

struct Entry<T> {
    seq: u64,
    at: Instant,
    /// What was published, as the caller built it (shared with the live delivery).
    item: T,
}

struct Channel<T> {
    epoch: Box<str>,
    last_seq: u64,
    entries: VecDeque<Entry<T>>,
    /// Native (`fanout.v1`) subscriptions.
    subscribers: usize,
    /// Pusher subscriptions (connections, not users).
    pusher: usize,
    /// A cache channel: its last entry is kept even when `size` is 0.
    keep_last: bool,
}

impl<T> Channel<T> {
    fn idle(&self) -> bool {
        self.subscribers == 0 && self.pusher == 0 && self.entries.is_empty()
    }
}

/// Refused because `max_channels` channels are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyChannels;

/// What a resume found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume<T> {
    /// The channel's epoch now.
    pub epoch: String,
    /// The channel's last seq now.
    pub last_seq: u64,
    /// Messages after `since`, oldest first (all of them when `recovered`).
    pub missed: Vec<T>,
    /// True when `missed` is exactly everything after `since`: no gap.
    pub recovered: bool,
}

/// What a Pusher subscription found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined<T> {
    /// The channel had no Pusher subscriber before this one.
    pub first: bool,
    /// The channel's last entry still kept (a cache channel's replay).
    pub last: Option<T>,
}

pub struct History<T> {
    channels: HashMap<Box<str>, Channel<T>>,
    size: usize,
    ttl: Duration,
    max_channels: usize,
    epoch_base: String,
    /// Channels created so far (each takes the next number for its epoch).
    created: u64,
    /// When the full table was last swept for dead channels (at most once per `SWEEP_EVERY`, so
    /// a flood of refused new names does not scan every channel under the lock each time).
    last_sweep: Option<Instant>,
}

/// The least time between two sweeps of the whole table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<T: Clone> History<T> {
    pub fn new(size: usize, ttl: Duration, max_channels: usize, epoch_base: String) -> Self {
        History { channels: HashMap::new(), size, ttl, max_channels, epoch_base, created: 0, last_sweep: None }
    }

    /// Assigns the next seq of `channel`, builds the entry for it and records it. `keep_last`
    /// marks a cache channel, whose last entry is kept even when `size` is 0.
    pub fn publish(
        &mut self,
        channel: &str,
        now: Instant,
        keep_last: bool,
        build: impl FnOnce(u64) -> T,
    ) -> Result<(u64, T), TooManyChannels> {
        let (size, ttl) = (self.size, self.ttl);
        let c = self.channel(channel, now)?;
        c.keep_last |= keep_last;
        c.last_seq += 1;
        let seq = c.last_seq;
        let item = build(seq);
        if size > 0 || c.keep_last {
            c.entries.push_back(Entry { seq, at: now, item: item.clone() });
        }
        prune(c, size, ttl, now);
        Ok((seq, item))
    }

    /// Counts a subscriber (creating the channel if needed) and reads what it missed after
    /// `since` (None: nothing to resume).
    /// `epoch`, when the client sends it, must be the channel's current one for `since` to mean
    /// anything; otherwise nothing is replayed and the resume is not a recovery.
    pub fn subscribe(
        &mut self,
        channel: &str,
        since: Option<u64>,
        epoch: Option<&str>,
        now: Instant,
    ) -> Result<Resume<T>, TooManyChannels> {
        let (size, ttl) = (self.size, self.ttl);
        let c = self.channel(channel, now)?;
        c.subscribers += 1;
        prune(c, size, ttl, now);
        let since = since.filter(|_| epoch.is_none_or(|e| e == &*c.epoch));
        let Some(since) = since else {
            return Ok(Resume {
                epoch: c.epoch.to_string(),
                last_seq: c.last_seq,
                missed: Vec::new(),
                recovered: false,
            });
        };
        let missed: Vec<T> = c.entries.iter().filter(|e| e.seq > since).map(|e| e.item.clone()).collect();
        let first_kept = c.last_seq + 1 - missed.len() as u64;
        let recovered = since <= c.last_seq && first_kept == since + 1;
        Ok(Resume { epoch: c.epoch.to_string(), last_seq: c.last_seq, missed, recovered })
    }

    /// Uncounts a subscriber; forgets the channel if nothing is left of it.
    pub fn unsubscribe(&mut self, channel: &str, now: Instant) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        c.subscribers = c.subscribers.saturating_sub(1);
        self.forget_if_idle(channel, now);
    }

    /// Counts a Pusher subscriber (creating the channel if needed); says whether it is the
    /// channel's first and hands back the last entry kept (for a cache channel's replay).
    pub fn join(&mut self, channel: &str, keep_last: bool, now: Instant) -> Result<Joined<T>, TooManyChannels> {
        let (size, ttl) = (self.size, self.ttl);
        let c = self.channel(channel, now)?;
        c.keep_last |= keep_last;
        c.pusher += 1;
        prune(c, size, ttl, now);
        Ok(Joined { first: c.pusher == 1, last: c.entries.back().map(|e| e.item.clone()) })
    }

    /// Uncounts a Pusher subscriber; true when it was the channel's last one. Forgets the
    /// channel if nothing is left of it.
    pub fn leave(&mut self, channel: &str, now: Instant) -> bool {
        let Some(c) = self.channels.get_mut(channel) else {
            return false;
        };
        let last = c.pusher == 1;
        c.pusher = c.pusher.saturating_sub(1);
        self.forget_if_idle(channel, now);
        last
    }

    /// The channel's native (`fanout.v1`) subscriptions now.
    pub fn native_subscribers(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |c| c.subscribers)
    }

    /// The channel's Pusher subscriptions now.
    pub fn pusher_subscribers(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |c| c.pusher)
    }

    /// Every channel with Pusher subscribers whose name starts with `prefix`, with their count.
    pub fn pusher_occupied<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        self.channels.iter().filter(move |(k, c)| c.pusher > 0 && k.starts_with(prefix)).map(|(k, c)| (&**k, c.pusher))
    }

    fn forget_if_idle(&mut self, channel: &str, now: Instant) {
        if let Some(c) = self.channels.get_mut(channel) {
            prune(c, self.size, self.ttl, now);
            if c.idle() {
                self.channels.remove(channel);
            }
        }
    }

    /// Channels tracked now.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Whether every channel of `keys` (repeats allowed) can be tracked now, those not tracked
    /// yet included, so a caller can check a whole request before publishing any of it. The
    /// answer holds while the caller keeps `&mut self`.
    pub fn fits<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, now: Instant) -> bool {
        let mut new: Vec<&str> = keys.into_iter().filter(|k| !self.channels.contains_key(*k)).collect();
        new.sort_unstable();
        new.dedup();
        if self.channels.len() + new.len() <= self.max_channels {
            return true;
        }
        self.sweep_if_due(now);
        let new = new.iter().filter(|k| !self.channels.contains_key(**k)).count();
        self.channels.len() + new <= self.max_channels
    }

    /// Forgets every dead channel, at most once per `SWEEP_EVERY`.
    fn sweep_if_due(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
            return;
        }
        self.last_sweep = Some(now);
        let (size, ttl) = (self.size, self.ttl);
        self.channels.retain(|_, c| {
            prune(c, size, ttl, now);
            !c.idle()
        });
    }

    fn channel(&mut self, name: &str, now: Instant) -> Result<&mut Channel<T>, TooManyChannels> {
        if !self.channels.contains_key(name) {
            if self.channels.len() >= self.max_channels {
                self.sweep_if_due(now);
                if self.channels.len() >= self.max_channels {
                    return Err(TooManyChannels);
                }
            }
            self.created += 1;
            let epoch = format!("{}-{:x}", self.epoch_base, self.created).into();
            let channel =
                Channel { epoch, last_seq: 0, entries: VecDeque::new(), subscribers: 0, pusher: 0, keep_last: false };
            self.channels.insert(name.into(), channel);
        }
        Ok(self.channels.get_mut(name).expect("inserted above"))
    }
}

fn prune<T>(c: &mut Channel<T>, size: usize, ttl: Duration, now: Instant) {
    let size = size.max(usize::from(c.keep_last));
    while c.entries.len() > size || c.entries.front().is_some_and(|e| now.duration_since(e.at) > ttl) {
        c.entries.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(size: usize) -> History<String> {
        History::new(size, Duration::from_secs(300), 10, "e1".into())
    }

    fn publish(h: &mut History<String>, channel: &str, now: Instant) -> u64 {
        h.publish(channel, now, false, |seq| format!("m{seq}")).unwrap().0
    }

    fn texts(r: &Resume<String>) -> Vec<String> {
        r.missed.clone()
    }

    #[test]
    fn seq_starts_at_one_per_channel() {
        let mut h = history(10);
        let now = Instant::now();
        assert_eq!((publish(&mut h, "a", now), publish(&mut h, "a", now), publish(&mut h, "b", now)), (1, 2, 1));
    }

    #[test]
    fn resume_returns_exactly_the_missed_messages() {
        let mut h = history(100);
        let now = Instant::now();
        for _ in 0..20 {
            publish(&mut h, "news", now);
        }
        let r = h.subscribe("news", Some(10), None, now).unwrap();
        assert_eq!((r.last_seq, r.recovered), (20, true));
        assert_eq!(texts(&r), (11..=20).map(|s| format!("m{s}")).collect::<Vec<_>>());
        let up_to_date = h.subscribe("news", Some(20), None, now).unwrap();
        assert!(up_to_date.recovered && up_to_date.missed.is_empty());
    }

    #[test]
    fn resume_beyond_the_history_or_ahead_of_it_is_not_recovered() {
        let mut h = history(5);
        let now = Instant::now();
        for _ in 0..20 {
            publish(&mut h, "news", now);
        }
        let r = h.subscribe("news", Some(10), None, now).unwrap();
        assert!(!r.recovered, "only 16..=20 are kept");
        assert_eq!(texts(&r), ["m16", "m17", "m18", "m19", "m20"]);
        assert!(!h.subscribe("news", Some(99), None, now).unwrap().recovered, "ahead of the channel");
        assert!(h.subscribe("news", Some(15), None, now).unwrap().recovered);
    }

    #[test]
    fn a_forgotten_channel_comes_back_with_a_new_epoch() {
        let mut h: History<String> = History::new(10, Duration::from_secs(1), 10, "base".into());
        let start = Instant::now();
        let first = h.subscribe("room", None, None, start).unwrap().epoch;
        for _ in 0..3 {
            publish(&mut h, "room", start);
        }
        h.unsubscribe("room", start);
        // Later: the history expired and nobody listens, so the channel is forgotten.
        let later = start + Duration::from_secs(5);
        h.unsubscribe("room", later);
        h.subscribe("other", None, None, later).unwrap();
        assert_eq!(h.len(), 1, "room was forgotten");
        assert_eq!(publish(&mut h, "room", later), 1, "seq starts again");
        let r = h.subscribe("room", Some(3), Some(&first), later).unwrap();
        assert_ne!(r.epoch, first);
        assert!(!r.recovered && r.missed.is_empty(), "old epoch: no replay, no recovery");
        let same = h.subscribe("room", Some(0), Some(&r.epoch), later).unwrap();
        assert!(same.recovered && same.missed.len() == 1);
    }

    #[test]
    fn old_messages_expire() {
        let mut h: History<String> = History::new(100, Duration::from_secs(60), 10, "e".into());
        let start = Instant::now();
        publish(&mut h, "c", start);
        publish(&mut h, "c", start + Duration::from_secs(50));
        let r = h.subscribe("c", Some(0), None, start + Duration::from_secs(90)).unwrap();
        assert_eq!((texts(&r), r.recovered), (vec!["m2".to_string()], false));
    }

    #[test]
    fn channel_count_is_capped_and_dead_channels_are_swept() {
        let mut h: History<String> = History::new(0, Duration::from_secs(60), 2, "e".into());
        let now = Instant::now();
        h.subscribe("a", None, None, now).unwrap();
        h.subscribe("b", None, None, now).unwrap();
        assert_eq!(h.subscribe("c", None, None, now), Err(TooManyChannels));
        h.unsubscribe("a", now);
        assert_eq!(h.len(), 1, "no subscribers and no history: forgotten");
        assert!(h.subscribe("c", None, None, now).is_ok());
    }

    #[test]
    fn a_full_table_is_swept_at_most_once_a_second() {
        let mut h: History<String> = History::new(10, Duration::from_secs(1), 2, "e".into());
        let t0 = Instant::now();
        publish(&mut h, "a", t0);
        publish(&mut h, "b", t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(h.subscribe("c", None, None, ms(500)), Err(TooManyChannels), "swept: nothing expired yet");
        assert_eq!(h.subscribe("c", None, None, ms(1200)), Err(TooManyChannels), "a and b expired, but no sweep yet");
        assert!(h.subscribe("c", None, None, ms(1500)).is_ok(), "a second after the last sweep: swept");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn fits_counts_each_new_channel_once() {
        let mut h: History<String> = History::new(0, Duration::from_secs(60), 3, "e".into());
        let now = Instant::now();
        h.subscribe("a", None, None, now).unwrap();
        assert!(h.fits(["a", "b", "b", "c"], now), "a is tracked; b and c make 3");
        assert!(!h.fits(["b", "c", "d"], now), "three new ones make 4");
        assert_eq!(h.len(), 1, "fits creates nothing");
    }

    #[test]
    fn pusher_subscribers_are_counted_apart_and_keep_the_channel() {
        let mut h = history(10);
        let now = Instant::now();
        assert!(h.join("p", false, now).unwrap().first);
        assert!(!h.join("p", false, now).unwrap().first);
        h.subscribe("p", None, None, now).unwrap();
        h.unsubscribe("p", now);
        assert_eq!((h.len(), h.pusher_subscribers("p")), (1, 2), "native leave keeps the Pusher count");
        assert!(!h.leave("p", now));
        assert!(h.leave("p", now), "the last Pusher subscriber");
        assert_eq!(h.len(), 0, "nothing left: forgotten");
        assert!(!h.leave("p", now), "unknown channel");
    }

    #[test]
    fn a_cache_channel_keeps_its_last_entry_without_history() {
        let mut h: History<String> = History::new(0, Duration::from_secs(60), 10, "e".into());
        let now = Instant::now();
        h.publish("plain", now, false, |s| format!("m{s}")).unwrap();
        assert_eq!(h.join("plain", false, now).unwrap().last, None);
        h.publish("cache-a", now, true, |s| format!("m{s}")).unwrap();
        h.publish("cache-a", now, true, |s| format!("m{s}")).unwrap();
        assert_eq!(h.join("cache-a", true, now).unwrap().last.as_deref(), Some("m2"));
        let later = now + Duration::from_secs(61);
        assert_eq!(h.join("cache-a", true, later).unwrap().last, None, "expired with the ttl");
        let occupied: Vec<_> = h.pusher_occupied("cache-").collect();
        assert_eq!(occupied, [("cache-a", 2)]);
    }
}
