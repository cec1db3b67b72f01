//! Graceful stop: once asked, a worker refuses new upgrades with 503 (plain HTTP is still
//! answered, so health checks see it), closes its open connections with 1001 spread evenly over
//! the first 80% of the stop window, each after whatever was queued for it, and at the end of
//! the window drops whatever is left and leaves its loop.
//!
//! Owns: `Stop` (the progress of a graceful stop) and its pacing. Invariant: connections are
//! closed oldest first, so clients do not all reconnect at the same moment.

use super::connection::Phase;
use super::service::Service;
use super::timer::Tick;
use super::token::ConnId;
use super::worker::Worker;
use crate::proto::CloseCode;

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

impl<S: Service> Worker<S> {
    /// Begins the stop once the server asked for it, then closes the share of connections due
    /// by now; at the end of the window, drops the rest and the listener.
    pub(super) fn pace_stop(&mut self) {
        if self.stop.is_none() {
            if !self.shared.bus.stop_requested() {
                return;
            }
            self.begin_stop();
        }
        let Some(stop) = self.stop.as_mut() else {
            return;
        };
        let elapsed = self.now.saturating_sub(stop.start) + 1;
        let due = if elapsed >= stop.close_ticks {
            stop.total
        } else {
            stop.total * elapsed as usize / stop.close_ticks as usize
        };
        let mut closing = Vec::new();
        while stop.total - stop.pending.len() < due {
            match stop.pending.pop() {
                Some(id) => closing.push(id),
                None => break,
            }
        }
        let finished = self.now >= stop.end;
        for id in closing {
            self.close_conn(id, CloseCode::GOING_AWAY, "server shutting down");
        }
        if finished {
            let ids: Vec<ConnId> = self.conns.iter().map(|(slot, c)| self.conn_id(slot, c.generation)).collect();
            for id in ids {
                self.remove(id);
            }
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
    }

    fn begin_stop(&mut self) {
        let mut open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(slot, c)| self.conn_id(slot, c.generation))
            .collect();
        open.reverse(); // closed from the back: oldest first
        self.stop = Some(Stop {
            start: self.now,
            total: open.len(),
            pending: open,
            close_ticks: (self.limits.stop_ticks * 4 / 5).max(1),
            end: self.now + self.limits.stop_ticks,
        });
    }

    /// True once the stop has closed every connection or its window is over.
    pub(super) fn stop_finished(&self) -> bool {
        self.stop.as_ref().is_some_and(|stop| self.conns.is_empty() || self.now >= stop.end)
    }
}
