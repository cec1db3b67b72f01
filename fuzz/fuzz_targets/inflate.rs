//! Fuzz target: permessage-deflate's inflate (`fanout::proto::deflate::Inflater`) and its limit,
//! on arbitrary DEFLATE data and on what the server's own compressor makes.
//!
//! Input: `[mode][limit: u16]` then the data. `mode` bit 0: the data is plain text to compress
//! first (at level `mode >> 1 & 0xf`, at most 9), else it is inflated as it is; bits 5-7 scale
//! the limit (`limit << scale`, up to 8 MiB, so a bomb meets its limit).
//! Invariants checked, beyond "no panic, no hang, no allocation over the limit":
//! - what comes out is never longer than the limit; the same input inflates the same way twice
//!   (no state carried between messages), and a limit one byte short of it fails `TooLarge`;
//! - compressed data inflates back to exactly the original, and fails `TooLarge` one byte short;
//! - an inflater used after an error still inflates the next message correctly.
#![no_main]

use fanout::proto::deflate::{Compressor, InflateError, Inflater};
use fanout_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    // One inflater, and a compressor per level, for the whole run, as a worker has one for all
    // its connections: a run that reuses them checks that no state leaks between messages.
    static INFLATER: RefCell<Inflater> = RefCell::new(Inflater::new());
    static COMPRESSORS: RefCell<Vec<Compressor>> = RefCell::new((0..10).map(Compressor::new).collect());
}

/// A small known message, inflated after every other call to prove no state leaks.
const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let limit = usize::from(input.u16()) << (mode >> 5);
    let data = input.rest();
    INFLATER.with_borrow_mut(|inflater| check(inflater, mode, limit, data));
});

fn check(inflater: &mut Inflater, mode: u8, limit: usize, data: &[u8]) {
    if mode & 1 == 0 {
        let first = inflater.inflate(data, limit);
        if let Ok(out) = &first {
            assert!(out.len() <= limit, "inflated {} bytes over a limit of {limit}", out.len());
            assert_eq!(inflater.inflate(data, out.len()).as_ref(), Ok(out), "not the same at its own length");
            if !out.is_empty() {
                assert_eq!(inflater.inflate(data, out.len() - 1), Err(InflateError::TooLarge));
            }
        }
        assert_eq!(inflater.inflate(data, limit), first, "inflating twice differed");
    } else {
        let level = usize::from(mode >> 1 & 0xf).min(9);
        let compressed = COMPRESSORS
            .with_borrow_mut(|c| c[level].compress(data).map(<[u8]>::to_vec))
            .expect("compressing in memory cannot fail");
        let out = inflater.inflate(&compressed, data.len()).expect("the compressor's output inflates");
        assert_eq!(&out[..], data, "the round trip changed the data");
        if !data.is_empty() {
            assert_eq!(inflater.inflate(&compressed, data.len() - 1), Err(InflateError::TooLarge));
        }
    }
    assert_eq!(&inflater.inflate(HELLO, 5).expect("hello inflates")[..], b"Hello", "state leaked");
}
