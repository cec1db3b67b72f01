//! permessage-deflate (RFC 7692): the negotiation of the extension and the compression of
//! messages, with no context takeover either way.
//!
//! Owns: parsing `Sec-WebSocket-Extensions` offers (`negotiate`), the `Agreement` and its
//! response header value, `Compressor` (one message in, its compressed payload out) and
//! `Inflater` (a compressed message in, its data out under a limit). Must not: hold a
//! connection's state, touch sockets, read a clock, or log.
//! Invariants:
//! - Every agreement answers `server_no_context_takeover` and `client_no_context_takeover`, so
//!   both sides start each message afresh: one `Compressor` and one `Inflater` serve every
//!   connection of a worker, and a connection holds no compression state between messages.
//! - An offer that cannot be honoured (unknown, duplicate or malformed parameters, §7) is
//!   declined and the next one is tried; a header that cannot be parsed at all declines its
//!   offers. Negotiation never fails the handshake.
//! - `Inflater::inflate` checks the limit as it inflates: it never holds more than the limit
//!   plus one byte of output, so a decompression bomb costs the limit, not its inflated size.
//! - The compressor's window is 15 bits. A client that asks the server for a smaller window
//!   (`server_max_window_bits` below 15) is answered with its value and then sent uncompressed
//!   messages only, which §7.1.2.1 allows (a window of no bytes is within any limit); what it
//!   sends is inflated as usual.

use std::fmt::Write as _;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's registered name (§7).
pub const EXTENSION: &str = "permessage-deflate";

/// The window of the server's compressor, and the largest a client may ask for.
pub const WINDOW_BITS: u8 = 15;

/// The bytes a sync flush ends with, removed from each compressed message and appended again
/// before inflating it (§7.2.1, §7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The accepted offer: what the response says, and whether the server may compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// `server_max_window_bits` as the client asked it (echoed in the response), if it did.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` for the response: the offered value, or 15 when the client
    /// offered the parameter without one; `None` when it was not offered (§7.1.2.2: the
    /// response must not carry it then).
    pub client_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response(&self) -> String {
        let mut s = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(s, "; server_max_window_bits={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(s, "; client_max_window_bits={bits}");
        }
        s
    }

    /// True when the server may send this client compressed messages: its compressor's window
    /// is within what the client allowed.
    pub fn server_compresses(&self) -> bool {
        self.server_max_window_bits.is_none_or(|bits| bits >= WINDOW_BITS)
    }
}

/// The first `permessage-deflate` offer the server can honour among the values of the
/// `Sec-WebSocket-Extensions` headers (each value a comma list of offers, in the client's order
/// of preference), or `None` to decline them all.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    header_values.into_iter().filter_map(parse_offers).flatten().find_map(|offer| accept(&offer))
}

/// One offer: the extension's name and its parameters, values unquoted.
type Offer = (String, Vec<(String, Option<String>)>);

/// §7: "A server MUST decline an extension negotiation offer for this extension if any of the
/// following conditions are met: The negotiation offer contains an extension parameter not
/// defined for use in an offer. The negotiation offer contains an extension parameter with an
/// invalid value. The negotiation offer contains multiple extension parameters with the same
/// name. The server doesn't support the offered configuration."
fn accept((name, params): &Offer) -> Option<Agreement> {
    if !name.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreement = Agreement { server_max_window_bits: None, client_max_window_bits: None };
    for (param, value) in params {
        let (index, ok) = match param.as_str() {
            // §7.1.1.1, §7.1.1.2: these have no value.
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            // §7.1.2.1: "This parameter has a decimal integer value without leading zeroes
            // between 8 to 15, inclusive"; in an offer it must have one.
            "server_max_window_bits" => {
                agreement.server_max_window_bits = value.as_deref().and_then(window_bits);
                (2, agreement.server_max_window_bits.is_some())
            }
            // §7.1.2.2: "This parameter has no value or a decimal integer value without
            // leading zeroes between 8 to 15 inclusive".
            "client_max_window_bits" => {
                agreement.client_max_window_bits = match value {
                    None => Some(WINDOW_BITS),
                    Some(v) => window_bits(v),
                };
                (3, agreement.client_max_window_bits.is_some())
            }
            _ => return None,
        };
        if !ok || seen[index] {
            return None;
        }
        seen[index] = true;
    }
    Some(agreement)
}

/// A window size as §7.1.2 writes it: 8 to 15, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// The offers of one header value (RFC 6455 §9.1: `extension *( ";" extension-param )`, comma
/// separated; a parameter's value a token or a quoted string). `None` when it does not parse.
fn parse_offers(value: &[u8]) -> Option<Vec<Offer>> {
    let mut p = Cursor { s: value, at: 0 };
    let mut offers = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b',') {
            continue; // §7 of RFC 9110: empty list elements are ignored
        }
        if p.done() {
            return Some(offers);
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            if p.done() || p.eat(b',') {
                break;
            }
            if !p.eat(b';') {
                return None;
            }
            p.skip_ws();
            let param = p.token()?.to_ascii_lowercase();
            p.skip_ws();
            let value = if p.eat(b'=') {
                p.skip_ws();
                Some(if p.peek() == Some(b'"') { p.quoted()? } else { p.token()? })
            } else {
                None
            };
            params.push((param, value));
        }
        offers.push((name, params));
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// RFC 9110 §5.6.2: `token = 1*tchar`.
    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    /// RFC 9110 §5.6.4: a quoted string with backslash escapes, returned unescaped.
    fn quoted(&mut self) -> Option<String> {
        self.eat(b'"');
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(*self.s.get(self.at + 1)?);
                    self.at += 2;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }
}

/// Compresses one message at a time (§7.2.1), starting afresh for each: the one compressor of
/// a worker, whatever the number of connections.
pub struct Compressor {
    deflate: Compress,
    out: Vec<u8>,
}

/// Output room a compressor or an inflater keeps between messages; a larger buffer, grown by a
/// large message, is released after it.
const KEEP: usize = 256 * 1024;

impl Compressor {
    /// A compressor at `level` (0 to 9; zlib's scale, 1 fastest, 9 smallest).
    pub fn new(level: u32) -> Self {
        Compressor { deflate: Compress::new(Compression::new(level.min(9)), false), out: Vec::new() }
    }

    /// The compressed payload of a message, as §7.2.1 makes it: the data deflated with a sync
    /// flush and the trailing `00 00 ff ff` removed. Borrowed until the next call; `None` only
    /// if the deflate stream reports an error, and then the message goes uncompressed.
    pub fn compress(&mut self, data: &[u8]) -> Option<&[u8]> {
        // §7.1.1.1 server_no_context_takeover: each message starts with an empty window.
        self.deflate.reset();
        if self.out.capacity() > KEEP {
            self.out = Vec::new();
        }
        self.out.clear();
        self.out.reserve(data.len() / 2 + 64);
        let mut at = 0;
        loop {
            if self.out.len() == self.out.capacity() {
                self.out.reserve(self.out.capacity());
            }
            let before = self.deflate.total_in();
            self.deflate.compress_vec(&data[at..], &mut self.out, FlushCompress::Sync).ok()?;
            at += (self.deflate.total_in() - before) as usize;
            // A sync flush is complete once it returns with output room left.
            if at == data.len() && self.out.len() < self.out.capacity() {
                break;
            }
        }
        if self.out.ends_with(&SYNC_TAIL) {
            self.out.truncate(self.out.len() - SYNC_TAIL.len());
        }
        Some(&self.out)
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The inflated data passed the limit (the caller closes with 1009).
    TooLarge,
    /// The data is not a valid DEFLATE stream.
    Invalid,
}

/// Inflates one message at a time (§7.2.2), starting afresh for each: the one inflater of a
/// worker. Its window is 15 bits, so it reads what a client compresses with any window.
pub struct Inflater {
    inflate: Decompress,
    inflated: u64,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// An inflater for raw DEFLATE data.
    pub fn new() -> Self {
        Inflater { inflate: Decompress::new(false), inflated: 0 }
    }

    /// Messages inflated so far.
    pub fn inflated(&self) -> u64 {
        self.inflated
    }

    /// The data of a compressed message (its payload, all fragments joined, without the tail
    /// §7.2.2 appends), or an error once more than `limit` bytes have come out.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Bytes, InflateError> {
        // §7.1.1.2 client_no_context_takeover: the client started this message afresh too.
        self.inflate.reset(false);
        let cap = limit.saturating_add(1);
        let mut out: Vec<u8> = Vec::new();
        out.reserve_exact(compressed.len().saturating_mul(4).clamp(64, KEEP).min(cap));
        // §7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the payload of
        // the message" and inflate.
        'inflate: for input in [compressed, &SYNC_TAIL[..]] {
            let mut at = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= cap {
                        return Err(InflateError::TooLarge);
                    }
                    out.reserve_exact(out.len().max(64).min(cap - out.len()));
                }
                let before = self.inflate.total_in();
                let status = self
                    .inflate
                    .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                at += (self.inflate.total_in() - before) as usize;
                if out.len() > limit {
                    return Err(InflateError::TooLarge);
                }
                match status {
                    // A final block ends the message; anything after it is ignored.
                    Status::StreamEnd => break 'inflate,
                    _ if at == input.len() && out.len() < out.capacity() => break,
                    Status::BufError if at < input.len() && out.len() < out.capacity() => {
                        return Err(InflateError::Invalid)
                    }
                    _ => {}
                }
            }
        }
        self.inflated += 1;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str]) -> Option<Agreement> {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    const PLAIN: Agreement = Agreement { server_max_window_bits: None, client_max_window_bits: None };

    #[test]
    fn offers_table() {
        let with =
            |s: Option<u8>, c: Option<u8>| Some(Agreement { server_max_window_bits: s, client_max_window_bits: c });
        let cases: &[(&[&str], Option<Agreement>)] = &[
            (&["permessage-deflate"], Some(PLAIN)),
            (&["Permessage-Deflate"], Some(PLAIN)),
            (&["permessage-deflate; client_max_window_bits"], with(None, Some(15))),
            (&["permessage-deflate; client_max_window_bits=10"], with(None, Some(10))),
            (&["permessage-deflate; client_max_window_bits=\"12\""], with(None, Some(12))),
            (&["permessage-deflate;server_max_window_bits=9;client_max_window_bits"], with(Some(9), Some(15))),
            (&["permessage-deflate; server_max_window_bits=8"], with(Some(8), None)),
            (&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"], Some(PLAIN)),
            // Declined offers fall through to the next one, in the client's order.
            (&["permessage-deflate; server_max_window_bits", "permessage-deflate"], Some(PLAIN)),
            (&["x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=9"], with(None, Some(9))),
            (&["permessage-deflate; server_max_window_bits=10, permessage-deflate"], with(Some(10), None)),
            // Each of these is declined (§7), and with nothing else offered, no extension.
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; server_max_window_bits=7"], None),
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits=010"], None),
            (&["permessage-deflate; client_max_window_bits=08"], None),
            (&["permessage-deflate; client_max_window_bits=abc"], None),
            (&["permessage-deflate; server_no_context_takeover=1"], None),
            (&["permessage-deflate; client_no_context_takeover; client_no_context_takeover"], None),
            (&["permessage-deflate; client_max_window_bits; client_max_window_bits=9"], None),
            (&["permessage-deflate; mystery"], None),
            (&["deflate-frame"], None),
            (&[""], None),
            // A header that does not parse offers nothing; the next header still counts.
            (&["permessage-deflate; ;", "permessage-deflate"], Some(PLAIN)),
            (&["permessage-deflate; client_max_window_bits=\"9"], None),
            (&["permessage-deflate garbage"], None),
        ];
        for (values, want) in cases {
            assert_eq!(offer(values), *want, "{values:?}");
        }
    }

    #[test]
    fn response_names_both_no_context_takeovers_and_the_window_bits() {
        assert_eq!(PLAIN.response(), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        let a = Agreement { server_max_window_bits: Some(9), client_max_window_bits: Some(15) };
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=15"
        );
        assert!(!a.server_compresses(), "a 9-bit window is below the compressor's");
        assert!(PLAIN.server_compresses());
        assert!(Agreement { server_max_window_bits: Some(15), ..PLAIN }.server_compresses());
    }

    #[test]
    fn rfc_7692_7_2_3_1_hello() {
        let mut c = Compressor::new(6);
        assert_eq!(c.compress(b"Hello").unwrap(), &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // No context takeover: the second message compresses exactly like the first.
        assert_eq!(c.compress(b"Hello").unwrap(), &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], b"Hello"), // 7.2.3.1
            (&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f], b"Hello"), // 7.2.3.3 stored
            (&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], b"Hello"), // 7.2.3.4 BFINAL set
            (&[0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00], b"Hello"), // 7.2.3.5
            (&[0x00], b""),                                          // 7.2.3.6 empty
        ];
        let mut inflater = Inflater::new();
        for (compressed, plain) in cases {
            assert_eq!(&inflater.inflate(compressed, 1024).unwrap()[..], *plain, "{compressed:02x?}");
        }
    }

    #[test]
    fn round_trips_at_every_size_class() {
        let mut c = Compressor::new(6);
        let mut inflater = Inflater::new();
        let json = br#"{"channel":"prices","seq":123,"data":{"symbol":"ABC","bid":101.25,"ask":101.5}}"#;
        for len in [0, 1, 100, 1000, 70_000, 300_000] {
            let data: Vec<u8> = json.iter().cycle().take(len).copied().collect();
            let compressed = c.compress(&data).unwrap().to_vec();
            assert!(len < 1000 || compressed.len() < len / 4, "{len}: {} bytes", compressed.len());
            assert_eq!(&inflater.inflate(&compressed, len).unwrap()[..], &data[..], "{len}");
        }
        let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let compressed = c.compress(&noise).unwrap().to_vec();
        assert_eq!(&inflater.inflate(&compressed, noise.len()).unwrap()[..], &noise[..]);
    }

    #[test]
    fn a_bomb_fails_at_the_limit_without_inflating_it_all() {
        let mut c = Compressor::new(9);
        let zeros = vec![0u8; 8 << 20];
        let bomb = c.compress(&zeros).unwrap().to_vec();
        assert!(bomb.len() < 16 * 1024, "8 MiB of zeros deflate to {} bytes", bomb.len());
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&bomb, 1 << 20), Err(InflateError::TooLarge));
        assert_eq!(inflater.inflate(&bomb, (8 << 20) - 1), Err(InflateError::TooLarge));
        assert_eq!(inflater.inflate(&bomb, 8 << 20).unwrap().len(), 8 << 20, "exactly at the limit passes");
        assert_eq!(inflater.inflate(b"\x00", 0).unwrap().len(), 0);
    }

    #[test]
    fn invalid_data_is_an_error_and_the_inflater_recovers() {
        let mut inflater = Inflater::new();
        for bad in [&[0xff, 0xff, 0xff][..], &[0x07, 0x00, 0x01], &[0x00, 0x05, 0x00, 0x00, 0x00, b'x']] {
            assert_eq!(inflater.inflate(bad, 1 << 20), Err(InflateError::Invalid), "{bad:02x?}");
        }
        assert_eq!(&inflater.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 5).unwrap()[..], b"Hello");
    }
}
