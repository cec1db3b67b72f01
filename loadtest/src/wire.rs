//! Bytes on the wire, client side: frames found in a receive buffer in place, masked frames built
//! into a reusable write buffer, and the few JSON fields the scenarios read.
//!
//! Owns: `scan_frames`, `scan_frames_after_tail`, `push_frame`, `push_frame_with`, `json_u64` and
//! `json_str`. Frame headers are decoded and encoded by `fanout::proto`; this module only walks a
//! buffer with them. Invariants: nothing here allocates per message: payloads are slices of the
//! caller's buffer (a frame split across reads is the one copied, and only it), outgoing frames are
//! appended to the caller's `Vec`, and JSON fields are found by scanning, not by parsing into a
//! tree. The generator's own code must stay small next to the kernel's share of its time.

use fanout::proto::frame::{decode_header, encode_header, MAX_HEADER_LEN, RSV1};
use fanout::proto::mask::apply_mask;
use fanout::proto::{OpCode, ProtocolError, Role, Status};

/// One complete frame inside a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub fin: bool,
    pub opcode: OpCode,
    /// RSV1: the first frame of a permessage-deflate compressed message.
    pub compressed: bool,
    pub payload: &'a [u8],
}

/// Calls `on_frame` for every complete frame at the front of `buf` and returns how many bytes they
/// took; the rest is an incomplete frame for the caller to keep. `on_frame` returns false to stop
/// early (the connection is closing). Server frames are never masked, so payloads are used as they
/// lie in the buffer.
pub fn scan_frames<'a>(
    buf: &'a [u8],
    max_payload: usize,
    mut on_frame: impl FnMut(RawFrame<'a>) -> bool,
) -> Result<usize, ProtocolError> {
    let mut at = 0;
    while at < buf.len() {
        // RSV1 passes: a server sends it only to a client that offered permessage-deflate.
        let header = match decode_header(&buf[at..], Role::Client, RSV1)? {
            Status::Complete(h) => h,
            Status::Partial => break,
        };
        if header.payload_len > max_payload as u64 {
            return Err(ProtocolError::FrameTooLarge);
        }
        let end = at + header.header_len + header.payload_len as usize;
        if end > buf.len() {
            break;
        }
        let payload = &buf[at + header.header_len..end];
        let frame = RawFrame { fin: header.fin, opcode: header.opcode, compressed: header.rsv & RSV1 != 0, payload };
        at = end;
        if !on_frame(frame) {
            break;
        }
    }
    Ok(at)
}

/// A connection's tail above this capacity is freed once empty: a very large frame passed.
const KEEP_TAIL_CAPACITY: usize = 128 * 1024;

/// Walks the frames of a fresh read that follows `tail`, the start of a frame split across reads
/// (empty when the last read ended on a frame boundary), and leaves the new incomplete frame in
/// `tail`. Only the bytes the split frame lacks are copied out of `fresh`; every other frame is
/// walked where it lies. (Appending the whole read to the tail instead cost a 64 KiB memmove per
/// read, plus page faults as tails grew, once a subscriber fell behind and every full read ended
/// mid-frame: a third of the generator's time in `broadcast`.) `on_frame` returning false stops
/// the walk and drops what is left (the connection is closing).
///
/// Invariant: on entry `tail` holds no complete frame.
pub fn scan_frames_after_tail(
    tail: &mut Vec<u8>,
    fresh: &[u8],
    max_payload: usize,
    mut on_frame: impl FnMut(RawFrame<'_>) -> bool,
) -> Result<(), ProtocolError> {
    let mut stopped = false;
    let mut rest = fresh;
    if !tail.is_empty() {
        // Enough of the header to learn the frame's length, then the rest of that frame.
        let mut taken = fresh.len().min(MAX_HEADER_LEN.saturating_sub(tail.len()));
        tail.extend_from_slice(&fresh[..taken]);
        if let Ok(Status::Complete(h)) = decode_header(tail, Role::Client, RSV1) {
            let total = (h.header_len as u64).saturating_add(h.payload_len);
            let missing = usize::try_from(total.saturating_sub(tail.len() as u64)).unwrap_or(usize::MAX);
            let more = missing.min(fresh.len() - taken);
            tail.extend_from_slice(&fresh[taken..taken + more]);
            taken += more;
        }
        let used = scan_frames(tail, max_payload, |f| {
            stopped = !on_frame(f);
            !stopped
        })?;
        if stopped {
            tail.clear();
            return Ok(());
        }
        if used == 0 {
            // Still incomplete: all of `fresh` went into the tail.
            return Ok(());
        }
        // The split frame was longer than the old tail (the invariant), so what the walk left
        // came from `fresh`.
        debug_assert!(tail.len() - used <= taken, "the tail held a complete frame on entry");
        rest = &fresh[taken - (tail.len() - used)..];
        tail.clear();
        if tail.capacity() > KEEP_TAIL_CAPACITY {
            *tail = Vec::new();
        }
    }
    let used = scan_frames(rest, max_payload, |f| {
        stopped = !on_frame(f);
        !stopped
    })?;
    if !stopped {
        tail.extend_from_slice(&rest[used..]);
    }
    Ok(())
}

/// Appends one final masked frame carrying `payload` to `out`.
pub fn push_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, Some(key), payload.len() as u64);
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// Appends one final masked frame whose payload `write` appends to the buffer it is given, so a
/// payload built on the fly (JSON with a timestamp) goes straight into the write buffer. Room for
/// the longest header is left first and the payload moved back when the header is shorter: a
/// memmove of a small payload is cheaper than a second buffer.
pub fn push_frame_with(out: &mut Vec<u8>, opcode: OpCode, key: [u8; 4], write: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.resize(start + MAX_HEADER_LEN, 0);
    write(out);
    let len = out.len() - start - MAX_HEADER_LEN;
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, Some(key), len as u64);
    if n < MAX_HEADER_LEN {
        out.copy_within(start + MAX_HEADER_LEN.., start + n);
        out.truncate(start + n + len);
    }
    out[start..start + n].copy_from_slice(&header[..n]);
    apply_mask(&mut out[start + n..], key, 0);
    len
}

/// The unsigned integer after `"key":` (the first occurrence), e.g. `json_u64(b"{\"seq\":5}", "seq")`.
pub fn json_u64(buf: &[u8], key: &str) -> Option<u64> {
    let at = find_value(buf, key)?;
    let digits = buf[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    // At most 19 digits always fit in a u64.
    Some(buf[at..at + digits].iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The string after `"key":` (without quotes or unescaping; good for ops and types).
pub fn json_str<'a>(buf: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let at = find_value(buf, key)?;
    if buf.get(at) != Some(&b'"') {
        return None;
    }
    let len = buf[at + 1..].iter().position(|&b| b == b'"')?;
    Some(&buf[at + 1..at + 1 + len])
}

/// Position just after the first `"key"` in `buf` (the quotes included). Compared byte by byte
/// at each quote, without building the quoted needle: slice equality and the needle's buffer
/// were a memcmp and a memset per candidate, 17% of the generator's time in `broadcast`.
fn after_quoted_key(buf: &[u8], key: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + key.len() + 2 <= buf.len() {
        i += buf[i..].iter().position(|&b| b == b'"')?;
        let end = i + 1 + key.len();
        if buf.get(end) == Some(&b'"') && buf[i + 1..end].iter().zip(key).all(|(a, b)| a == b) {
            return Some(end + 1);
        }
        i += 1;
    }
    None
}

/// Index of the first byte of the value of `"key"`, after the colon and any spaces.
fn find_value(buf: &[u8], key: &str) -> Option<usize> {
    let mut at = after_quoted_key(buf, key.as_bytes())?;
    while buf.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    if buf.get(at) != Some(&b':') {
        // The key text appeared as a value; look further on.
        return find_value(&buf[at..], key).map(|i| i + at);
    }
    at += 1;
    while buf.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout::proto::frame::encode_frame;
    use fanout::proto::{decode_frame, FrameRules};

    fn server_frames(parts: &[(OpCode, &[u8])]) -> Vec<u8> {
        parts.iter().flat_map(|(op, p)| encode_frame(*op, p).to_vec()).collect()
    }

    /// Feeds `wire` in reads of the given sizes (cycled) and returns every frame seen, plus the
    /// largest tail held between reads.
    fn walk_in_reads(wire: &[u8], sizes: &[usize]) -> (Vec<(OpCode, Vec<u8>)>, usize) {
        let mut tail = Vec::new();
        let mut seen = Vec::new();
        let mut largest_tail = 0;
        let mut at = 0;
        for &size in sizes.iter().cycle() {
            if at == wire.len() {
                break;
            }
            let end = (at + size).min(wire.len());
            scan_frames_after_tail(&mut tail, &wire[at..end], 1 << 20, |f| {
                seen.push((f.opcode, f.payload.to_vec()));
                true
            })
            .unwrap();
            largest_tail = largest_tail.max(tail.len());
            at = end;
        }
        assert!(tail.is_empty(), "the stream ends on a frame boundary");
        (seen, largest_tail)
    }

    #[test]
    fn frames_split_anywhere_across_reads_arrive_once_and_in_order() {
        // Lengths on each side of the 7-bit and 16-bit length encodings, and empty ones.
        let payloads: Vec<Vec<u8>> = [0usize, 1, 5, 125, 126, 127, 300, 65_535, 65_536, 70_000, 3]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|b| (b + i) as u8).collect())
            .collect();
        let parts: Vec<(OpCode, &[u8])> = payloads.iter().map(|p| (OpCode::Binary, p.as_slice())).collect();
        let wire = server_frames(&parts);
        let expect: Vec<(OpCode, Vec<u8>)> = payloads.iter().map(|p| (OpCode::Binary, p.clone())).collect();
        for sizes in
            [&[1usize][..], &[2], &[3, 1], &[13], &[14, 15], &[127, 5], &[4096], &[65_536], &[100_000], &[7, 65_540]]
        {
            let (seen, largest_tail) = walk_in_reads(&wire, sizes);
            assert!(seen == expect, "reads of {sizes:?}: {} frames, want {}", seen.len(), expect.len());
            assert!(largest_tail < 70_000 + MAX_HEADER_LEN, "reads of {sizes:?}: tail {largest_tail}");
        }
    }

    #[test]
    fn a_split_frame_copies_only_what_it_lacks_from_the_next_read() {
        let wire = server_frames(&[(OpCode::Text, &[b'a'; 100]), (OpCode::Text, &[b'b'; 100]), (OpCode::Text, b"c")]);
        // The first read ends 10 bytes into the first frame.
        let mut tail = Vec::new();
        let mut seen = Vec::new();
        scan_frames_after_tail(&mut tail, &wire[..10], 1 << 20, |_| true).unwrap();
        assert_eq!(tail, &wire[..10]);
        // The second ends inside the third frame: the tail keeps just that frame's start.
        let end = wire.len() - 1;
        scan_frames_after_tail(&mut tail, &wire[10..end], 1 << 20, |f| {
            seen.push(f.payload.len());
            true
        })
        .unwrap();
        assert_eq!(seen, [100, 100]);
        assert_eq!(tail, &wire[204..end]);
        assert!(tail.capacity() < 1024, "the tail never held the whole read");
    }

    #[test]
    fn a_stop_drops_the_rest_of_the_read() {
        let wire = server_frames(&[(OpCode::Text, b"one"), (OpCode::Close, b""), (OpCode::Text, b"two")]);
        for split in [3, 6] {
            let mut tail = Vec::new();
            let mut seen = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                scan_frames_after_tail(&mut tail, chunk, 1 << 20, |f| {
                    seen.push(f.opcode);
                    f.opcode != OpCode::Close
                })
                .unwrap();
                if seen.contains(&OpCode::Close) {
                    break;
                }
            }
            assert_eq!(seen, [OpCode::Text, OpCode::Close], "split at {split}");
            assert!(tail.is_empty());
        }
    }

    #[test]
    fn scans_every_complete_frame_and_leaves_the_tail() {
        let big = vec![7u8; 70_000];
        let wire = server_frames(&[
            (OpCode::Text, b"hello"),
            (OpCode::Binary, &[1u8; 300]),
            (OpCode::Ping, b""),
            (OpCode::Binary, &big),
        ]);
        for cut in [wire.len(), wire.len() - 1, 7, 3, 0] {
            let mut seen = Vec::new();
            let used = scan_frames(&wire[..cut], 1 << 20, |f| {
                seen.push((f.opcode, f.payload.len()));
                true
            })
            .unwrap();
            let whole: &[(OpCode, usize)] =
                &[(OpCode::Text, 5), (OpCode::Binary, 300), (OpCode::Ping, 0), (OpCode::Binary, 70_000)];
            let expect: Vec<_> = match cut {
                c if c == wire.len() => whole.to_vec(),
                c if c > 400 => whole[..3].to_vec(),
                7 => whole[..1].to_vec(),
                _ => vec![],
            };
            assert_eq!(seen, expect, "cut {cut}");
            let sizes = [7usize, 304, 2, 70_010];
            let want_used: usize = sizes[..expect.len()].iter().sum();
            assert_eq!(used, want_used, "cut {cut}");
        }
    }

    #[test]
    fn stops_when_asked_and_rejects_bad_frames() {
        let wire = server_frames(&[(OpCode::Text, b"a"), (OpCode::Text, b"b")]);
        let used = scan_frames(&wire, 100, |_| false).unwrap();
        assert_eq!(used, 3);
        assert_eq!(scan_frames(&wire, 0, |_| true), Err(ProtocolError::FrameTooLarge));
        // A masked frame from a server is a violation.
        let masked = fanout::proto::frame::encode_masked_frame(true, OpCode::Text, b"x", [1, 2, 3, 4]);
        assert_eq!(scan_frames(&masked, 100, |_| true), Err(ProtocolError::MaskedFrame));
    }

    #[test]
    fn pushed_frames_decode_on_the_server_side() {
        let mut out = Vec::new();
        push_frame(&mut out, OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        for len in [0usize, 5, 125, 126, 1000, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let n = push_frame_with(&mut out, OpCode::Binary, [9, 8, 7, 6], |b| b.extend_from_slice(&payload));
            assert_eq!(n, len);
        }
        let mut buf = bytes::BytesMut::from(&out[..]);
        let rules = FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: 1 << 20 };
        let mut lens = Vec::new();
        while let Ok(Status::Complete(f)) = decode_frame(&mut buf, &rules) {
            assert!(f.payload.iter().enumerate().all(|(i, &b)| b == i as u8) || f.payload[..] == b"Hello"[..]);
            lens.push(f.payload.len());
        }
        assert_eq!(lens, vec![5, 0, 5, 125, 126, 1000, 65535, 65536]);
        assert!(buf.is_empty());
    }

    #[test]
    fn rsv1_marks_a_compressed_message() {
        let mut frame = fanout::proto::frame::encode_frame(OpCode::Text, b"zz").to_vec();
        frame[0] |= RSV1 << 4;
        let mut seen = Vec::new();
        scan_frames(&frame, 100, |f| {
            seen.push((f.compressed, f.payload.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(true, b"zz".to_vec())]);
    }

    #[test]
    fn json_fields() {
        let m = br#"{"op":"message","channel":"bench","seq":18,"data":{"t":123456789,"n":7,"p":"xx"}}"#;
        assert_eq!(json_str(m, "op"), Some(&b"message"[..]));
        assert_eq!(json_u64(m, "seq"), Some(18));
        assert_eq!(json_u64(m, "t"), Some(123456789));
        assert_eq!(json_u64(m, "n"), Some(7));
        assert_eq!(json_u64(m, "missing"), None);
        assert_eq!(json_u64(br#"{"seq": 42 }"#, "seq"), Some(42));
        assert_eq!(json_u64(br#"{"seq":"x"}"#, "seq"), None);
        assert_eq!(json_u64(br#"{"t":9999999999999999999}"#, "t"), Some(9_999_999_999_999_999_999));
        assert_eq!(json_u64(br#"{"t":10000000000000000000}"#, "t"), None, "20 digits may not fit");
        // A key's text appearing as a value first is skipped.
        assert_eq!(json_u64(br#"{"a":"seq","seq":3}"#, "seq"), Some(3));
        assert_eq!(json_str(br#"{"type" : "broadcastResult"}"#, "type"), Some(&b"broadcastResult"[..]));
    }
}
