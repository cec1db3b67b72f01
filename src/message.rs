//! `Message`: a complete WebSocket message, text or binary, as callbacks receive it and as
//! `Ctx` and `Remote` send it.
//!
//! Owns: `Message`. A leaf: it uses no other module of the crate, so `server.rs` and
//! `remote.rs` both use it without importing each other back.

use bytes::Bytes;

/// A complete message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text, already validated as UTF-8.
    Text(Bytes),
    /// Binary data.
    Binary(Bytes),
}

impl Message {
    /// True for a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            // Validated on receipt; checking again keeps this crate free of `unsafe` here.
            Message::Text(b) => std::str::from_utf8(b).ok(),
            Message::Binary(_) => None,
        }
    }

    /// The payload, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(b) | Message::Binary(b) => b,
        }
    }

    /// The payload, without copying.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Message::Text(b) | Message::Binary(b) => b,
        }
    }
}
