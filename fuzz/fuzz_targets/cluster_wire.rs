//! Fuzz target: what a node reads from a channel's Redis Pub/Sub channel in a cluster
//! (`fanout_gateway::cluster::wire::parse`): stored events (`seq epoch at_ms {json}`) and
//! control frames (`! {json}`), as another node, or anything else able to publish there, wrote them.
//!
//! Input: the message's text (not UTF-8: skipped, since the engine drops such a message first).
//! Invariants checked, beyond "no panic, no hang":
//! - an event's body encodes back to JSON that parses to the same body (channel, event, data byte
//!   for byte, origin, user, socket left out), and a control frame likewise;
//! - an event's epoch is non-empty.
#![no_main]

use fanout_gateway::cluster::wire::{parse, Received};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text) {
        None => {}
        Some(Received::Event(stored)) => {
            assert!(!stored.epoch.is_empty());
            let encoded = format!("{} {} {} {}", stored.seq, stored.epoch, stored.at_ms, stored.body.encode());
            let Some(Received::Event(again)) = parse(&encoded) else { panic!("does not read back: {encoded}") };
            let (a, b) = (&stored.body, &again.body);
            assert_eq!((stored.seq, stored.epoch, stored.at_ms), (again.seq, again.epoch, again.at_ms));
            assert_eq!(
                (&a.channel, &a.event, a.data.get(), a.origin()),
                (&b.channel, &b.event, b.data.get(), b.origin())
            );
            assert_eq!((&a.user_id, &a.except), (&b.user_id, &b.except));
        }
        Some(Received::Control(control)) => {
            let encoded = control.encode();
            let Some(Received::Control(again)) = parse(&encoded) else { panic!("does not read back: {encoded}") };
            assert_eq!((&control.frame, &control.except), (&again.frame, &again.except));
        }
    }
});
