//! The one entry point for received WebSocket bytes: fed the receive buffer, it answers with the
//! next event (a whole message, a control frame) or says it needs more bytes, or names the
//! violation and its close code.
//!
//! Owns: `Receiver`, one per connection, which wraps the message assembler. The reactor calls
//! `receive` in a loop after every read and acts on what comes back; it never looks at frame
//! headers itself. Invariants:
//! - Whole frames leave the buffer as `Bytes` views of it (no copy); an incomplete frame's bytes
//!   stay in the buffer untouched, so the caller can keep them for the next read.
//! - Invalid UTF-8 fails as soon as the bytes holding it arrive, even inside a frame whose end
//!   has not (§8.1 fail fast), not when the message completes.
//! - A compressed message (RFC 7692) is inflated once whole, with the inflater the caller
//!   passes (one per worker): the receiver keeps no compression state.
//! - Between messages the receiver owns no memory (it is one null pointer).

use bytes::BytesMut;

use super::decoder::{decode_frame, FrameRules};
use super::deflate::Inflater;
use super::error::ProtocolError;
use super::frame::decode_header;
use super::message::{Assembler, Event};
use super::status::Status;

/// Turns received bytes into events for one connection. See the module doc.
#[derive(Default)]
pub struct Receiver {
    assembler: Assembler,
}

impl Receiver {
    /// A receiver between messages.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a fragmented message is open.
    pub fn in_message(&self) -> bool {
        self.assembler.in_message()
    }

    /// True while the receiver owns any memory (a fragmented message, a half-checked text frame).
    pub fn holds_memory(&self) -> bool {
        self.assembler.holds_memory()
    }

    /// Takes whole frames off the front of `buf` until one completes an event and returns it.
    /// `Partial` means every whole frame was consumed and what is left (possibly nothing) is the
    /// start of a frame: read more and call again. An error means the connection must be failed
    /// with the error's close code; what is left in `buf` is then of no use.
    ///
    /// `inflater` inflates compressed messages (RFC 7692): pass the worker's on a connection
    /// that negotiated permessage-deflate, whose `rules` then allow RSV1.
    pub fn receive(
        &mut self,
        buf: &mut BytesMut,
        rules: &FrameRules,
        max_message: usize,
        mut inflater: Option<&mut Inflater>,
    ) -> Result<Status<Event>, ProtocolError> {
        loop {
            match decode_frame(buf, rules)? {
                Status::Complete(frame) => {
                    if let Some(event) = self.assembler.push(frame, max_message, inflater.as_deref_mut())? {
                        return Ok(Status::Complete(event));
                    }
                }
                Status::Partial => {
                    self.check_partial(buf, rules)?;
                    return Ok(Status::Partial);
                }
            }
        }
    }

    /// §8.1 fail fast: validates the text already received of an incomplete frame.
    fn check_partial(&mut self, buf: &[u8], rules: &FrameRules) -> Result<(), ProtocolError> {
        if let Status::Complete(header) = decode_header(buf, rules.role, rules.allowed_rsv)? {
            let payload = &buf[header.header_len..];
            if !payload.is_empty() {
                self.assembler.check_partial_frame(&header, payload)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proto::close::CloseCode;
    use crate::proto::frame::{encode_masked_frame, OpCode, Role};

    const RULES: FrameRules = FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: 1 << 20 };
    const KEY: [u8; 4] = [1, 2, 3, 4];

    fn feed(receiver: &mut Receiver, bytes: &[u8]) -> Vec<Result<Event, ProtocolError>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match receiver.receive(&mut buf, &RULES, 1 << 20, None) {
                Ok(Status::Complete(event)) => out.push(Ok(event)),
                Ok(Status::Partial) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn frames_become_events_and_fragments_one_message() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_masked_frame(false, OpCode::Text, b"he", KEY));
        bytes.extend_from_slice(&encode_masked_frame(true, OpCode::Ping, b"p", KEY));
        bytes.extend_from_slice(&encode_masked_frame(true, OpCode::Continuation, b"llo", KEY));
        bytes.extend_from_slice(&encode_masked_frame(true, OpCode::Binary, &[9], KEY));
        let mut receiver = Receiver::new();
        let events = feed(&mut receiver, &bytes);
        assert_eq!(
            events,
            vec![
                Ok(Event::Ping(Bytes::from_static(b"p"))),
                Ok(Event::Text(Bytes::from_static(b"hello"))),
                Ok(Event::Binary(Bytes::from_static(&[9]))),
            ]
        );
        assert!(!receiver.holds_memory());
    }

    #[test]
    fn an_incomplete_frame_stays_in_the_buffer() {
        let frame = encode_masked_frame(true, OpCode::Binary, &[5; 10], KEY);
        let mut buf = BytesMut::from(&frame[..7]);
        let mut receiver = Receiver::new();
        assert_eq!(receiver.receive(&mut buf, &RULES, 1024, None), Ok(Status::Partial));
        assert_eq!(&buf[..], &frame[..7], "nothing consumed");
        buf.extend_from_slice(&frame[7..]);
        assert_eq!(
            receiver.receive(&mut buf, &RULES, 1024, None),
            Ok(Status::Complete(Event::Binary(Bytes::from(vec![5; 10]))))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        let frame = encode_masked_frame(true, OpCode::Text, b"ok \xff and much more text to come", KEY);
        let mut receiver = Receiver::new();
        let err = feed(&mut receiver, &frame[..10]).pop().expect("an answer").unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn violations_name_their_close_code() {
        let mut receiver = Receiver::new();
        let unmasked = [0x81, 0x01, b'x'];
        assert_eq!(feed(&mut receiver, &unmasked), vec![Err(ProtocolError::UnmaskedFrame)]);
        let mut receiver = Receiver::new();
        let mut buf = BytesMut::from(&encode_masked_frame(true, OpCode::Binary, &[0; 100], KEY)[..]);
        assert_eq!(receiver.receive(&mut buf, &RULES, 99, None), Err(ProtocolError::MessageTooLarge));
        assert_eq!(ProtocolError::MessageTooLarge.close_code(), 1009);
    }
}
