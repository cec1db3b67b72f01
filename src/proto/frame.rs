//! The frame header: decoding it from bytes and encoding it for sending (RFC 6455 §5.2).
//!
//! Owns: `OpCode`, `FrameHeader`, `decode_header` and the encoders. It judges only what a header
//! says (bits, opcode, lengths, the mask bit for the decoding side); size limits and payloads are
//! the decoder's. Invariant: decoding never allocates and fails as soon as the first offending
//! byte is seen, even when the rest of the header has not arrived.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::mask::apply_mask;
use super::status::Status;

/// The longest header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The RSV1 bit as `FrameHeader::rsv` holds it: permessage-deflate's "Per-Message Compressed"
/// bit (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// Frame opcodes that RFC 6455 defines; every other value is reserved and fails the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// A further fragment of a message.
    Continuation = 0x0,
    /// The first frame of a text message.
    Text = 0x1,
    /// The first frame of a binary message.
    Binary = 0x2,
    /// The close handshake (§5.5.1).
    Close = 0x8,
    /// A ping, answered with a pong (§5.5.2).
    Ping = 0x9,
    /// A pong, the answer to a ping or a heartbeat (§5.5.3).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for the low four bits of a frame's first byte, or `None` when reserved.
    pub const fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, ping and pong: frames with the high opcode bit set (§5.5).
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Which end of the connection is decoding. A server requires masked frames, a client forbids them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames, sends masked ones.
    Client,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of its message.
    pub fin: bool,
    /// RSV1..RSV3 as the top three bits of the low nibble (0b100 is RSV1).
    pub rsv: u8,
    /// What the payload is.
    pub opcode: OpCode,
    /// The masking key, when the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload's length as the header states it.
    pub payload_len: u64,
    /// Bytes the header occupies, 2 to 14.
    pub header_len: usize,
}

/// Decodes the header at the start of `buf` as seen by `role`.
///
/// `allowed_rsv` holds the RSV bits a negotiated extension permits (0 without extensions).
/// Returns `Partial` while more bytes are needed; an error as soon as a byte breaks a rule.
pub fn decode_header(buf: &[u8], role: Role, allowed_rsv: u8) -> Result<Status<FrameHeader>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(Status::Partial);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    if rsv & !allowed_rsv != 0 {
        // §5.2: "If a nonzero value is received and none of the negotiated extensions defines
        // the meaning of such a nonzero value, the receiving endpoint MUST _Fail the WebSocket
        // Connection_."
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode)?;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(Status::Partial);
    };
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
        (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlTooLong);
    }
    let (payload_len, len_end) = match len7 {
        126 => {
            let Some(ext) = buf.get(2..4) else {
                return Ok(Status::Partial);
            };
            (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
        }
        127 => {
            let Some(&first) = buf.get(2) else {
                return Ok(Status::Partial);
            };
            if first & 0x80 != 0 {
                // §5.2: "the most significant bit MUST be 0".
                return Err(ProtocolError::LengthTopBit);
            }
            let Some(ext) = buf.get(2..10) else {
                return Ok(Status::Partial);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(ext);
            (u64::from_be_bytes(be), 10)
        }
        n => (u64::from(n), 2),
    };
    let (mask, header_len) = if masked {
        let Some(key) = buf.get(len_end..len_end + 4) else {
            return Ok(Status::Partial);
        };
        (Some([key[0], key[1], key[2], key[3]]), len_end + 4)
    } else {
        (None, len_end)
    };
    Ok(Status::Complete(FrameHeader { fin, rsv, opcode, mask, payload_len, header_len }))
}

/// Writes a header into `dst` and returns its length. Uses the shortest length encoding, as §5.2
/// requires ("the minimal number of bytes MUST be used").
pub fn encode_header(
    dst: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> usize {
    dst[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if payload_len < 126 {
        dst[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u64::from(u16::MAX) {
        dst[1] = mask_bit | 126;
        dst[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        dst[1] = mask_bit | 127;
        dst[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        dst[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// Length of the unmasked header for a payload of `payload_len` bytes.
pub const fn server_header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// Appends one final, unmasked (server) frame to `dst`: the header written once, then the payload.
pub fn encode_frame_into(dst: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, None, payload.len() as u64);
    dst.reserve(n + payload.len());
    dst.put_slice(&header[..n]);
    dst.put_slice(payload);
}

/// One final, unmasked (server) frame in a single allocation of exactly its size.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(server_header_len(payload.len()) + payload.len());
    encode_frame_into(&mut buf, opcode, payload);
    buf.freeze()
}

/// Payloads at least this long are sent as a header plus the payload's own memory, shared by
/// every connection it goes to; shorter ones are copied behind their header into one buffer (one
/// allocation, one iovec), which costs less than a second slice in a `writev`.
pub const SHARE_THRESHOLD: usize = 16 * 1024;

/// A final, unmasked (server) text or binary frame as `(head, tail)`, which together are the
/// frame. Below [`SHARE_THRESHOLD`] the payload is copied into `head` and `tail` is empty; from
/// it on, `head` is the header alone and `tail` the payload's own `Bytes`, not copied.
pub fn encode_data_frame(text: bool, payload: Bytes) -> (Bytes, Bytes) {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    if payload.len() < SHARE_THRESHOLD {
        return (encode_frame(opcode, &payload), Bytes::new());
    }
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, None, payload.len() as u64);
    (Bytes::copy_from_slice(&header[..n]), payload)
}

/// A final, unmasked (server) frame of a compressed message (RFC 7692 §6: RSV1 set) as
/// `(head, tail)`, split as [`encode_data_frame`] splits: below [`SHARE_THRESHOLD`] one buffer,
/// from it on the header and the payload apart. `compressed` is copied, once.
pub fn encode_compressed_frame(text: bool, compressed: &[u8]) -> (Bytes, Bytes) {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, None, compressed.len() as u64);
    header[0] |= RSV1 << 4;
    if compressed.len() < SHARE_THRESHOLD {
        let mut buf = BytesMut::with_capacity(n + compressed.len());
        buf.put_slice(&header[..n]);
        buf.put_slice(compressed);
        return (buf.freeze(), Bytes::new());
    }
    (Bytes::copy_from_slice(&header[..n]), Bytes::copy_from_slice(compressed))
}

/// The payload of a server data frame made by [`encode_data_frame`] (whether it is text, and a
/// view of the payload: no copy), or `None` when `head` and `tail` are not one uncompressed,
/// final text or binary frame.
pub fn data_frame_payload(head: &Bytes, tail: &Bytes) -> Option<(bool, Bytes)> {
    let Ok(Status::Complete(h)) = decode_header(head, Role::Client, 0) else {
        return None;
    };
    if !h.fin || !matches!(h.opcode, OpCode::Text | OpCode::Binary) {
        return None;
    }
    let payload = if tail.is_empty() {
        head.slice(h.header_len..)
    } else if head.len() == h.header_len {
        tail.clone()
    } else {
        return None;
    };
    (payload.len() as u64 == h.payload_len).then_some((h.opcode == OpCode::Text, payload))
}

/// One masked (client) frame. The caller supplies the key: proto has no source of randomness.
pub fn encode_masked_frame(fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Bytes {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, fin, opcode, Some(key), payload.len() as u64);
    let mut buf = BytesMut::with_capacity(n + payload.len());
    buf.put_slice(&header[..n]);
    buf.put_slice(payload);
    apply_mask(&mut buf[n..], key, 0);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8], role: Role) -> Result<Status<FrameHeader>, ProtocolError> {
        decode_header(bytes, role, 0)
    }

    fn complete(bytes: &[u8], role: Role) -> FrameHeader {
        match header(bytes, role) {
            Ok(Status::Complete(h)) => h,
            other => panic!("expected a header from {bytes:02x?}, got {other:?}"),
        }
    }

    #[test]
    fn rfc_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        let h = complete(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], Role::Client);
        assert_eq!((h.fin, h.opcode, h.payload_len, h.header_len), (true, OpCode::Text, 5, 2));
        // A single-frame masked text message "Hello".
        let h = complete(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f], Role::Server);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.header_len, 6);
        // A fragmented unmasked text message: "Hel" then "lo".
        let h = complete(&[0x01, 0x03, 0x48, 0x65, 0x6c], Role::Client);
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let h = complete(&[0x80, 0x02, 0x6c, 0x6f], Role::Client);
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // 256 bytes binary message in a single unmasked frame.
        let h = complete(&[0x82, 0x7E, 0x01, 0x00], Role::Client);
        assert_eq!((h.opcode, h.payload_len, h.header_len), (OpCode::Binary, 256, 4));
        // 64KiB binary message in a single unmasked frame.
        let h = complete(&[0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00], Role::Client);
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
    }

    #[test]
    fn every_prefix_of_a_header_is_partial() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(header(&full[..cut], Role::Server), Ok(Status::Partial), "cut {cut}");
        }
        let h = complete(&full, Role::Server);
        assert_eq!((h.payload_len, h.header_len, h.mask), (65536, 14, Some([1, 2, 3, 4])));
    }

    #[test]
    fn violations_table() {
        use ProtocolError::*;
        let cases: &[(&[u8], Role, ProtocolError)] = &[
            (&[0xC1], Role::Server, ReservedBits),         // RSV1, judged from one byte
            (&[0xA1], Role::Server, ReservedBits),         // RSV2
            (&[0x91], Role::Server, ReservedBits),         // RSV3
            (&[0x83], Role::Server, ReservedOpcode),       // 0x3
            (&[0x87], Role::Server, ReservedOpcode),       // 0x7
            (&[0x8B], Role::Server, ReservedOpcode),       // 0xB
            (&[0x8F], Role::Server, ReservedOpcode),       // 0xF
            (&[0x09], Role::Server, FragmentedControl),    // ping without FIN
            (&[0x08], Role::Server, FragmentedControl),    // close without FIN
            (&[0x89, 0xFE], Role::Server, ControlTooLong), // ping with 16-bit length
            (&[0x89, 0xFF], Role::Server, ControlTooLong), // ping with 64-bit length
            (&[0x81, 0x05], Role::Server, UnmaskedFrame),
            (&[0x81, 0x85], Role::Client, MaskedFrame),
            (&[0x82, 0xFF, 0x80], Role::Server, LengthTopBit),
        ];
        for (bytes, role, want) in cases {
            assert_eq!(header(bytes, *role), Err(*want), "{bytes:02x?}");
        }
    }

    #[test]
    fn allowed_rsv_bits_pass() {
        let h = match decode_header(&[0xC1, 0x80, 0, 0, 0, 0], Role::Server, 0b100) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(h.rsv, 0b100);
    }

    #[test]
    fn control_frame_of_exactly_125_bytes_is_allowed() {
        let h = complete(&[0x89, 0xFD, 1, 2, 3, 4], Role::Server);
        assert_eq!(h.payload_len, 125);
    }

    #[test]
    fn encode_uses_minimal_lengths_and_round_trips() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut buf, true, OpCode::Binary, None, len);
            assert_eq!(n, server_header_len(len as usize), "len {len}");
            let h = complete(&buf[..n], Role::Client);
            assert_eq!((h.payload_len, h.header_len), (len, n));
        }
    }

    #[test]
    fn encode_frame_matches_rfc_hello() {
        assert_eq!(&encode_frame(OpCode::Text, b"Hello")[..], &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        let masked = encode_masked_frame(true, OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&masked[..], &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn encode_frame_allocates_exactly() {
        let f = encode_frame(OpCode::Binary, &[7u8; 300]);
        assert_eq!(f.len(), 304);
        assert_eq!(&f[..4], &[0x82, 0x7E, 0x01, 0x2C]);
    }

    #[test]
    fn compressed_frames_set_rsv1_and_data_frames_give_their_payload_back() {
        let (head, tail) = encode_compressed_frame(true, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(&head[..3], &[0xc1, 0x07, 0xf2]);
        assert!(tail.is_empty());
        let (head, tail) = encode_compressed_frame(false, &vec![1u8; SHARE_THRESHOLD]);
        assert_eq!((&head[..], tail.len()), (&[0xc2, 126, 0x40, 0x00][..], SHARE_THRESHOLD));
        let Ok(Status::Complete(h)) = decode_header(&head, Role::Client, RSV1) else { panic!() };
        assert_eq!((h.rsv, h.opcode), (RSV1, OpCode::Binary));

        let small = Bytes::from_static(b"hi");
        let (head, tail) = encode_data_frame(true, small);
        assert_eq!(data_frame_payload(&head, &tail), Some((true, Bytes::from_static(b"hi"))));
        let large = Bytes::from(vec![7u8; SHARE_THRESHOLD + 1]);
        let (head, tail) = encode_data_frame(false, large.clone());
        let (text, payload) = data_frame_payload(&head, &tail).unwrap();
        assert!(!text && payload.as_ptr() == large.as_ptr(), "a view, not a copy");
        let ping = encode_frame(OpCode::Ping, b"p");
        assert_eq!(data_frame_payload(&ping, &Bytes::new()), None);
        assert_eq!(data_frame_payload(&Bytes::from_static(&[0x81]), &Bytes::new()), None);
        assert_eq!(data_frame_payload(&Bytes::from_static(&[0x81, 5, b'a']), &Bytes::new()), None);
    }

    #[test]
    fn data_frames_copy_small_payloads_and_share_large_ones() {
        let (head, tail) = encode_data_frame(true, Bytes::from_static(b"hi"));
        assert_eq!((&head[..], tail.len()), (&[0x81, 0x02, b'h', b'i'][..], 0));
        let large = Bytes::from(vec![7u8; SHARE_THRESHOLD]);
        let (head, tail) = encode_data_frame(false, large.clone());
        assert_eq!(&head[..], &[0x82, 126, 0x40, 0x00]);
        assert_eq!(tail.as_ptr(), large.as_ptr(), "the payload is shared, not copied");
        let (head, tail) = encode_data_frame(false, Bytes::from(vec![1u8; SHARE_THRESHOLD - 1]));
        assert_eq!((head.len(), tail.len()), (4 + SHARE_THRESHOLD - 1, 0));
    }
}
