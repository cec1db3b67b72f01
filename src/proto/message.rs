//! Messages out of frames: fragments reassembled, text checked as UTF-8 as it arrives, control
//! frames passed through between fragments (RFC 6455 §5.4, §5.5, §8.1), compressed messages
//! inflated whole (RFC 7692 §6).
//!
//! Owns: `Assembler` (per connection) and `Utf8Validator`. Invariants: an unfragmented message is
//! handed on as the frame's own `Bytes` (no copy); the assembler owns no memory unless a
//! fragmented message is open or a text frame is half-received, and its state is one pointer,
//! so an idle connection pays 8 bytes; invalid UTF-8 fails as soon as the bytes holding it have
//! arrived, even in the middle of a frame, not at the end of the message; a compressed message
//! (RSV1 on its first frame) is inflated once complete, with the caller's inflater (one per
//! worker) and the message limit, and its text checked then.

use bytes::{Bytes, BytesMut};

use super::close::{parse_close_payload, CloseFrame};
use super::decoder::Frame;
use super::deflate::{InflateError, Inflater};
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode, RSV1};
use super::mask::apply_mask;

/// What a peer said, one complete unit at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message, already validated as UTF-8.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping with its payload (to be echoed in the pong).
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// The peer's close frame; `None` when it carried no code.
    Close(Option<CloseFrame>),
}

/// Incremental UTF-8 validation: carries an incomplete character from one chunk to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Continuation bytes still owed by the current character.
    need: u8,
    /// Allowed range for the next continuation byte (narrower after E0, ED, F0, F4).
    lo: u8,
    hi: u8,
}

impl Utf8Validator {
    /// Checks the next chunk. Fails on the chunk that holds the first byte no valid UTF-8 text
    /// could continue with, whatever follows.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        let mut at = 0;
        while self.need > 0 && at < data.len() {
            self.step(data[at])?;
            at += 1;
        }
        match std::str::from_utf8(&data[at..]) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(ProtocolError::InvalidUtf8),
            Err(e) => {
                // The chunk ends inside a character: remember what it still needs.
                for &b in &data[at + e.valid_up_to()..] {
                    self.step(b)?;
                }
                Ok(())
            }
        }
    }

    /// True when no character is left half-finished.
    pub fn is_complete(&self) -> bool {
        self.need == 0
    }

    /// The RFC 3629 table, one byte at a time.
    fn step(&mut self, b: u8) -> Result<(), ProtocolError> {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return Err(ProtocolError::InvalidUtf8);
            }
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            return Ok(());
        }
        let (need, lo, hi) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(ProtocolError::InvalidUtf8),
        };
        *self = Utf8Validator { need, lo, hi };
        Ok(())
    }
}

struct Partial {
    opcode: OpCode,
    data: BytesMut,
    utf8: Utf8Validator,
    /// RSV1 was set on the first frame: `data` is DEFLATE data, inflated at the end.
    compressed: bool,
}

/// The most compressed bytes a message of at most `max` bytes is allowed: DEFLATE can make
/// incompressible data slightly longer (an eighth at worst with fixed Huffman codes).
fn compressed_limit(max: usize) -> usize {
    max.saturating_add(max / 8).saturating_add(64)
}

/// A compressed message's data, inflated under the message limit (RFC 7692 §7.2.2).
fn inflated(
    opcode: OpCode,
    compressed: &[u8],
    max_message: usize,
    inflater: Option<&mut Inflater>,
) -> Result<Option<Event>, ProtocolError> {
    // RSV1 reaches here only on a connection that negotiated compression, whose caller passes
    // an inflater; without one the bit means nothing (RFC 6455 §5.2).
    let inflater = inflater.ok_or(ProtocolError::ReservedBits)?;
    let data = inflater.inflate(compressed, max_message).map_err(|e| match e {
        InflateError::TooLarge => ProtocolError::MessageTooLarge,
        InflateError::Invalid => ProtocolError::InvalidCompressedData,
    })?;
    if opcode == OpCode::Text && std::str::from_utf8(&data).is_err() {
        return Err(ProtocolError::InvalidUtf8);
    }
    Ok(Some(message(opcode, data)))
}

/// Progress through a text frame whose payload is still arriving.
#[derive(Clone, Copy)]
struct FrameCheck {
    /// Payload bytes already validated.
    checked: usize,
    utf8: Utf8Validator,
}

#[derive(Default)]
struct State {
    message: Option<Partial>,
    frame: Option<FrameCheck>,
}

/// Per-connection message reassembly.
#[derive(Default)]
pub struct Assembler {
    state: Option<Box<State>>,
}

impl Assembler {
    /// An assembler between messages.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a fragmented message is open (and the assembler owns a buffer).
    pub fn in_message(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.message.is_some())
    }

    /// True while the assembler owns any memory.
    pub fn holds_memory(&self) -> bool {
        self.state.is_some()
    }

    /// Validates what has arrived of a text frame (or of a continuation of a text message) whose
    /// payload is incomplete, so invalid UTF-8 fails before the rest of a long frame arrives.
    /// `masked_prefix` is the payload received so far, still masked; bytes already checked on an
    /// earlier call are skipped. The receive buffer is not modified.
    pub(super) fn check_partial_frame(
        &mut self,
        header: &FrameHeader,
        masked_prefix: &[u8],
    ) -> Result<(), ProtocolError> {
        let start = match header.opcode {
            // A compressed frame is DEFLATE data: its text is checked once inflated.
            OpCode::Text if header.rsv & RSV1 == 0 => Utf8Validator::default(),
            OpCode::Continuation => match self.state.as_ref().and_then(|s| s.message.as_ref()) {
                Some(p) if p.opcode == OpCode::Text && !p.compressed => p.utf8,
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let state = self.state.get_or_insert_with(Box::default);
        let check = state.frame.get_or_insert(FrameCheck { checked: 0, utf8: start });
        let Some(new) = masked_prefix.get(check.checked..).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let mut scratch = [0u8; 512];
        for piece in new.chunks(scratch.len()) {
            let plain = &mut scratch[..piece.len()];
            plain.copy_from_slice(piece);
            if let Some(key) = header.mask {
                apply_mask(plain, key, check.checked);
            }
            check.utf8.feed(plain)?;
            check.checked += piece.len();
        }
        Ok(())
    }

    /// Frees the state box once it holds nothing.
    fn tidy(&mut self) {
        if self.state.as_ref().is_some_and(|s| s.message.is_none() && s.frame.is_none()) {
            self.state = None;
        }
    }

    /// Takes the next frame; returns an event when the frame completes one. `inflater` inflates
    /// compressed messages: pass one on a connection that negotiated permessage-deflate.
    pub fn push(
        &mut self,
        frame: Frame,
        max_message: usize,
        inflater: Option<&mut Inflater>,
    ) -> Result<Option<Event>, ProtocolError> {
        // A complete frame ends any partial-frame check (it was of this frame).
        if let Some(state) = self.state.as_mut() {
            state.frame = None;
        }
        let result = self.push_frame(frame, max_message, inflater);
        self.tidy();
        result
    }

    fn push_frame(
        &mut self,
        frame: Frame,
        max_message: usize,
        inflater: Option<&mut Inflater>,
    ) -> Result<Option<Event>, ProtocolError> {
        let compressed = frame.rsv & RSV1 != 0;
        if compressed && frame.opcode.is_control() {
            return Err(ProtocolError::CompressedControl);
        }
        match frame.opcode {
            OpCode::Ping => Ok(Some(Event::Ping(frame.payload))),
            OpCode::Pong => Ok(Some(Event::Pong(frame.payload))),
            OpCode::Close => Ok(Some(Event::Close(parse_close_payload(&frame.payload)?))),
            OpCode::Text | OpCode::Binary => {
                if self.in_message() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if compressed && inflater.is_none() {
                    return Err(ProtocolError::ReservedBits);
                }
                let limit = if compressed { compressed_limit(max_message) } else { max_message };
                if frame.payload.len() > limit {
                    return Err(ProtocolError::MessageTooLarge);
                }
                let mut utf8 = Utf8Validator::default();
                if frame.opcode == OpCode::Text && !compressed {
                    utf8.feed(&frame.payload)?;
                }
                if frame.fin {
                    if compressed {
                        return inflated(frame.opcode, &frame.payload, max_message, inflater);
                    }
                    if !utf8.is_complete() {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                    return Ok(Some(message(frame.opcode, frame.payload)));
                }
                let data = BytesMut::from(&frame.payload[..]);
                self.state.get_or_insert_with(Box::default).message =
                    Some(Partial { opcode: frame.opcode, data, utf8, compressed });
                Ok(None)
            }
            OpCode::Continuation => {
                if compressed {
                    return Err(ProtocolError::CompressedContinuation);
                }
                let Some(partial) = self.state.as_mut().and_then(|s| s.message.as_mut()) else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                let limit = if partial.compressed { compressed_limit(max_message) } else { max_message };
                if partial.data.len() + frame.payload.len() > limit {
                    return Err(ProtocolError::MessageTooLarge);
                }
                if partial.opcode == OpCode::Text && !partial.compressed {
                    partial.utf8.feed(&frame.payload)?;
                }
                partial.data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Ok(None);
                }
                let partial = self.state.as_mut().and_then(|s| s.message.take()).expect("checked above");
                if partial.compressed {
                    return inflated(partial.opcode, &partial.data, max_message, inflater);
                }
                if !partial.utf8.is_complete() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                Ok(Some(message(partial.opcode, partial.data.freeze())))
            }
        }
    }
}

fn message(opcode: OpCode, payload: Bytes) -> Event {
    if opcode == OpCode::Text {
        Event::Text(payload)
    } else {
        Event::Binary(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Frame {
        Frame { fin, rsv: 0, opcode, payload: Bytes::copy_from_slice(payload) }
    }

    const MAX: usize = 64;

    #[test]
    fn utf8_validator_agrees_with_std_for_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{0800}\u{0080}".as_bytes(),
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xc0, 0xaf],
            &[0xe0, 0x80, 0xaf],
            &[0xf0, 0x8f, 0xbf, 0xbf],
            &[0xff],
            &[0xce, 0xba, 0xe1],
        ];
        for sample in samples {
            let std_ok = std::str::from_utf8(sample).is_ok();
            for cut in 0..=sample.len() {
                let mut v = Utf8Validator::default();
                let ok = v.feed(&sample[..cut]).and_then(|_| v.feed(&sample[cut..])).is_ok() && v.is_complete();
                assert_eq!(ok, std_ok, "{sample:02x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn utf8_fails_on_the_chunk_with_the_bad_byte() {
        let mut v = Utf8Validator::default();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert!(v.feed(&[0xce]).is_ok(), "a truncated character is fine until more arrives");
        assert_eq!(v.feed(&[0x20]), Err(ProtocolError::InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xed, 0xa0]), Err(ProtocolError::InvalidUtf8), "surrogate, 2nd byte");
    }

    #[test]
    fn single_frame_message_is_passed_through_without_copy() {
        let mut a = Assembler::new();
        let f = frame(true, OpCode::Binary, b"abc");
        let ptr = f.payload.as_ptr();
        let Ok(Some(Event::Binary(b))) = a.push(f, MAX, None) else { panic!() };
        assert_eq!(b.as_ptr(), ptr);
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut a = Assembler::new();
        assert_eq!(a.push(frame(false, OpCode::Text, b"Hel"), MAX, None), Ok(None));
        assert!(a.in_message());
        assert_eq!(a.push(frame(true, OpCode::Ping, b"p"), MAX, None), Ok(Some(Event::Ping(Bytes::from_static(b"p")))));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b"l"), MAX, None), Ok(None));
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"o"), MAX, None),
            Ok(Some(Event::Text(Bytes::from_static(b"Hello"))))
        );
        assert!(!a.in_message(), "buffer released after the message");
    }

    #[test]
    fn fragmentation_errors() {
        let mut a = Assembler::new();
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"x"), MAX, None),
            Err(ProtocolError::UnexpectedContinuation)
        );
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Binary, b"x"), MAX, None).unwrap();
        assert_eq!(a.push(frame(true, OpCode::Text, b"y"), MAX, None), Err(ProtocolError::ExpectedContinuation));
    }

    #[test]
    fn message_limit_counts_all_fragments() {
        let mut a = Assembler::new();
        assert_eq!(a.push(frame(true, OpCode::Binary, &[0; 65]), MAX, None), Err(ProtocolError::MessageTooLarge));
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Binary, &[0; 40]), MAX, None).unwrap();
        assert_eq!(a.push(frame(true, OpCode::Continuation, &[0; 25]), MAX, None), Err(ProtocolError::MessageTooLarge));
    }

    #[test]
    fn text_fails_fast_on_the_bad_fragment_and_at_end_when_truncated() {
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Text, "κόσμε".as_bytes()), MAX, None).unwrap();
        assert_eq!(
            a.push(frame(false, OpCode::Continuation, &[0xed, 0xa0, 0x80]), MAX, None),
            Err(ProtocolError::InvalidUtf8),
            "must fail before the final fragment"
        );
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Text, &[0xce]), MAX, None).unwrap();
        assert_eq!(a.push(frame(true, OpCode::Continuation, b""), MAX, None), Err(ProtocolError::InvalidUtf8));
        let mut a = Assembler::new();
        assert_eq!(a.push(frame(true, OpCode::Text, &[0xce]), MAX, None), Err(ProtocolError::InvalidUtf8));
    }

    fn masked_text_header(opcode: OpCode, len: u64) -> FrameHeader {
        FrameHeader { fin: true, rsv: 0, opcode, mask: Some([1, 2, 3, 4]), payload_len: len, header_len: 6 }
    }

    fn masked(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        apply_mask(&mut v, [1, 2, 3, 4], 0);
        v
    }

    #[test]
    fn partial_text_frame_fails_on_the_bytes_received_so_far() {
        let mut a = Assembler::new();
        let header = masked_text_header(OpCode::Text, 1000);
        let wire = masked(&[b"hello ".as_slice(), &[0xce, 0xba], &[0xff], b"rest"].concat());
        assert_eq!(a.check_partial_frame(&header, &wire[..7]), Ok(()), "valid so far, char cut");
        assert!(a.holds_memory());
        assert_eq!(a.check_partial_frame(&header, &wire[..8]), Ok(()), "character completed");
        assert_eq!(a.check_partial_frame(&header, &wire[..9]), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn partial_check_continues_a_text_message_and_ignores_binary() {
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Text, &[0xe2, 0x82]), MAX, None).unwrap(); // euro sign, cut
        let header = masked_text_header(OpCode::Continuation, 10);
        assert_eq!(a.check_partial_frame(&header, &masked(&[0xac, b'x'])), Ok(()));
        let mut b = Assembler::new();
        b.push(frame(false, OpCode::Text, &[0xe2, 0x82]), MAX, None).unwrap();
        assert_eq!(b.check_partial_frame(&header, &masked(&[0x41])), Err(ProtocolError::InvalidUtf8));
        let mut c = Assembler::new();
        let binary = masked_text_header(OpCode::Binary, 10);
        assert_eq!(c.check_partial_frame(&binary, &masked(&[0xff, 0xff])), Ok(()));
        assert!(!c.holds_memory());
    }

    #[test]
    fn completing_the_frame_releases_the_partial_check() {
        let mut a = Assembler::new();
        let header = masked_text_header(OpCode::Text, 3);
        a.check_partial_frame(&header, &masked(b"ab")).unwrap();
        assert!(a.holds_memory());
        assert_eq!(
            a.push(frame(true, OpCode::Text, b"abc"), MAX, None),
            Ok(Some(Event::Text(Bytes::from_static(b"abc"))))
        );
        assert!(!a.holds_memory());
    }

    fn compressed(fin: bool, opcode: OpCode, data: &[u8]) -> Frame {
        let payload = Bytes::copy_from_slice(crate::proto::deflate::Compressor::new(6).compress(data).unwrap());
        Frame { fin, rsv: RSV1, opcode, payload }
    }

    #[test]
    fn compressed_messages_are_inflated_whole() {
        let mut inflater = Inflater::new();
        let mut a = Assembler::new();
        let text = "κόσμε ".repeat(20);
        let got = a.push(compressed(true, OpCode::Text, text.as_bytes()), 1024, Some(&mut inflater));
        assert_eq!(got, Ok(Some(Event::Text(Bytes::from(text.clone())))));
        // Fragmented: RSV1 on the first frame only, a ping between, the text cut mid-character.
        let whole = compressed(true, OpCode::Text, text.as_bytes()).payload;
        let (one, two) = whole.split_at(3);
        let first = Frame { fin: false, rsv: RSV1, opcode: OpCode::Text, payload: Bytes::copy_from_slice(one) };
        assert_eq!(a.push(first, 1024, Some(&mut inflater)), Ok(None));
        assert!(a.in_message());
        assert_eq!(
            a.push(frame(true, OpCode::Ping, b"p"), 1024, None),
            Ok(Some(Event::Ping(Bytes::from_static(b"p"))))
        );
        let last = frame(true, OpCode::Continuation, two);
        assert_eq!(a.push(last, 1024, Some(&mut inflater)), Ok(Some(Event::Text(Bytes::from(text)))));
        assert!(!a.holds_memory(), "nothing kept after the message");
    }

    #[test]
    fn compression_violations() {
        let mut inflater = Inflater::new();
        let cases: Vec<(Vec<Frame>, ProtocolError)> = vec![
            (vec![Frame { rsv: RSV1, ..frame(true, OpCode::Ping, b"") }], ProtocolError::CompressedControl),
            (vec![Frame { rsv: RSV1, ..frame(true, OpCode::Close, &[3, 232]) }], ProtocolError::CompressedControl),
            (
                vec![
                    compressed(false, OpCode::Binary, b"abc"),
                    Frame { rsv: RSV1, ..frame(true, OpCode::Continuation, b"") },
                ],
                ProtocolError::CompressedContinuation,
            ),
            (vec![compressed(true, OpCode::Binary, &[0; 5000])], ProtocolError::MessageTooLarge),
            (
                vec![Frame { rsv: RSV1, ..frame(true, OpCode::Binary, &[0xff, 0xff]) }],
                ProtocolError::InvalidCompressedData,
            ),
            (vec![compressed(true, OpCode::Text, &[b'a', 0xff, b'b'])], ProtocolError::InvalidUtf8),
        ];
        for (frames, want) in cases {
            let mut a = Assembler::new();
            let mut got = Ok(None);
            for f in frames {
                got = a.push(f, 1024, Some(&mut inflater));
                if got.is_err() {
                    break;
                }
            }
            assert_eq!(got, Err(want));
        }
        let mut a = Assembler::new();
        assert_eq!(a.push(compressed(true, OpCode::Text, b"x"), MAX, None), Err(ProtocolError::ReservedBits));
    }

    #[test]
    fn a_compressed_text_frame_is_not_checked_as_utf8_before_it_is_inflated() {
        let mut a = Assembler::new();
        let header = FrameHeader { rsv: RSV1, ..masked_text_header(OpCode::Text, 100) };
        assert_eq!(a.check_partial_frame(&header, &masked(&[0xff, 0xfe, 0x00])), Ok(()));
    }

    #[test]
    fn close_frames_are_validated() {
        let mut a = Assembler::new();
        assert_eq!(a.push(frame(true, OpCode::Close, &[3]), MAX, None), Err(ProtocolError::ClosePayloadTooShort));
        assert_eq!(a.push(frame(true, OpCode::Close, &[0, 0]), MAX, None), Err(ProtocolError::InvalidCloseCode));
        assert_eq!(a.push(frame(true, OpCode::Close, &[]), MAX, None), Ok(Some(Event::Close(None))));
    }
}
