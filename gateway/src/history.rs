//! Per-channel sequence numbers and the bounded history that lets a reconnecting client catch up.
//!
//! Owns: `History`. Invariants: `seq` starts at 1 per channel and grows by one per publish; the
//! history of a channel holds at most `size` messages, none older than `ttl`; a channel is
//! forgotten only when it has no subscribers and no live history, and the number of channels
//! is capped, so invented channel names cannot grow memory without bound. Each channel has an
//! epoch naming this life of its history (the process's random base plus a counter of channel
//! creations): a channel forgotten and created again, or any channel after a restart, has a new
//! epoch, so a resume with the old epoch is never mistaken for a recovery even though `seq`
//! starts again at 1.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

struct Entry {
    seq: u64,
    at: Instant,
    /// The complete `message` op as sent to subscribers.
    frame: Bytes,
}

struct Channel {
    epoch: Box<str>,
    last_seq: u64,
    entries: VecDeque<Entry>,
    subscribers: usize,
}

/// Refused because `max_channels` channels are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyChannels;

/// What a resume found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The channel's epoch now.
    pub epoch: String,
    /// The channel's last seq now.
    pub last_seq: u64,
    /// Messages after `since`, oldest first (all of them when `recovered`).
    pub missed: Vec<Bytes>,
    /// True when `missed` is exactly everything after `since`: no gap.
    pub recovered: bool,
}

pub struct History {
    channels: HashMap<Box<str>, Channel>,
    size: usize,
    ttl: Duration,
    max_channels: usize,
    epoch_base: String,
    /// Channels created so far (each takes the next number for its epoch).
    created: u64,
}

impl History {
    pub fn new(size: usize, ttl: Duration, max_channels: usize, epoch_base: String) -> Self {
        History { channels: HashMap::new(), size, ttl, max_channels, epoch_base, created: 0 }
    }

    /// Assigns the next seq of `channel`, builds the message for it and records it.
    pub fn publish(
        &mut self,
        channel: &str,
        now: Instant,
        build: impl FnOnce(u64) -> Bytes,
    ) -> Result<(u64, Bytes), TooManyChannels> {
        let (size, ttl) = (self.size, self.ttl);
        let c = self.channel(channel, now)?;
        c.last_seq += 1;
        let seq = c.last_seq;
        let frame = build(seq);
        if size > 0 {
            c.entries.push_back(Entry { seq, at: now, frame: frame.clone() });
        }
        prune(c, size, ttl, now);
        Ok((seq, frame))
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
    ) -> Result<Resume, TooManyChannels> {
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
        let missed: Vec<Bytes> = c.entries.iter().filter(|e| e.seq > since).map(|e| e.frame.clone()).collect();
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
        prune(c, self.size, self.ttl, now);
        if c.subscribers == 0 && c.entries.is_empty() {
            self.channels.remove(channel);
        }
    }

    /// Channels tracked now.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    fn channel(&mut self, name: &str, now: Instant) -> Result<&mut Channel, TooManyChannels> {
        if !self.channels.contains_key(name) {
            if self.channels.len() >= self.max_channels {
                let (size, ttl) = (self.size, self.ttl);
                self.channels.retain(|_, c| {
                    prune(c, size, ttl, now);
                    c.subscribers > 0 || !c.entries.is_empty()
                });
                if self.channels.len() >= self.max_channels {
                    return Err(TooManyChannels);
                }
            }
            self.created += 1;
            let epoch = format!("{}-{:x}", self.epoch_base, self.created).into();
            let channel = Channel { epoch, last_seq: 0, entries: VecDeque::new(), subscribers: 0 };
            self.channels.insert(name.into(), channel);
        }
        Ok(self.channels.get_mut(name).expect("inserted above"))
    }
}

fn prune(c: &mut Channel, size: usize, ttl: Duration, now: Instant) {
    while c.entries.len() > size || c.entries.front().is_some_and(|e| now.duration_since(e.at) > ttl) {
        c.entries.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(size: usize) -> History {
        History::new(size, Duration::from_secs(300), 10, "e1".into())
    }

    fn publish(h: &mut History, channel: &str, now: Instant) -> u64 {
        h.publish(channel, now, |seq| Bytes::from(format!("m{seq}"))).unwrap().0
    }

    fn texts(r: &Resume) -> Vec<String> {
        r.missed.iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect()
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
        let mut h = History::new(10, Duration::from_secs(1), 10, "base".into());
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
        let mut h = History::new(100, Duration::from_secs(60), 10, "e".into());
        let start = Instant::now();
        publish(&mut h, "c", start);
        publish(&mut h, "c", start + Duration::from_secs(50));
        let r = h.subscribe("c", Some(0), None, start + Duration::from_secs(90)).unwrap();
        assert_eq!((texts(&r), r.recovered), (vec!["m2".to_string()], false));
    }

    #[test]
    fn channel_count_is_capped_and_dead_channels_are_swept() {
        let mut h = History::new(0, Duration::from_secs(60), 2, "e".into());
        let now = Instant::now();
        h.subscribe("a", None, None, now).unwrap();
        h.subscribe("b", None, None, now).unwrap();
        assert_eq!(h.subscribe("c", None, None, now), Err(TooManyChannels));
        h.unsubscribe("a", now);
        assert_eq!(h.len(), 1, "no subscribers and no history: forgotten");
        assert!(h.subscribe("c", None, None, now).is_ok());
    }
}
