//! What the fuzz targets share: reading a fuzz input as a few leading parameter bytes and the
//! rest, and the chunk schedule that feeds a parser its input in random splits.
//!
//! Invariants: reading never fails (an exhausted input reads as zeros and empty slices), so
//! every input of any length is a valid input to every target; the same input always gives
//! the same parameters and the same splits, so every crash reproduces from its artifact.

/// A fuzz input read front to back: fixed-size parameters first, then variable-length parts.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// True once everything has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0 once the input is exhausted.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next `n` bytes, or fewer if the input ends first.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Bytes up to the next `sep` (not included; the separator is consumed), or the rest.
    pub fn until(&mut self, sep: u8) -> &'a [u8] {
        match self.data.iter().position(|&b| b == sep) {
            Some(i) => {
                let head = &self.data[..i];
                self.data = &self.data[i + 1..];
                head
            }
            None => self.rest(),
        }
    }

    /// Text up to the next `sep`, invalid UTF-8 replaced (for targets whose input is text).
    pub fn text_until(&mut self, sep: u8) -> String {
        String::from_utf8_lossy(self.until(sep)).into_owned()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// `data` in consecutive chunks whose lengths (1 to `step`) come from a generator seeded with
/// `step`: how a parser meets its input when TCP delivers it in pieces. `step` 0 gives the whole
/// input in one chunk; an empty input is one empty chunk. The targets that split assert that the
/// chunks add up to the input.
pub fn chunks(data: &[u8], step: u8) -> impl Iterator<Item = &[u8]> {
    let mut state = u32::from(step) | 0x9e37_7900;
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= data.len() && !(at == 0 && data.is_empty()) {
            return None;
        }
        let len = if step == 0 {
            data.len()
        } else {
            // xorshift32: cheap, deterministic, and varied enough to split headers anywhere.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + (state % u32::from(step)) as usize
        };
        let end = (at + len).min(data.len());
        let chunk = &data[at..end];
        at = end.max(1);
        Some(chunk)
    })
}
