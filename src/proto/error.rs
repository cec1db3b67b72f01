//! Protocol violations a peer can commit, each mapped to the close code RFC 6455 §7.4.1 prescribes.
//!
//! Owns: the `ProtocolError` vocabulary shared by the frame decoder, message assembly and the
//! close-frame parser. Invariant: the type is small and `Copy`, so returning it costs nothing and
//! the reactor can turn any violation into a close frame without allocating.

use std::fmt;

use super::close_code::CloseCode;

/// One variant per violation. The doc of each names the RFC section it enforces and its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolError {
    /// §5.2: "RSV1, RSV2, RSV3 ... MUST be 0 unless an extension is negotiated". Close 1002.
    ReservedBits,
    /// §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; "the receiving endpoint MUST _Fail the
    /// WebSocket Connection_". Close 1002.
    ReservedOpcode,
    /// §5.5: "Control frames themselves MUST NOT be fragmented." Close 1002.
    FragmentedControl,
    /// §5.5: "All control frames MUST have a payload length of 125 bytes or less." Close 1002.
    ControlTooLong,
    /// §5.1: "a server MUST close the connection upon receiving a frame that is not masked". Close 1002.
    UnmaskedFrame,
    /// §5.1: "A client MUST close a connection if it detects a masked frame." Close 1002.
    MaskedFrame,
    /// §5.2: in a 64-bit length "the most significant bit MUST be 0". Close 1002.
    LengthTopBit,
    /// A frame whose payload exceeds the configured frame limit (§7.4.1: "a message that is too
    /// big for it to process"). Checked before any memory is reserved. Close 1009.
    FrameTooLarge,
    /// A message whose fragments add up to more than the configured message limit, or a
    /// compressed message (RFC 7692) that inflates past it, found as it inflates. Close 1009.
    MessageTooLarge,
    /// §5.4: a continuation frame with no fragmented message in progress. Close 1002.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame while a fragmented message is still open. Close 1002.
    ExpectedContinuation,
    /// §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte
    /// stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
    /// Connection_." Text payloads and close reasons. Close 1007.
    InvalidUtf8,
    /// §5.5.1: a close payload must be empty or start with a two-byte code; one byte is neither.
    /// Close 1002.
    ClosePayloadTooShort,
    /// §7.4: a close code outside the ranges a peer may send (1005, 1006, 1015 and unassigned
    /// codes are never sent on the wire). Close 1002.
    InvalidCloseCode,
    /// RFC 7692 §6: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
    /// frames [...]. An endpoint receiving such a frame MUST _Fail the WebSocket Connection_."
    /// RSV1 on a ping, pong or close. Close 1002.
    CompressedControl,
    /// RFC 7692 §6: the same for "non-first fragments of a data message": RSV1 on a
    /// continuation frame. Close 1002.
    CompressedContinuation,
    /// RFC 7692 §7.2.2: a compressed message whose payload is not a valid DEFLATE stream. The
    /// data is not what the message claims to be (§7.4.1). Close 1007.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code to send when failing the connection for this violation.
    pub const fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => CloseCode::MESSAGE_TOO_BIG,
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame, at most 123 bytes as §5.5 allows.
    pub const fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::FragmentedControl => "fragmented control frame",
            ProtocolError::ControlTooLong => "control frame over 125 bytes",
            ProtocolError::UnmaskedFrame => "client frame not masked",
            ProtocolError::MaskedFrame => "server frame masked",
            ProtocolError::LengthTopBit => "64-bit length with top bit set",
            ProtocolError::FrameTooLarge => "frame too large",
            ProtocolError::MessageTooLarge => "message too large",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented one",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::ClosePayloadTooShort => "close payload of one byte",
            ProtocolError::InvalidCloseCode => "invalid close code",
            ProtocolError::CompressedControl => "compressed control frame",
            ProtocolError::CompressedContinuation => "RSV1 on a continuation frame",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close {})", self.reason(), self.close_code())
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_map_to_1009_utf8_to_1007_rest_to_1002() {
        assert_eq!(ProtocolError::FrameTooLarge.close_code(), 1009);
        assert_eq!(ProtocolError::MessageTooLarge.close_code(), 1009);
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::ReservedBits.close_code(), 1002);
        assert_eq!(ProtocolError::InvalidCloseCode.close_code(), 1002);
        assert_eq!(ProtocolError::CompressedControl.close_code(), 1002);
        assert_eq!(ProtocolError::CompressedContinuation.close_code(), 1002);
        assert_eq!(ProtocolError::InvalidCompressedData.close_code(), 1007);
    }

    #[test]
    fn reasons_fit_in_a_close_frame() {
        use ProtocolError::*;
        for e in [
            ReservedBits,
            ReservedOpcode,
            FragmentedControl,
            ControlTooLong,
            UnmaskedFrame,
            MaskedFrame,
            LengthTopBit,
            FrameTooLarge,
            MessageTooLarge,
            UnexpectedContinuation,
            ExpectedContinuation,
            InvalidUtf8,
            ClosePayloadTooShort,
            InvalidCloseCode,
            CompressedControl,
            CompressedContinuation,
            InvalidCompressedData,
        ] {
            assert!(e.reason().len() <= 123, "{e:?}");
        }
    }
}
