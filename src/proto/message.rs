//! Messages out of frames: fragments reassembled, text checked as UTF-8 as it arrives, control
//! frames passed through between fragments (RFC 6455 §5.4, §5.5, §8.1).
//!
//! Owns: `Assembler` (per connection) and `Utf8Validator`. Invariants: an unfragmented message is
//! handed on as the frame's own `Bytes` (no copy); the assembler owns no buffer unless a
//! fragmented message is open, and its state is one pointer, so an idle connection pays 8 bytes;
//! invalid UTF-8 fails on the fragment that contains the first bad byte, not at the end.

use bytes::{Bytes, BytesMut};

use super::close::{parse_close_payload, CloseFrame};
use super::decoder::Frame;
use super::error::ProtocolError;
use super::frame::OpCode;

/// What a peer said, one complete unit at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message, already validated as UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
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
}

/// Per-connection message reassembly.
#[derive(Default)]
pub struct Assembler {
    partial: Option<Box<Partial>>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a fragmented message is open (and the assembler owns a buffer).
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes the next frame; returns an event when the frame completes one.
    pub fn push(
        &mut self,
        frame: Frame,
        max_message: usize,
    ) -> Result<Option<Event>, ProtocolError> {
        match frame.opcode {
            OpCode::Ping => Ok(Some(Event::Ping(frame.payload))),
            OpCode::Pong => Ok(Some(Event::Pong(frame.payload))),
            OpCode::Close => Ok(Some(Event::Close(parse_close_payload(&frame.payload)?))),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if frame.payload.len() > max_message {
                    return Err(ProtocolError::MessageTooLarge);
                }
                let mut utf8 = Utf8Validator::default();
                if frame.opcode == OpCode::Text {
                    utf8.feed(&frame.payload)?;
                }
                if frame.fin {
                    if !utf8.is_complete() {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                    return Ok(Some(message(frame.opcode, frame.payload)));
                }
                self.partial = Some(Box::new(Partial {
                    opcode: frame.opcode,
                    data: BytesMut::from(&frame.payload[..]),
                    utf8,
                }));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if partial.data.len() + frame.payload.len() > max_message {
                    return Err(ProtocolError::MessageTooLarge);
                }
                if partial.opcode == OpCode::Text {
                    partial.utf8.feed(&frame.payload)?;
                }
                partial.data.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Ok(None);
                }
                let partial = self.partial.take().expect("checked above");
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
        Frame {
            fin,
            rsv: 0,
            opcode,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    const MAX: usize = 64;

    #[test]
    fn utf8_validator_agrees_with_std_for_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{0800}\u{0080}".as_bytes(),
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
            ],
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
                let ok = v
                    .feed(&sample[..cut])
                    .and_then(|_| v.feed(&sample[cut..]))
                    .is_ok()
                    && v.is_complete();
                assert_eq!(ok, std_ok, "{sample:02x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn utf8_fails_on_the_chunk_with_the_bad_byte() {
        let mut v = Utf8Validator::default();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert!(
            v.feed(&[0xce]).is_ok(),
            "a truncated character is fine until more arrives"
        );
        assert_eq!(v.feed(&[0x20]), Err(ProtocolError::InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(
            v.feed(&[0xed, 0xa0]),
            Err(ProtocolError::InvalidUtf8),
            "surrogate, 2nd byte"
        );
    }

    #[test]
    fn single_frame_message_is_passed_through_without_copy() {
        let mut a = Assembler::new();
        let f = frame(true, OpCode::Binary, b"abc");
        let ptr = f.payload.as_ptr();
        let Ok(Some(Event::Binary(b))) = a.push(f, MAX) else {
            panic!()
        };
        assert_eq!(b.as_ptr(), ptr);
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut a = Assembler::new();
        assert_eq!(a.push(frame(false, OpCode::Text, b"Hel"), MAX), Ok(None));
        assert!(a.in_message());
        assert_eq!(
            a.push(frame(true, OpCode::Ping, b"p"), MAX),
            Ok(Some(Event::Ping(Bytes::from_static(b"p"))))
        );
        assert_eq!(
            a.push(frame(false, OpCode::Continuation, b"l"), MAX),
            Ok(None)
        );
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"o"), MAX),
            Ok(Some(Event::Text(Bytes::from_static(b"Hello"))))
        );
        assert!(!a.in_message(), "buffer released after the message");
    }

    #[test]
    fn fragmentation_errors() {
        let mut a = Assembler::new();
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"x"), MAX),
            Err(ProtocolError::UnexpectedContinuation)
        );
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Binary, b"x"), MAX).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Text, b"y"), MAX),
            Err(ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn message_limit_counts_all_fragments() {
        let mut a = Assembler::new();
        assert_eq!(
            a.push(frame(true, OpCode::Binary, &[0; 65]), MAX),
            Err(ProtocolError::MessageTooLarge)
        );
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Binary, &[0; 40]), MAX).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, &[0; 25]), MAX),
            Err(ProtocolError::MessageTooLarge)
        );
    }

    #[test]
    fn text_fails_fast_on_the_bad_fragment_and_at_end_when_truncated() {
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Text, "κόσμε".as_bytes()), MAX)
            .unwrap();
        assert_eq!(
            a.push(frame(false, OpCode::Continuation, &[0xed, 0xa0, 0x80]), MAX),
            Err(ProtocolError::InvalidUtf8),
            "must fail before the final fragment"
        );
        let mut a = Assembler::new();
        a.push(frame(false, OpCode::Text, &[0xce]), MAX).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b""), MAX),
            Err(ProtocolError::InvalidUtf8)
        );
        let mut a = Assembler::new();
        assert_eq!(
            a.push(frame(true, OpCode::Text, &[0xce]), MAX),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn close_frames_are_validated() {
        let mut a = Assembler::new();
        assert_eq!(
            a.push(frame(true, OpCode::Close, &[3]), MAX),
            Err(ProtocolError::ClosePayloadTooShort)
        );
        assert_eq!(
            a.push(frame(true, OpCode::Close, &[0, 0]), MAX),
            Err(ProtocolError::InvalidCloseCode)
        );
        assert_eq!(
            a.push(frame(true, OpCode::Close, &[]), MAX),
            Ok(Some(Event::Close(None)))
        );
    }
}
