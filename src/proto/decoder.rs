//! Whole frames out of a receive buffer, unmasked in place and handed on without copying.
//!
//! Owns: `FrameRules` (role, permitted RSV bits, frame size limit) and `decode_frame`. Invariants:
//! a frame's length is checked against the limit before a byte is reserved for it; a complete
//! frame leaves the buffer as a `Bytes` view of the same memory (`split_to` + `freeze`), so no
//! payload is ever copied here; bytes of an incomplete frame stay in the buffer untouched.

use bytes::{Bytes, BytesMut};

use super::error::ProtocolError;
use super::frame::{decode_header, OpCode, Role};
use super::mask::apply_mask;
use super::status::Status;

/// What a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRules {
    /// Which side we are: a server expects masked frames, a client unmasked ones.
    pub role: Role,
    /// RSV bits a negotiated extension gives meaning to; 0 without extensions.
    pub allowed_rsv: u8,
    /// Largest payload of a single frame; a longer one fails with close 1009.
    pub max_frame_payload: usize,
}

/// A complete frame with its payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The final fragment of its message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (0b100 is RSV1).
    pub rsv: u8,
    /// What the payload is.
    pub opcode: OpCode,
    /// The payload, unmasked.
    pub payload: Bytes,
}

/// Takes one complete frame off the front of `buf`.
///
/// `Partial` leaves `buf` untouched; the caller owns growing it (see `frame_len_hint`).
pub fn decode_frame(buf: &mut BytesMut, rules: &FrameRules) -> Result<Status<Frame>, ProtocolError> {
    let header = match decode_header(buf, rules.role, rules.allowed_rsv)? {
        Status::Complete(h) => h,
        Status::Partial => return Ok(Status::Partial),
    };
    if header.payload_len > rules.max_frame_payload as u64 {
        return Err(ProtocolError::FrameTooLarge);
    }
    let total = header.header_len + header.payload_len as usize;
    if buf.len() < total {
        return Ok(Status::Partial);
    }
    let mut frame = buf.split_to(total);
    let _ = frame.split_to(header.header_len);
    if let Some(key) = header.mask {
        apply_mask(&mut frame, key, 0);
    }
    Ok(Status::Complete(Frame { fin: header.fin, rsv: header.rsv, opcode: header.opcode, payload: frame.freeze() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::encode_masked_frame;

    const RULES: FrameRules = FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: 1024 };

    fn decode(buf: &mut BytesMut) -> Result<Status<Frame>, ProtocolError> {
        decode_frame(buf, &RULES)
    }

    #[test]
    fn decodes_rfc_masked_hello_and_leaves_the_rest() {
        let mut buf = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0x89][..]);
        let Ok(Status::Complete(f)) = decode(&mut buf) else { panic!() };
        assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, OpCode::Text, &b"Hello"[..]));
        assert_eq!(&buf[..], &[0x89]);
        assert_eq!(decode(&mut buf), Ok(Status::Partial));
    }

    #[test]
    fn payload_is_a_view_of_the_receive_buffer_not_a_copy() {
        let wire = encode_masked_frame(true, OpCode::Binary, &[5u8; 100], [1, 2, 3, 4]);
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(&wire);
        let start = buf.as_ptr() as usize;
        let Ok(Status::Complete(f)) = decode(&mut buf) else { panic!() };
        assert_eq!(f.payload.as_ptr() as usize, start + 6, "payload must point into the buffer");
        assert!(f.payload.iter().all(|&b| b == 5));
    }

    #[test]
    fn frame_over_the_limit_fails_before_reserving() {
        // Header announces 2^40 bytes: must fail with 1009 without trying to reserve a terabyte.
        let mut buf = BytesMut::from(&[0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4][..]);
        let before = buf.capacity();
        assert_eq!(decode(&mut buf), Err(ProtocolError::FrameTooLarge));
        assert_eq!(buf.capacity(), before);
        let mut buf = BytesMut::from(&[0x82, 0xFE, 0x04, 0x01, 1, 2, 3, 4][..]); // 1025 bytes
        assert_eq!(decode(&mut buf), Err(ProtocolError::FrameTooLarge));
        let mut buf = BytesMut::from(&[0x82, 0xFE, 0x04, 0x00, 1, 2, 3, 4][..]); // exactly 1024
        assert_eq!(decode(&mut buf), Ok(Status::Partial));
    }

    #[test]
    fn byte_by_byte_arrival_yields_the_frame_once_complete() {
        let wire = encode_masked_frame(true, OpCode::Text, b"fragmented arrival", [9, 9, 9, 9]);
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, Status::Partial);
            } else {
                let Status::Complete(f) = got else { panic!() };
                assert_eq!(&f.payload[..], b"fragmented arrival");
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn header_errors_propagate() {
        let mut buf = BytesMut::from(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'][..]);
        assert_eq!(decode(&mut buf), Err(ProtocolError::UnmaskedFrame));
    }
}
