//! A batch: the frames published to one topic (or broadcast) and not yet delivered. Pure
//! data, a leaf of `pubsub.rs`: no sockets, no protocol, no clock.
//!
//! Owns: `Batch`. Invariants: frames come out in the order they went in; small frames are
//! copied back to back into one open buffer, frozen into one `Bytes` when taken, so a batch
//! costs one buffer per subscriber however many frames it holds; frames at or above the large
//! threshold are never copied.

use bytes::{Bytes, BytesMut};

/// Frames published and not yet delivered (within one turn, or one coalescing window): small
/// ones back to back in one buffer, large ones shared.
#[derive(Debug, Default)]
pub struct Batch {
    open: BytesMut,
    ready: Vec<Bytes>,
}

impl Batch {
    /// Appends one frame given as its header and payload. Payloads of `large` bytes or more are
    /// kept as they are (after any small frames already batched, so order holds).
    pub fn push(&mut self, header: &[u8], payload: &Bytes, large: usize) {
        if payload.len() >= large {
            self.seal();
            self.ready.push(Bytes::copy_from_slice(header));
            self.ready.push(payload.clone());
        } else {
            self.open.reserve(header.len() + payload.len());
            self.open.extend_from_slice(header);
            self.open.extend_from_slice(payload);
        }
    }

    /// True when no frame waits in the batch.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.ready.is_empty()
    }

    /// Freezes the open buffer into the ready list.
    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.ready.push(self.open.split().freeze());
        }
    }

    /// The batch's buffers in publish order; the batch is empty afterwards but keeps the spare
    /// room of its open buffer for the next turn.
    pub fn take(&mut self) -> std::vec::Drain<'_, Bytes> {
        self.seal();
        self.ready.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_frames_skip_the_copy_and_keep_their_place() {
        const LARGE: usize = 1024;
        let mut batch = Batch::default();
        let large = Bytes::from(vec![9u8; LARGE]);
        batch.push(b"a", &Bytes::from_static(b"1"), LARGE);
        batch.push(b"h", &large, LARGE);
        batch.push(b"b", &Bytes::from_static(b"2"), LARGE);
        let seen: Vec<Bytes> = batch.take().collect();
        assert_eq!(seen.len(), 4);
        assert_eq!((&seen[0][..], &seen[1][..], &seen[3][..]), (&b"a1"[..], &b"h"[..], &b"b2"[..]));
        assert_eq!(seen[2].as_ptr(), large.as_ptr(), "large payload shared, not copied");
        assert!(batch.is_empty() && batch.take().next().is_none(), "taken once");
    }
}
