//! What the cluster's nodes write to Redis and read back: the names of the keys and Pub/Sub
//! channels, and the one text format of a published event, the same in a channel's history list
//! and on its Pub/Sub channel.
//!
//! Owns: `Names` and `Stored` / `Body` / `Control`. Pure data, no I/O. Invariants: a stored
//! event is `"{seq} {epoch} {unix ms} {body JSON}"`, written by the publish script (which alone
//! knows the seq and epoch) around the body the publishing node encoded; a control frame (a
//! presence change, which takes no seq) is `"! {control JSON}"`; anything else is refused as
//! malformed, never trusted. The body's `data` is carried as raw JSON, never re-serialised.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::space::Origin;

/// The Redis names of one cluster (`--redis-prefix`).
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names { prefix: prefix.to_owned() }
    }

    /// The Pub/Sub channel of channel key `key`.
    pub fn channel(&self, key: &str) -> String {
        format!("{}:ch:{key}", self.prefix)
    }

    /// The channel key of a Pub/Sub channel name (None: not one of this cluster's).
    pub fn key_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)?.strip_prefix(":ch:")
    }

    /// The hash of a channel's `seq` and `epoch`.
    pub fn meta(&self, key: &str) -> String {
        format!("{}:meta:{key}", self.prefix)
    }

    /// The list of a channel's recent events, oldest first.
    pub fn history(&self, key: &str) -> String {
        format!("{}:hist:{key}", self.prefix)
    }

    /// The ingest lease (`--redis-ingest`): the node id of its holder.
    pub fn lease(&self) -> String {
        format!("{}:ingest-lease", self.prefix)
    }

    /// The sorted set of live nodes, scored by their last heartbeat (unix ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A channel's Pusher subscriptions per node (hash: node -> count).
    pub fn subscriptions(&self, key: &str) -> String {
        format!("{}:subs:{key}", self.prefix)
    }

    /// A presence channel's members (hash: user id -> connections over the cluster).
    pub fn members(&self, key: &str) -> String {
        format!("{}:members:{key}", self.prefix)
    }

    /// A presence channel's members' `user_info` (hash: user id -> JSON).
    pub fn member_info(&self, key: &str) -> String {
        format!("{}:info:{key}", self.prefix)
    }

    /// What node `node` holds (hash: `s|key` -> Pusher subscriptions, `m|key|user` -> presence
    /// connections), so that the survivors can undo it when the node dies.
    pub fn held(&self, node: &str) -> String {
        format!("{}:held:{node}", self.prefix)
    }

    /// The prefix every name of this cluster starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// One publish as the publishing node encodes it (the seq and epoch are added in Redis).
#[derive(Debug, Serialize, Deserialize)]
pub struct Body<'a> {
    /// The channel's name as its subscribers see it (the key may differ: another app's).
    #[serde(rename = "c", borrow)]
    pub channel: Cow<'a, str>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none", borrow)]
    pub event: Option<Cow<'a, str>>,
    #[serde(rename = "d", borrow)]
    pub data: &'a RawValue,
    /// `p` for a Pusher-origin publish, absent for native.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub pusher: Option<u8>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none", borrow)]
    pub user_id: Option<Cow<'a, str>>,
    /// The Pusher `socket_id` that must not receive it.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none", borrow)]
    pub except: Option<Cow<'a, str>>,
}

impl Body<'_> {
    pub fn origin(&self) -> Origin {
        if self.pusher.is_some() {
            Origin::Pusher
        } else {
            Origin::Native
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a body serialises")
    }
}

/// A presence frame for a channel's Pusher subscribers on every node, without a seq.
#[derive(Debug, Serialize, Deserialize)]
pub struct Control<'a> {
    /// The Pusher frame, as sent.
    #[serde(rename = "f", borrow)]
    pub frame: Cow<'a, str>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none", borrow)]
    pub except: Option<Cow<'a, str>>,
}

impl Control<'_> {
    /// `"! {json}"`, what goes on the Pub/Sub channel.
    pub fn encode(&self) -> String {
        format!("! {}", serde_json::to_string(self).expect("a control frame serialises"))
    }
}

/// An event as Redis holds it.
#[derive(Debug)]
pub struct Stored<'a> {
    pub seq: u64,
    pub epoch: &'a str,
    /// When the publish script ran (unix ms), for the history's age limit.
    pub at_ms: u64,
    pub body: Body<'a>,
}

/// What arrives on a channel's Pub/Sub channel.
#[derive(Debug)]
pub enum Received<'a> {
    Event(Stored<'a>),
    Control(Control<'a>),
}

/// Parses a stored event or a control frame; None for anything else.
pub fn parse(text: &str) -> Option<Received<'_>> {
    if let Some(json) = text.strip_prefix("! ") {
        return serde_json::from_str(json).ok().map(Received::Control);
    }
    let mut parts = text.splitn(4, ' ');
    let seq = parts.next()?.parse().ok()?;
    let epoch = parts.next().filter(|e| !e.is_empty())?;
    let at_ms = parts.next()?.parse().ok()?;
    let body = serde_json::from_str(parts.next()?).ok()?;
    Some(Received::Event(Stored { seq, epoch, at_ms, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = Names::new("fanout");
        assert_eq!(n.channel("news"), "fanout:ch:news");
        assert_eq!(n.key_of("fanout:ch:#2:news"), Some("#2:news"));
        assert_eq!(n.key_of("other:ch:news"), None);
        assert_eq!(n.key_of("fanout:meta:news"), None);
    }

    #[test]
    fn stored_events_and_control_frames_parse() {
        let data = RawValue::from_string(r#"{"a":[1, 2]}"#.into()).unwrap();
        let body = Body {
            channel: "news".into(),
            event: Some(r"App\E".into()),
            data: &data,
            pusher: None,
            user_id: None,
            except: None,
        };
        let text = format!("7 ep1 1700000000000 {}", body.encode());
        let Some(Received::Event(e)) = parse(&text) else { panic!("{text}") };
        assert_eq!((e.seq, e.epoch, e.at_ms, &*e.body.channel), (7, "ep1", 1_700_000_000_000, "news"));
        assert_eq!(e.body.event.as_deref(), Some(r"App\E"), "escaped names come back");
        assert_eq!(e.body.data.get(), r#"{"a":[1, 2]}"#, "data kept byte for byte");
        assert_eq!(e.body.origin(), Origin::Native);
        let control = Control { frame: r#"{"event":"x"}"#.into(), except: Some("1.2".into()) }.encode();
        let Some(Received::Control(c)) = parse(&control) else { panic!("{control}") };
        assert_eq!((&*c.frame, c.except.as_deref()), (r#"{"event":"x"}"#, Some("1.2")));
        for bad in ["", "x ep 1 {}", "1  1 {}", "1 ep x {}", "1 ep 1 nope", "! nope", "1 ep 1"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
