//! Graceful stop: once asked, a worker refuses new upgrades with 503 (plain HTTP is still
//! answered, so health checks see it), closes its open connections with 1001 spread evenly over
//! the first 80% of the stop window, each after whatever was queued for it, and at the end of
//! the window drops whatever is left and leaves its loop (the worker's side: `worker.rs`).
//!
//! Owns: `Stop`, the pacing of a graceful stop: which connections are due for their 1001 at a
//! given tick. Pure data: a leaf that knows no socket and no worker. Invariant: connections are
//! closed in even steps, in the order given (the worker gives slab order, lowest slot first),
//! all of them by 80% of the window.

use super::timer::Tick;
use super::token::ConnId;

/// Progress of a graceful stop.
pub(super) struct Stop {
    start: Tick,
    total: usize,
    /// Open connections not yet sent their 1001, last to close first.
    pending: Vec<ConnId>,
    /// Ticks over which the closes are spread.
    close_ticks: Tick,
    /// When whatever is left is dropped.
    end: Tick,
}

impl Stop {
    /// A stop that begins at `now` and lasts `window` ticks, for `open` connections in the
    /// order they are to be closed.
    pub(super) fn new(now: Tick, window: Tick, mut open: Vec<ConnId>) -> Stop {
        open.reverse(); // handed out from the back
        Stop { start: now, total: open.len(), pending: open, close_ticks: (window * 4 / 5).max(1), end: now + window }
    }

    /// The connections whose 1001 is due by `now` and was not handed out before.
    pub(super) fn due(&mut self, now: Tick) -> Vec<ConnId> {
        let elapsed = now.saturating_sub(self.start) + 1;
        let due = if elapsed >= self.close_ticks {
            self.total
        } else {
            self.total * elapsed as usize / self.close_ticks as usize
        };
        let mut closing = Vec::new();
        while self.total - self.pending.len() < due {
            match self.pending.pop() {
                Some(id) => closing.push(id),
                None => break,
            }
        }
        closing
    }

    /// True once the window is over: what is left is dropped.
    pub(super) fn is_over(&self, now: Tick) -> bool {
        now >= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32) -> Vec<ConnId> {
        (0..n).map(|slot| ConnId { worker: 0, slot, generation: 1 }).collect()
    }

    #[test]
    fn closes_in_order_spread_over_four_fifths_of_the_window() {
        let mut stop = Stop::new(100, 50, ids(8));
        let first = stop.due(100);
        assert_eq!(
            first.iter().map(|id| id.slot).collect::<Vec<_>>(),
            Vec::<u32>::new(),
            "1 of 40 ticks: 8/40 rounds to 0"
        );
        let by_half: Vec<u32> = stop.due(119).iter().map(|id| id.slot).collect();
        assert_eq!(by_half, [0, 1, 2, 3], "half of the close span: half of them, in order");
        let rest: Vec<u32> = stop.due(139).iter().map(|id| id.slot).collect();
        assert_eq!(rest, [4, 5, 6, 7], "all of them by 80% of the window");
        assert!(stop.due(140).is_empty() && !stop.is_over(149) && stop.is_over(150));
    }
}
