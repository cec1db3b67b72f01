//! The client address a trusted proxy hands on: the PROXY protocol header (versions 1 and 2, as
//! HAProxy's proxy-protocol.txt defines them) in front of a connection's first bytes, and the
//! `X-Forwarded-For` header of an HTTP request.
//!
//! Owns: `parse_proxy_header` (complete / need more / error, like every parser here),
//! `ProxyHeader`, `ProxyError`, and `forwarded_client`, the walk of `X-Forwarded-For` from the
//! right. Must not: decide whom to trust (the caller passes that in) or touch a socket: the
//! addresses are `core::net` values. Invariants: a version 1 header is never looked at past its
//! 107th byte (the spec's bound); a version 2 header longer than the caller's `max_len` is an
//! error before it is buffered whole; `Partial` means every byte seen so far is a valid prefix.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::status::Status;

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included ("PROXY UNKNOWN" with two IPv6 addresses).
pub const V1_MAX_LEN: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
/// Signature, version and command, family and transport, length.
const V2_FIXED: usize = 16;

/// A whole PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The client's address as the proxy saw it. `None` when the header says the connection's
    /// own endpoints are the real ones: version 1 `UNKNOWN`, version 2 `LOCAL` (the proxy's
    /// health checks), and version 2 families other than TCP over IPv4 or IPv6.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when `source` is given.
    pub destination: Option<SocketAddr>,
    /// Bytes the header takes at the front of the input (TLVs included).
    pub len: usize,
}

/// Why a PROXY header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The bytes start with neither `PROXY ` nor the version 2 signature.
    BadSignature,
    /// No CRLF within the first 107 bytes of a version 1 header.
    V1TooLong,
    /// A version 1 line that does not follow the grammar; names the part.
    BadV1(&'static str),
    /// A version 2 header whose version nibble is not 2.
    BadVersion(u8),
    /// A version 2 command other than LOCAL (0) or PROXY (1).
    BadCommand(u8),
    /// A version 2 address family and transport byte the spec does not define.
    BadFamily(u8),
    /// A version 2 length shorter than its family's addresses.
    ShortAddresses,
    /// A version 2 header longer than the caller allows.
    TooLong(usize),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadSignature => f.write_str("no PROXY header (neither `PROXY ` nor the v2 signature)"),
            ProxyError::V1TooLong => write!(f, "PROXY v1 line without CRLF in its first {V1_MAX_LEN} bytes"),
            ProxyError::BadV1(what) => write!(f, "PROXY v1 line: bad {what}"),
            ProxyError::BadVersion(v) => write!(f, "PROXY v2 header with version {v}"),
            ProxyError::BadCommand(c) => write!(f, "PROXY v2 header with command {c}"),
            ProxyError::BadFamily(b) => write!(f, "PROXY v2 header with family/transport byte {b:#04x}"),
            ProxyError::ShortAddresses => f.write_str("PROXY v2 length shorter than its addresses"),
            ProxyError::TooLong(n) => write!(f, "PROXY v2 header of {n} bytes, over the limit"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the PROXY header at the front of `data` (either version). `max_len` bounds a version 2
/// header, TLVs included (a version 1 header is bounded by the spec). `Partial`: the bytes so far
/// are a valid beginning, and nothing is consumed.
pub fn parse_proxy_header(data: &[u8], max_len: usize) -> Result<Status<ProxyHeader>, ProxyError> {
    let starts = |prefix: &[u8]| {
        let n = data.len().min(prefix.len());
        data[..n] == prefix[..n]
    };
    if data.len() >= V2_SIGNATURE.len() && data[..V2_SIGNATURE.len()] == V2_SIGNATURE {
        parse_v2(data, max_len)
    } else if data.len() >= V1_PREFIX.len() && data.starts_with(V1_PREFIX) {
        parse_v1(data)
    } else if starts(&V2_SIGNATURE) || starts(V1_PREFIX) {
        Ok(Status::Partial)
    } else {
        Err(ProxyError::BadSignature)
    }
}

/// `PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT\r\n`, or `PROXY UNKNOWN` and anything up to CRLF.
fn parse_v1(data: &[u8]) -> Result<Status<ProxyHeader>, ProxyError> {
    let window = &data[..data.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if data.len() >= V1_MAX_LEN { Err(ProxyError::V1TooLong) } else { Ok(Status::Partial) };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ProxyError::BadV1("line end (LF without CR)"));
    }
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..lf - 1]).map_err(|_| ProxyError::BadV1("bytes"))?;
    let len = lf + 1;
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The spec: the receiver must ignore anything after UNKNOWN and use the real endpoints.
        return Ok(Status::Complete(ProxyHeader { version: 1, source: None, destination: None, len }));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError::BadV1("protocol (TCP4, TCP6 or UNKNOWN)")),
    };
    let mut next = |what| parts.next().filter(|p| !p.is_empty()).ok_or(ProxyError::BadV1(what));
    let src = v1_ip(next("source address")?, v6).ok_or(ProxyError::BadV1("source address"))?;
    let dst = v1_ip(next("destination address")?, v6).ok_or(ProxyError::BadV1("destination address"))?;
    let src_port = v1_port(next("source port")?).ok_or(ProxyError::BadV1("source port"))?;
    let dst_port = v1_port(next("destination port")?).ok_or(ProxyError::BadV1("destination port"))?;
    if parts.next().is_some() {
        return Err(ProxyError::BadV1("trailing field"));
    }
    Ok(Status::Complete(ProxyHeader {
        version: 1,
        source: Some(SocketAddr::new(src, src_port)),
        destination: Some(SocketAddr::new(dst, dst_port)),
        len,
    }))
}

fn v1_ip(text: &str, v6: bool) -> Option<IpAddr> {
    if v6 {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// A port: decimal digits only (no sign), 0 to 65535, no leading zero but for "0" itself.
fn v1_port(text: &str) -> Option<u16> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.len() > 5 || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(data: &[u8], max_len: usize) -> Result<Status<ProxyHeader>, ProxyError> {
    if data.len() < V2_FIXED {
        return Ok(Status::Partial);
    }
    let (version, command) = (data[12] >> 4, data[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::BadVersion(version));
    }
    if command > 1 {
        return Err(ProxyError::BadCommand(command));
    }
    let family = data[13];
    let len = V2_FIXED + usize::from(u16::from_be_bytes([data[14], data[15]]));
    if len > max_len {
        return Err(ProxyError::TooLong(len));
    }
    // Address block sizes: IPv4 4+4+2+2, IPv6 16+16+2+2, UNIX 108+108.
    let needed = match family {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        other => return Err(ProxyError::BadFamily(other)),
    };
    if len - V2_FIXED < needed {
        return Err(ProxyError::ShortAddresses);
    }
    if data.len() < len {
        return Ok(Status::Partial);
    }
    let block = &data[V2_FIXED..len];
    // LOCAL: the proxy's own connection (a health check); the real endpoints stand. Datagram and
    // UNIX sources are no TCP client, so they stand too. TLVs after the addresses are skipped.
    let addresses = match (command, family) {
        (1, 0x11) => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]));
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10))))
        }
        (1, 0x21) => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34))))
        }
        _ => None,
    };
    Ok(Status::Complete(ProxyHeader {
        version: 2,
        source: addresses.map(|a| a.0),
        destination: addresses.map(|a| a.1),
        len,
    }))
}

/// The client of a request that reached us through `hop` (the connection's peer, or the source
/// a PROXY header gave), given the request's `X-Forwarded-For` values in header order. The
/// addresses are walked from the right (the one `hop` appended last): the first that `trusted`
/// refuses is the client; when every one is trusted, the leftmost is. `hop` itself when it is
/// not trusted (the header is then ignored: anyone can write it), when there is no entry, or
/// when an entry is reached that is no address (`unknown`, garbage): a proxy we trust sent
/// something we cannot use, and its own address is the one we know to be true. An entry may
/// carry a port (`1.2.3.4:5`, `[::1]:5`); without one the port is 0.
pub fn forwarded_client<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    hop: SocketAddr,
    trusted: impl Fn(IpAddr) -> bool,
) -> SocketAddr {
    if !trusted(hop.ip()) {
        return hop;
    }
    let mut entries: Vec<&[u8]> = Vec::new();
    for value in values {
        entries.extend(value.split(|&b| b == b','));
    }
    let mut client = hop;
    for entry in entries.iter().rev() {
        let Some(addr) = std::str::from_utf8(entry).ok().and_then(|e| forwarded_addr(e.trim())) else {
            return hop;
        };
        client = addr;
        if !trusted(addr.ip()) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an IP address, with or without a port.
fn forwarded_addr(entry: &str) -> Option<SocketAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr);
    }
    // `[v6]` without a port.
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(|ip| SocketAddr::new(IpAddr::V6(ip), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn complete(data: &[u8]) -> ProxyHeader {
        match parse_proxy_header(data, MAX) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(data)),
        }
    }

    #[test]
    fn v1_lines_from_the_spec_and_their_addresses() {
        let cases: &[(&str, Option<&str>)] = &[
            ("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", Some("192.168.0.1:56324")),
            ("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", Some("255.255.255.255:65535")),
            (
                "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
                Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            ),
            ("PROXY TCP6 2001:db8::1 ::1 0 80\r\n", Some("[2001:db8::1]:0")),
            ("PROXY UNKNOWN\r\n", None),
            ("PROXY UNKNOWN whatever follows is ignored\r\n", None),
        ];
        for (line, source) in cases {
            let mut data = line.as_bytes().to_vec();
            data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let header = complete(&data);
            assert_eq!(header.version, 1);
            assert_eq!(header.len, line.len(), "{line}");
            assert_eq!(header.source, source.map(|s| s.parse().unwrap()), "{line}");
        }
    }

    #[test]
    fn the_longest_v1_line_is_107_bytes_and_one_more_is_refused() {
        let v6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest = format!("PROXY UNKNOWN {v6} {v6} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX_LEN);
        assert_eq!(complete(longest.as_bytes()).len, 107);
        let over = format!("PROXY UNKNOWN {v6} {v6} 65535 655350\r\n");
        assert_eq!(parse_proxy_header(over.as_bytes(), MAX), Err(ProxyError::V1TooLong));
        // Without the CRLF yet, 106 bytes are still a valid beginning.
        assert_eq!(parse_proxy_header(&longest.as_bytes()[..105], MAX), Ok(Status::Partial));
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_partial() {
        let block = [10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb];
        let headers = [b"PROXY TCP4 1.2.3.4 5.6.7.8 1000 80\r\n".to_vec(), v2(1, 0x11, &block)];
        for header in headers {
            for n in 0..header.len() {
                assert_eq!(parse_proxy_header(&header[..n], MAX), Ok(Status::Partial), "{n} bytes");
            }
            assert_eq!(complete(&header).len, header.len());
        }
    }

    #[test]
    fn bad_v1_lines_name_what_is_wrong() {
        let cases: &[(&[u8], ProxyError)] = &[
            (b"GET / HTTP/1.1\r\n", ProxyError::BadSignature),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ProxyError::BadSignature),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", ProxyError::BadV1("protocol (TCP4, TCP6 or UNKNOWN)")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", ProxyError::BadV1("line end (LF without CR)")),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", ProxyError::BadV1("source address")),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", ProxyError::BadV1("source address")),
            (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", ProxyError::BadV1("destination address")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", ProxyError::BadV1("source port")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", ProxyError::BadV1("source port")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", ProxyError::BadV1("source port")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", ProxyError::BadV1("destination port")),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", ProxyError::BadV1("destination address")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", ProxyError::BadV1("trailing field")),
        ];
        for (data, error) in cases {
            assert_eq!(parse_proxy_header(data, MAX), Err(*error), "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn v2_families_commands_and_tlvs() {
        let v4 = [192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb];
        let header = complete(&v2(1, 0x11, &v4));
        assert_eq!(header.source, Some("192.168.0.1:56324".parse().unwrap()));
        assert_eq!(header.destination, Some("192.168.0.11:443".parse().unwrap()));
        assert_eq!((header.version, header.len), (2, 28));

        let mut v6 = [0u8; 36];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 1; // 2001::1
        v6[31] = 1; // ::1
        v6[32..34].copy_from_slice(&4242u16.to_be_bytes());
        v6[34..36].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(complete(&v2(1, 0x21, &v6)).source, Some("[2001::1]:4242".parse().unwrap()));

        // TLVs after the addresses (here a PP2_TYPE_AUTHORITY) are skipped; the next bytes are
        // the application's.
        let mut with_tlv = v4.to_vec();
        with_tlv.extend_from_slice(&[0x02, 0x00, 0x04]);
        with_tlv.extend_from_slice(b"host");
        let mut data = v2(1, 0x11, &with_tlv);
        let len = data.len();
        data.extend_from_slice(b"GET /");
        let header = complete(&data);
        assert_eq!((header.len, header.source.unwrap().port()), (len, 56324));

        // LOCAL: the real endpoints stand, whatever the block holds.
        assert_eq!(complete(&v2(0, 0x11, &v4)).source, None);
        assert_eq!(complete(&v2(0, 0x00, &[])).source, None);
        // UNSPEC, UDP and UNIX sources: accepted, with the real endpoints.
        assert_eq!(complete(&v2(1, 0x00, &[1, 2, 3])).source, None);
        assert_eq!(complete(&v2(1, 0x12, &v4)).source, None);
        assert_eq!(complete(&v2(1, 0x31, &[0; 216])).source, None);
    }

    #[test]
    fn bad_v2_headers_name_what_is_wrong() {
        let v4 = [1u8; 12];
        let mut bad_version = v2(1, 0x11, &v4);
        bad_version[12] = 0x11;
        let mut bad_signature = v2(1, 0x11, &v4);
        bad_signature[4] = b'x';
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            (bad_version, ProxyError::BadVersion(1)),
            (bad_signature, ProxyError::BadSignature),
            (v2(2, 0x11, &v4), ProxyError::BadCommand(2)),
            (v2(1, 0x13, &v4), ProxyError::BadFamily(0x13)),
            (v2(1, 0x41, &v4), ProxyError::BadFamily(0x41)),
            (v2(1, 0x11, &v4[..11]), ProxyError::ShortAddresses),
            (v2(1, 0x21, &v4), ProxyError::ShortAddresses),
            (v2(1, 0x11, &[0; 5000]), ProxyError::TooLong(5016)),
        ];
        for (data, error) in cases {
            assert_eq!(parse_proxy_header(&data, MAX), Err(error));
        }
        // Too long is known from the fixed part, before the rest is buffered.
        assert_eq!(parse_proxy_header(&v2(1, 0x11, &[0; 5000])[..16], MAX), Err(ProxyError::TooLong(5016)));
    }

    #[test]
    fn forwarded_for_walks_from_the_right_past_trusted_hops() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.") || ip.is_loopback();
        let proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let outsider: SocketAddr = "198.51.100.7:6000".parse().unwrap();
        let cases: &[(SocketAddr, &[&str], &str)] = &[
            (proxy, &["203.0.113.9"], "203.0.113.9:0"),
            (proxy, &["1.1.1.1, 203.0.113.9, 10.0.0.2"], "203.0.113.9:0"),
            (proxy, &["1.1.1.1", "203.0.113.9,10.0.0.2"], "203.0.113.9:0"),
            (proxy, &["203.0.113.9:4711"], "203.0.113.9:4711"),
            (proxy, &["[2001:db8::7]:4711"], "[2001:db8::7]:4711"),
            (proxy, &["2001:db8::7"], "[2001:db8::7]:0"),
            (proxy, &["[2001:db8::7]"], "[2001:db8::7]:0"),
            (proxy, &["10.0.0.3, 10.0.0.2"], "10.0.0.3:0"),
            (proxy, &[], "10.0.0.1:5000"),
            (proxy, &["unknown"], "10.0.0.1:5000"),
            (proxy, &["1.1.1.1, garbage, 10.0.0.2"], "10.0.0.1:5000"),
            (proxy, &["1.1.1.1,,10.0.0.2"], "10.0.0.1:5000"),
            (outsider, &["203.0.113.9"], "198.51.100.7:6000"),
        ];
        for (hop, values, client) in cases {
            let got = forwarded_client(values.iter().map(|v| v.as_bytes()), *hop, trusted);
            assert_eq!(got, client.parse::<SocketAddr>().unwrap(), "{hop} {values:?}");
        }
    }
}
