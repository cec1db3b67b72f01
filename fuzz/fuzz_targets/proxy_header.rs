//! Fuzz target: the PROXY protocol header, versions 1 and 2, that a trusted load balancer sends
//! before a connection's first byte (`fanout::proto::parse_proxy_header`).
//!
//! Input: two bytes of `max_len` (the bound on a version 2 header, little-endian), then the
//! bytes as they arrive.
//! Invariants checked, beyond "no panic, no hang":
//! - a complete header takes at least one byte and no more than it was given, a version 1 header
//!   at most 107 bytes (the spec's bound), a version 2 header at most `max_len`, and its source
//!   and destination come together or not at all;
//! - need-more is a state, not an error: every proper prefix of a complete header, and every
//!   prefix of a partial one, is partial too, so the answer never depends on how reads split
//!   the header;
//! - the header alone, without what follows it, parses to the same header.
#![no_main]

use fanout::proto::proxy::V1_MAX_LEN;
use fanout::proto::{parse_proxy_header, Status};
use fanout_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_len = usize::from(input.u16());
    let bytes = input.bytes(usize::MAX);
    match parse_proxy_header(bytes, max_len) {
        Ok(Status::Complete(header)) => {
            assert!(header.len > 0 && header.len <= bytes.len(), "length {} of {}", header.len, bytes.len());
            match header.version {
                1 => assert!(header.len <= V1_MAX_LEN, "v1 header of {} bytes", header.len),
                2 => assert!(header.len <= max_len, "v2 header of {} bytes over {max_len}", header.len),
                v => panic!("version {v}"),
            }
            assert_eq!(header.source.is_some(), header.destination.is_some());
            for cut in 0..header.len {
                assert!(
                    matches!(parse_proxy_header(&bytes[..cut], max_len), Ok(Status::Partial)),
                    "the first {cut} bytes of a {}-byte header are not partial",
                    header.len
                );
            }
            assert_eq!(parse_proxy_header(&bytes[..header.len], max_len), Ok(Status::Complete(header)));
        }
        Ok(Status::Partial) => {
            for cut in 0..bytes.len() {
                assert!(matches!(parse_proxy_header(&bytes[..cut], max_len), Ok(Status::Partial)));
            }
        }
        Err(_) => {}
    }
});
