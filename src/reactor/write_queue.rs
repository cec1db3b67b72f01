//! Bytes waiting to be written to one connection, flushed with vectored writes.
//!
//! Owns: `WriteQueue`. Invariants: `queued` is the exact number of unwritten bytes; a partial
//! write resumes at the exact byte it stopped at; the common case of one pending buffer is held
//! inline, so queueing it allocates nothing, and the overflow deque is released as soon as it
//! drains, so an idle connection owns no write buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

use crate::metrics::Counter;

/// Slices per `writev`. Well under Linux's IOV_MAX (1024); with batching a connection rarely has
/// more than a few buffers pending, and a longer queue takes several calls in the same flush.
pub(crate) const MAX_IOVECS: usize = 64;

#[derive(Default)]
pub(crate) struct WriteQueue {
    head: Option<Bytes>,
    rest: VecDeque<Bytes>,
    /// Bytes of `head` already written.
    head_written: usize,
    queued: usize,
}

impl WriteQueue {
    /// Queues `bytes`, adding their length to `gauge` (the worker's queued-bytes gauge, which
    /// every change to `queued` mirrors).
    pub(crate) fn push(&mut self, bytes: Bytes, gauge: &Counter) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        gauge.add(bytes.len() as u64);
        if self.head.is_none() {
            self.head = Some(bytes);
        } else {
            self.rest.push_back(bytes);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// True when the queue holds memory of its own beyond the inline slot.
    #[cfg(test)]
    pub(crate) fn has_overflow_allocation(&self) -> bool {
        self.rest.capacity() > 0
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self, gauge: &Counter) {
        gauge.sub(self.queued as u64);
        *self = WriteQueue::default();
    }

    /// Writes as much as the writer takes. Returns bytes written and the number of write calls;
    /// stops at `WouldBlock` or a short write (neither is an error) or when the queue is empty.
    pub(crate) fn write_to<W: Write>(&mut self, mut w: W, gauge: &Counter) -> io::Result<(usize, u32)> {
        let mut total = 0;
        let mut calls = 0;
        while let Some(head) = &self.head {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            slices[0] = IoSlice::new(&head[self.head_written..]);
            let mut offered = slices[0].len();
            let mut n = 1;
            for b in self.rest.iter().take(MAX_IOVECS - 1) {
                slices[n] = IoSlice::new(b);
                offered += b.len();
                n += 1;
            }
            calls += 1;
            // One slice goes out with send(2): writev(2) would add the VFS layer's per-call cost
            // (measured at about 5% of an echo server's time) for nothing.
            let result = if n == 1 { w.write(&slices[0]) } else { w.write_vectored(&slices[..n]) };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.advance(written);
                    gauge.sub(written as u64);
                    total += written;
                    if written < offered {
                        // The socket buffer is full; the next call would only say WouldBlock.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok((total, calls))
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let head = self.head.as_ref().expect("advance past the queued bytes");
            let left = head.len() - self.head_written;
            if n < left {
                self.head_written += n;
                return;
            }
            n -= left;
            self.head = self.rest.pop_front();
            self.head_written = 0;
        }
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `limit` bytes per call, then WouldBlock once `budget` runs out.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        budget: usize,
        calls: usize,
        vectored_calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.accept(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.vectored_calls += 1;
            self.accept(bufs)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Trickle {
        fn new() -> Trickle {
            Trickle { out: Vec::new(), limit: usize::MAX, budget: usize::MAX, calls: 0, vectored_calls: 0 }
        }

        fn accept(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                for &byte in b.iter() {
                    if n == self.limit || self.budget == 0 {
                        return Ok(n);
                    }
                    self.out.push(byte);
                    n += 1;
                    self.budget -= 1;
                }
            }
            Ok(n)
        }
    }

    #[test]
    fn partial_writes_resume_at_the_exact_byte() {
        let mut q = WriteQueue::default();
        let g = Counter::default();
        let expected: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for chunk in expected.chunks(37) {
            q.push(Bytes::copy_from_slice(chunk), &g);
        }
        assert_eq!(q.queued_bytes(), 1000);
        let mut w = Trickle { out: Vec::new(), limit: 13, budget: 500, calls: 0, vectored_calls: 0 };
        // A short write means a full socket: the flush stops there instead of asking again.
        assert_eq!(q.write_to(&mut w, &g).unwrap(), (13, 1));
        while w.budget > 0 {
            q.write_to(&mut w, &g).unwrap();
        }
        assert_eq!(q.queued_bytes(), 500);
        assert_eq!(q.write_to(&mut w, &g).unwrap(), (0, 1), "WouldBlock writes nothing");
        w.budget = usize::MAX;
        while !q.is_empty() {
            q.write_to(&mut w, &g).unwrap();
        }
        assert_eq!(w.out, expected);
        assert!(q.is_empty());
        assert_eq!(g.get(), 0, "the gauge follows every byte in and out");
        assert!(!q.has_overflow_allocation(), "drained queue must release its deque");
    }

    #[test]
    fn one_writev_carries_every_pending_buffer() {
        let mut q = WriteQueue::default();
        let g = Counter::default();
        for _ in 0..10 {
            q.push(Bytes::from_static(b"abc"), &g);
        }
        let mut w = Trickle::new();
        let (n, calls) = q.write_to(&mut w, &g).unwrap();
        assert_eq!((n, calls, w.calls, w.vectored_calls), (30, 1, 1, 1));
    }

    #[test]
    fn more_buffers_than_iovecs_take_several_calls_in_one_flush() {
        let mut q = WriteQueue::default();
        let g = Counter::default();
        for _ in 0..(MAX_IOVECS * 2 + 1) {
            q.push(Bytes::from_static(b"x"), &g);
        }
        let mut w = Trickle::new();
        let (n, calls) = q.write_to(&mut w, &g).unwrap();
        assert_eq!((n, calls), (MAX_IOVECS * 2 + 1, 3));
    }

    #[test]
    fn single_buffer_stays_inline_and_empty_pushes_are_ignored() {
        let mut q = WriteQueue::default();
        let g = Counter::default();
        q.push(Bytes::new(), &g);
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"one"), &g);
        assert!(!q.has_overflow_allocation());
    }

    #[test]
    fn a_lone_buffer_goes_out_with_a_plain_write() {
        let mut q = WriteQueue::default();
        let g = Counter::default();
        q.push(Bytes::from_static(b"reply"), &g);
        let mut w = Trickle::new();
        assert_eq!(q.write_to(&mut w, &g).unwrap(), (5, 1));
        assert_eq!((w.calls, w.vectored_calls), (1, 0));
        assert_eq!(w.out, b"reply");
    }
}
