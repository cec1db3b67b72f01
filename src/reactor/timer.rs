//! Deadlines for handshakes, idle connections and close handshakes, in coarse buckets.
//!
//! Owns: `Timers`, a hashed wheel of 250 ms ticks, and the worker's microsecond clock for
//! coalescing windows (counted from the same start, so a window can be capped at its tick's end).
//! Invariants: scheduling is O(1); extending a
//! deadline costs nothing here (the connection only updates its own field and the wheel entry
//! re-files itself when it comes due), so per-event timer cost is O(1) and no code ever scans
//! all connections; an entry is processed at most once per wheel revolution.

use std::time::{Duration, Instant};

use super::token::ConnId;

/// Resolution of every deadline.
pub(crate) const TICK: Duration = Duration::from_millis(250);
const SLOTS: usize = 1024;

/// A tick number; 0 means "no timer".
pub(crate) type Tick = u32;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: ConnId,
    at: Tick,
}

pub(crate) struct Timers {
    start: Instant,
    wheel: Vec<Vec<Entry>>,
    /// The next tick to process.
    current: Tick,
    len: usize,
}

impl Timers {
    pub(crate) fn new(start: Instant) -> Self {
        Timers { start, wheel: (0..SLOTS).map(|_| Vec::new()).collect(), current: 1, len: 0 }
    }

    /// The tick `now` falls in (ticks start at 1).
    pub(crate) fn tick_at(&self, now: Instant) -> Tick {
        let elapsed = now.saturating_duration_since(self.start);
        (elapsed.as_millis() / TICK.as_millis()) as Tick + 1
    }

    /// Ticks needed to cover `d`, rounded up so a deadline never fires early.
    pub(crate) fn ticks(d: Duration) -> Tick {
        d.as_millis().div_ceil(TICK.as_millis()).min(Tick::MAX as u128 / 2) as Tick
    }

    /// Files `id` under tick `at` (or the next tick to process, if that is later).
    pub(crate) fn schedule(&mut self, id: ConnId, at: Tick) -> Tick {
        let at = at.max(self.current);
        self.wheel[at as usize % SLOTS].push(Entry { id, at });
        self.len += 1;
        at
    }

    /// Moves every entry due at or before `now` into `due` as (id, tick it was filed under).
    pub(crate) fn expire(&mut self, now: Tick, due: &mut Vec<(ConnId, Tick)>) {
        while self.current <= now && self.len > 0 {
            let tick = self.current;
            let slot = &mut self.wheel[tick as usize % SLOTS];
            let before = slot.len();
            slot.retain(|e| {
                if e.at <= tick {
                    due.push((e.id, e.at));
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
            self.current += 1;
        }
        if self.len == 0 {
            self.current = self.current.max(now + 1);
        }
    }

    /// Microseconds from the wheel's start to `at`: the clock of coalescing windows.
    pub(crate) fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// When a batch opened at `at` (µs, see `micros`) with a window of `window` µs is due: the
    /// end of the window, or the end of `at`'s tick if that comes first, so the window never
    /// holds a batch past the next tick (where deadlines, idle closes and stop pacing act).
    pub(crate) fn window_due(at: u64, window: u64) -> u64 {
        let tick = TICK.as_micros() as u64;
        (at + window).min((at / tick + 1) * tick)
    }

    /// How long from `now` until `due` (µs, see `micros`); zero once it has passed.
    pub(crate) fn until(&self, due: u64, now: Instant) -> Duration {
        (self.start + Duration::from_micros(due)).saturating_duration_since(now)
    }

    /// How long poll may sleep before the next tick with entries could be due.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let next = self.start + TICK * (self.current - 1);
        Some(next.saturating_duration_since(now))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(slot: u32) -> ConnId {
        ConnId { worker: 0, slot, generation: 1 }
    }

    #[test]
    fn entries_fire_at_their_tick_not_before() {
        let start = Instant::now();
        let mut t = Timers::new(start);
        t.schedule(id(1), 5);
        t.schedule(id(2), 5 + SLOTS as Tick); // same slot, one revolution later
        t.schedule(id(3), 2);
        let mut due = Vec::new();
        t.expire(1, &mut due);
        assert!(due.is_empty());
        t.expire(4, &mut due);
        assert_eq!(due, vec![(id(3), 2)]);
        due.clear();
        t.expire(5, &mut due);
        assert_eq!(due, vec![(id(1), 5)]);
        due.clear();
        t.expire(5 + SLOTS as Tick, &mut due);
        assert_eq!(due, vec![(id(2), 5 + SLOTS as Tick)]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.poll_timeout(start), None);
    }

    #[test]
    fn ticks_round_up_and_scheduling_in_the_past_fires_next() {
        assert_eq!(Timers::ticks(Duration::from_millis(1)), 1);
        assert_eq!(Timers::ticks(Duration::from_millis(250)), 1);
        assert_eq!(Timers::ticks(Duration::from_millis(251)), 2);
        let mut t = Timers::new(Instant::now());
        let mut due = Vec::new();
        t.expire(10, &mut due);
        assert_eq!(t.schedule(id(1), 3), 11);
        t.expire(11, &mut due);
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn a_window_ends_at_its_length_or_at_the_tick_s_end() {
        let tick = TICK.as_micros() as u64;
        assert_eq!(Timers::window_due(1_000, 500), 1_500);
        assert_eq!(Timers::window_due(tick - 100, 1_000), tick, "capped at the end of its tick");
        assert_eq!(Timers::window_due(tick, 1_000), tick + 1_000, "a new tick starts a whole window");
        let start = Instant::now();
        let t = Timers::new(start);
        assert_eq!(t.micros(start + Duration::from_micros(1_234)), 1_234);
        assert_eq!(t.until(1_500, start + Duration::from_micros(1_000)), Duration::from_micros(500));
        assert_eq!(t.until(1_500, start + Duration::from_micros(2_000)), Duration::ZERO);
    }

    #[test]
    fn poll_timeout_points_at_the_next_tick() {
        let start = Instant::now();
        let mut t = Timers::new(start);
        t.schedule(id(1), 3);
        let timeout = t.poll_timeout(start).unwrap();
        assert!(timeout <= TICK, "{timeout:?}");
    }
}
