//! Receive buffers whose spare room is always initialized, so a socket read needs no `unsafe`.
//!
//! Owns: `ReadBuf`. The `BytesMut` inside has `len` = initialized room and `filled` <= `len`
//! counts received bytes. Reading writes into `buf[filled..]`, a plain `&mut [u8]`; the price is
//! zeroing each new block once when it is allocated, instead of once per read (a 64 KiB block
//! serves a thousand 64-byte reads). Received bytes are lent to the parser as their own
//! `BytesMut` (`take_filled`) and whatever the parser did not consume is joined back without a
//! copy (`give_back`), because it is still contiguous with the spare room.

use bytes::{Buf, BytesMut};

#[derive(Default)]
pub(crate) struct ReadBuf {
    buf: BytesMut,
    filled: usize,
}

impl ReadBuf {
    pub(crate) fn filled(&self) -> usize {
        self.filled
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filled == 0
    }

    #[cfg(test)]
    /// Bytes of memory this buffer holds on to (0 when released).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Room to read into: at least `at_least` bytes. When there is less, a new zeroed block of
    /// `filled + max(grow, filled)` bytes replaces the old one (so a growing frame doubles its
    /// buffer and a steady stream of small reads gets fixed-size blocks).
    pub(crate) fn spare(&mut self, at_least: usize, grow: usize) -> &mut [u8] {
        if self.buf.len() - self.filled < at_least {
            let len = self.filled + grow.max(self.filled).max(at_least);
            let mut fresh = BytesMut::zeroed(len);
            fresh[..self.filled].copy_from_slice(&self.buf[..self.filled]);
            self.buf = fresh;
        }
        &mut self.buf[self.filled..]
    }

    /// Marks `n` bytes of the spare room as received.
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.filled + n <= self.buf.len());
        self.filled += n;
    }

    /// The received bytes, for the parser to split frames off. Pair with `give_back`.
    pub(crate) fn take_filled(&mut self) -> BytesMut {
        let data = self.buf.split_to(self.filled);
        self.filled = 0;
        data
    }

    /// Returns the bytes the parser left (an incomplete frame or request) to the front.
    pub(crate) fn give_back(&mut self, mut rest: BytesMut) {
        let n = rest.len();
        if n == 0 {
            return;
        }
        // O(1) when `rest` still ends where the spare room starts, which it does unless the
        // parser reallocated it; otherwise `unsplit` copies, which is still correct.
        rest.unsplit(std::mem::take(&mut self.buf));
        self.buf = rest;
        self.filled = n;
    }

    /// Copies the received bytes into a new buffer of exactly their size and forgets them here.
    pub(crate) fn take_copy(&mut self) -> ReadBuf {
        let copy = BytesMut::from(&self.buf[..self.filled]);
        self.buf.advance(self.filled);
        let filled = std::mem::take(&mut self.filled);
        ReadBuf { buf: copy, filled }
    }

    /// Appends `other`'s received bytes (used to move a small tail into the worker's buffer).
    pub(crate) fn append(&mut self, other: &ReadBuf) {
        let n = other.filled;
        self.spare(n, n)[..n].copy_from_slice(&other.buf[..n]);
        self.filled += n;
    }

    /// Frees the memory if no received bytes are held.
    pub(crate) fn release_if_empty(&mut self) {
        if self.filled == 0 && self.buf.capacity() > 0 {
            *self = ReadBuf::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_parse_give_back_keeps_the_tail_in_place() {
        let mut rb = ReadBuf::default();
        rb.spare(16, 64)[..5].copy_from_slice(b"abcde");
        rb.commit(5);
        let mut data = rb.take_filled();
        let consumed = data.split_to(3).freeze();
        assert_eq!(&consumed[..], b"abc");
        let tail_ptr = data.as_ptr();
        rb.give_back(data);
        assert_eq!(rb.filled(), 2);
        let spare = rb.spare(1, 64);
        assert_eq!(spare.as_ptr() as usize, tail_ptr as usize + 2, "no copy, no reallocation");
        spare[..1].copy_from_slice(b"f");
        rb.commit(1);
        assert_eq!(&rb.take_filled()[..], b"def");
    }

    #[test]
    fn growth_keeps_received_bytes_and_doubles_for_large_frames() {
        let mut rb = ReadBuf::default();
        let n = rb.spare(10, 10).len();
        rb.spare(10, 10)[..n].fill(7);
        rb.commit(n);
        assert!(rb.spare(10, 10).len() >= 10);
        assert_eq!((n, rb.capacity()), (10, 20), "filled + max(grow, filled)");
        let data = rb.take_filled();
        assert!(data.iter().all(|&b| b == 7) && data.len() == n);
    }

    #[test]
    fn take_copy_and_release() {
        let mut rb = ReadBuf::default();
        rb.spare(1, 1024)[..3].copy_from_slice(b"xyz");
        rb.commit(3);
        let mut tail = rb.take_copy();
        assert_eq!((rb.filled(), tail.filled(), tail.capacity()), (0, 3, 3));
        let mut worker = ReadBuf::default();
        worker.append(&tail);
        assert_eq!(&worker.take_filled()[..], b"xyz");
        let _ = tail.take_filled();
        tail.release_if_empty();
        assert_eq!(tail.capacity(), 0);
    }
}
