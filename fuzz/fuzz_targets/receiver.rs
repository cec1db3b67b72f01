//! Fuzz target: the frame receiver and message assembly (`fanout::proto::Receiver`), with and
//! without permessage-deflate, fed in random splits.
//!
//! Structure-aware: masked payloads are XOR-scrambled on the wire, so plain bytes would almost
//! never carry valid UTF-8 or a valid DEFLATE stream past the mask. The input describes frames
//! in the clear and the target encodes them as a client would (masks them, compresses those
//! marked so); a frame may also end the list with raw bytes appended as they are, so header
//! decoding sees arbitrary bytes too.
//!
//! Input: `[cfg][max_message: u16][max_frame: u16][step]` then frames, each
//! `[b0][flags][len: u16]` and `len` payload bytes. `cfg` bit 0: permessage-deflate negotiated
//! (RSV1 allowed, an inflater passed); bit 1: receive as a client (unmasked frames expected).
//! `b0` is the frame's first byte as sent (FIN, RSV, opcode). `flags` bit 0: deflate the payload;
//! bit 1: the wrong masking for the role; bit 2: a 64-bit length even when shorter would do;
//! bit 3: append the rest of the input raw and stop.
//! Invariants checked, beyond "no panic, no hang":
//! - any split of the bytes gives the same events as one read, and fails where one read fails
//!   (the error may differ only by a split read's earlier UTF-8 failure, §8.1 fail fast);
//! - a text message is UTF-8; a message is within `max_message`; a control payload is at most
//!   125 bytes; a close reason is UTF-8 and at most 123 bytes;
//! - `Partial` leaves exactly an incomplete frame in the buffer;
//! - with nothing buffered and no message open, the receiver owns no memory.
#![no_main]

use bytes::BytesMut;
use fanout::proto::deflate::{Compressor, Inflater};
use fanout::proto::frame::{decode_header, RSV1};
use fanout::proto::{Event, FrameRules, ProtocolError, Receiver, Role, Status};
use fanout_fuzz::{chunks, Input};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    // One compressor and one inflater for the whole run, as a worker has one of each for all
    // its connections: each message starts them afresh, and a run that reuses them checks that.
    static COMPRESSOR: RefCell<Compressor> = RefCell::new(Compressor::new(6));
    static INFLATER: RefCell<Inflater> = RefCell::new(Inflater::new());
}

/// The events of one feed, and how it ended.
#[derive(Debug)]
struct Run {
    events: Vec<Event>,
    error: Option<ProtocolError>,
}

fn encode(input: &mut Input, role: Role) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut n: u8 = 0;
    while !input.is_empty() {
        let b0 = input.byte();
        let flags = input.byte();
        if flags & 8 != 0 {
            wire.extend_from_slice(input.rest());
            break;
        }
        let len = usize::from(input.u16());
        let mut payload = input.bytes(len).to_vec();
        if flags & 1 != 0 {
            if let Some(compressed) = COMPRESSOR.with_borrow_mut(|c| c.compress(&payload).map(<[u8]>::to_vec)) {
                payload = compressed;
            }
        }
        let masked = (role == Role::Server) != (flags & 2 != 0);
        let mask_bit = if masked { 0x80 } else { 0 };
        wire.push(b0);
        match payload.len() {
            l if l < 126 && flags & 4 == 0 => wire.push(mask_bit | l as u8),
            l if l <= 0xFFFF && flags & 4 == 0 => {
                wire.push(mask_bit | 126);
                wire.extend_from_slice(&(l as u16).to_be_bytes());
            }
            l => {
                wire.push(mask_bit | 127);
                wire.extend_from_slice(&(l as u64).to_be_bytes());
            }
        }
        if masked {
            n = n.wrapping_add(1);
            let key = [n, n.wrapping_mul(31), 0x5a ^ n, 0xc3];
            wire.extend_from_slice(&key);
            wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            wire.extend_from_slice(&payload);
        }
    }
    wire
}

fn check_event(event: &Event, max_message: usize) {
    match event {
        Event::Text(t) => {
            assert!(std::str::from_utf8(t).is_ok(), "a text message is not UTF-8");
            assert!(t.len() <= max_message, "a message over the limit");
        }
        Event::Binary(b) => assert!(b.len() <= max_message, "a message over the limit"),
        Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125, "a control payload over 125 bytes"),
        Event::Close(Some(close)) => {
            assert!(close.reason.len() <= 123);
            assert!(std::str::from_utf8(&close.reason).is_ok());
        }
        Event::Close(None) => {}
    }
}

fn run<'a>(pieces: impl Iterator<Item = &'a [u8]>, rules: &FrameRules, max_message: usize, deflate: bool) -> Run {
    let mut receiver = Receiver::new();
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let received = if deflate {
                INFLATER.with_borrow_mut(|i| receiver.receive(&mut buf, rules, max_message, Some(i)))
            } else {
                receiver.receive(&mut buf, rules, max_message, None)
            };
            match received {
                Ok(Status::Complete(event)) => {
                    check_event(&event, max_message);
                    events.push(event);
                }
                Ok(Status::Partial) => {
                    // What is left is one incomplete frame, or nothing.
                    if let Ok(Status::Complete(h)) = decode_header(&buf, rules.role, rules.allowed_rsv) {
                        let whole = h.header_len as u64 + h.payload_len;
                        assert!(whole > buf.len() as u64, "Partial left a whole frame in the buffer");
                    }
                    break;
                }
                Err(error) => return Run { events, error: Some(error) },
            }
        }
    }
    if buf.is_empty() && !receiver.in_message() {
        assert!(!receiver.holds_memory(), "an idle receiver holds memory");
    }
    Run { events, error: None }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = input.byte();
    let max_message = usize::from(input.u16());
    let max_frame = usize::from(input.u16());
    let step = input.byte();
    let deflate = cfg & 1 != 0;
    let role = if cfg & 2 != 0 { Role::Client } else { Role::Server };
    let rules = FrameRules { role, allowed_rsv: if deflate { RSV1 } else { 0 }, max_frame_payload: max_frame };
    let wire = encode(&mut input, role);
    assert_eq!(chunks(&wire, step).map(<[u8]>::len).sum::<usize>(), wire.len(), "the split lost bytes");

    let whole = run(std::iter::once(&wire[..]), &rules, max_message, deflate);
    let split = run(chunks(&wire, step), &rules, max_message, deflate);
    assert_eq!(whole.events, split.events, "a split feed gave other events");
    match (whole.error, split.error) {
        (None, None) => {}
        (Some(a), Some(b)) if a == b || b == ProtocolError::InvalidUtf8 => {}
        (a, b) => panic!("one read ended {a:?}, split reads ended {b:?}"),
    }
});
