//! The wake-up for the end of a coalescing window (`Config::coalesce`), to the microsecond.
//!
//! Owns: `WindowTimer`, one Linux `timerfd` per worker, registered in the worker's `Poll`
//! under the `WINDOW_TIMER` token, and only when the server has a window. `epoll_wait`'s
//! timeout counts whole milliseconds (mio rounds a shorter one up), so a window of 250 µs
//! would hold its batch up to a millisecond and a window of 1 ms up to two; the timerfd wakes
//! the loop when the oldest open batch is due, not at the next millisecond after it.
//!
//! Invariants: the timer is armed for at most one due time, the earliest the loop asked for;
//! asking again for the same time costs no system call; once it fires it is unarmed and its
//! expiry count read, so the edge-triggered registration announces the next one. A wake-up for
//! a batch already delivered (a close or a stop delivered it early) costs one empty turn.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec,
};

use super::token::WINDOW_TIMER;

pub(crate) struct WindowTimer {
    fd: OwnedFd,
    /// The due time (µs on the worker's clock) the timer is armed for.
    armed: Option<u64>,
}

impl WindowTimer {
    /// A timer registered in `registry`; `None` when the server has no window.
    pub(crate) fn new(registry: &Registry, window_us: u64) -> io::Result<Option<Self>> {
        if window_us == 0 {
            return Ok(None);
        }
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), WINDOW_TIMER, Interest::READABLE)?;
        Ok(Some(WindowTimer { fd, armed: None }))
    }

    /// Wakes the loop `wait` from now, for the batch due at `due`, unless the timer is already
    /// armed for a time no later than `due`.
    pub(crate) fn arm(&mut self, due: u64, wait: Duration) -> io::Result<()> {
        if self.armed.is_some_and(|armed| armed <= due) {
            return Ok(());
        }
        // A zero it_value disarms a timerfd: a batch due now still needs its wake-up.
        let wait = wait.max(Duration::from_nanos(1));
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let value = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &Itimerspec { it_interval: zero, it_value: value })?;
        self.armed = Some(due);
        Ok(())
    }

    /// The timer fired: reads its expiry count so the next expiry is announced again.
    pub(crate) fn fired(&mut self) {
        self.armed = None;
        let mut count = [0u8; 8];
        // WouldBlock (nothing to read: re-arming reset the count) is as good as a read.
        let _ = rustix::io::read(&self.fd, &mut count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    fn wait_for_window(poll: &mut Poll, events: &mut Events) -> Duration {
        let start = Instant::now();
        loop {
            poll.poll(events, Some(Duration::from_secs(5))).unwrap();
            if events.iter().any(|e| e.token() == WINDOW_TIMER) {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(5), "the timer never fired");
        }
    }

    #[test]
    fn no_window_no_timer() {
        let poll = Poll::new().unwrap();
        assert!(WindowTimer::new(poll.registry(), 0).unwrap().is_none());
    }

    #[test]
    fn fires_after_the_wait_and_again_once_rearmed() {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        let mut timer = WindowTimer::new(poll.registry(), 300).unwrap().unwrap();
        for due in [300, 900] {
            timer.arm(due, Duration::from_micros(300)).unwrap();
            let waited = wait_for_window(&mut poll, &mut events);
            assert!(waited >= Duration::from_micros(300), "fired early: {waited:?}");
            timer.fired();
            assert_eq!(timer.armed, None);
        }
        // Zero wait: still fires (a zero it_value would disarm instead).
        timer.arm(1_000, Duration::ZERO).unwrap();
        wait_for_window(&mut poll, &mut events);
    }

    #[test]
    fn keeps_the_earliest_due_time() {
        let poll = Poll::new().unwrap();
        let mut timer = WindowTimer::new(poll.registry(), 1_000).unwrap().unwrap();
        timer.arm(5_000, Duration::from_millis(5)).unwrap();
        timer.arm(6_000, Duration::from_millis(6)).unwrap();
        assert_eq!(timer.armed, Some(5_000), "a later batch waits for the earlier one's wake-up");
        timer.arm(2_000, Duration::from_millis(2)).unwrap();
        assert_eq!(timer.armed, Some(2_000), "an earlier one moves the wake-up");
    }
}
