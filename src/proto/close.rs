//! Close frames: their payloads, received and sent (RFC 6455 §5.5.1, §7.4); the codes themselves
//! are `close_code.rs`.
//!
//! Owns: validation of a received close payload and the encoding of the one we send. Invariant:
//! 1005, 1006 and 1015 are never sent (§7.4.1 reserves them for reporting), and no reason we send
//! is longer than 123 bytes or cut inside a UTF-8 character.

use bytes::{BufMut, Bytes, BytesMut};

use super::close_code::is_valid_wire_code;
pub use super::close_code::CloseCode;
use super::error::ProtocolError;
use super::frame::{encode_header, OpCode, MAX_HEADER_LEN};

/// Longest reason that fits in a control frame after the two-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// A received close: code and reason, or `None` when the payload was empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The code the peer sent (always one [`CloseCode::is_sendable`] accepts).
    pub code: CloseCode,
    /// Valid UTF-8, checked on receipt.
    pub reason: Bytes,
}

impl CloseFrame {
    /// The reason as text (validated on receipt).
    pub fn reason_str(&self) -> &str {
        std::str::from_utf8(&self.reason).unwrap_or("")
    }
}

/// Validates a received close payload.
pub fn parse_close_payload(payload: &Bytes) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::ClosePayloadTooShort),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_wire_code(code) {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason = payload.slice(2..);
            std::str::from_utf8(&reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code: CloseCode::new(code), reason }))
        }
    }
}

/// The longest prefix of `reason` that fits a close frame and ends on a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// An unmasked close frame. A code that may not be sent (1005, 1006, 1015, out of range) gives
/// an empty payload, which the peer reads as "no status".
pub fn encode_close_frame(code: CloseCode, reason: &str) -> Bytes {
    let reason = truncate_reason(reason);
    let payload_len = if code.is_sendable() { 2 + reason.len() } else { 0 };
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, OpCode::Close, None, payload_len as u64);
    let mut buf = BytesMut::with_capacity(n + payload_len);
    buf.put_slice(&header[..n]);
    if payload_len > 0 {
        buf.put_u16(code.get());
        buf.put_slice(reason.as_bytes());
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_codes() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(is_valid_wire_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!is_valid_wire_code(code), "{code}");
        }
    }

    #[test]
    fn parse_table() {
        let p = |b: &[u8]| parse_close_payload(&Bytes::copy_from_slice(b));
        assert_eq!(p(b""), Ok(None));
        assert_eq!(p(&[0x03]), Err(ProtocolError::ClosePayloadTooShort));
        assert_eq!(p(&[0x03, 0xED]), Err(ProtocolError::InvalidCloseCode)); // 1005
        assert_eq!(p(&[0x03, 0xE8, 0xFF]), Err(ProtocolError::InvalidUtf8));
        let got = p(&[0x03, 0xE8, b'b', b'y', b'e']).unwrap().unwrap();
        assert_eq!((got.code.get(), got.reason_str()), (1000, "bye"));
    }

    #[test]
    fn encode_never_sends_reserved_codes_and_truncates_on_char_boundary() {
        assert_eq!(&encode_close_frame(CloseCode::NO_STATUS, "x")[..], &[0x88, 0x00]);
        assert_eq!(&encode_close_frame(CloseCode::ABNORMAL, "")[..], &[0x88, 0x00]);
        assert_eq!(&encode_close_frame(CloseCode::NORMAL, "ok")[..], &[0x88, 0x04, 0x03, 0xE8, b'o', b'k']);
        let long = "é".repeat(100); // 200 bytes, 2 per char
        let f = encode_close_frame(CloseCode::GOING_AWAY, &long);
        assert_eq!(f[1] as usize, 2 + 122, "122 is the last char boundary at or below 123");
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
