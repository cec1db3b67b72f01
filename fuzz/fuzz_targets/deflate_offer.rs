//! Fuzz target: the permessage-deflate offers of an upgrade's `Sec-WebSocket-Extensions`
//! headers (`fanout::proto::deflate::negotiate`, RFC 7692 §7).
//!
//! Input: the header values, one per line.
//! Invariants checked, beyond "no panic, no hang":
//! - an accepted offer's window bits are within 8 to 15;
//! - the response the server sends, read back as an offer, is accepted as the same agreement;
//! - the server compresses only when the client's window allows its 15 bits;
//! - a header before them that does not parse or is declined changes nothing.
#![no_main]

use fanout::proto::deflate::{negotiate, WINDOW_BITS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let values: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let Some(agreement) = negotiate(values.iter().copied()) else { return };
    for bits in [agreement.server_max_window_bits, agreement.client_max_window_bits].into_iter().flatten() {
        assert!((8..=15).contains(&bits), "window bits {bits}");
    }
    let response = agreement.response();
    assert_eq!(negotiate([response.as_bytes()]), Some(agreement), "the response does not read back: {response}");
    let window_ok = agreement.server_max_window_bits.is_none_or(|b| b >= WINDOW_BITS);
    assert_eq!(agreement.server_compresses(), window_ok);
    let declined: [&[u8]; 2] = [b"x-unknown; a=\"", b"permessage-deflate; mystery"];
    assert_eq!(negotiate(declined.into_iter().chain(values.iter().copied())), Some(agreement));
});
