//! The native client protocol, `fanout.v1`: JSON ops over text frames (README.md, "Client protocol") and the
//! JWT tokens that say which channels a client may use.
//!
//! Owns: `protocol` (parsing client ops, building replies) and `auth` (tokens, permissions).
//! Must not: touch channels, history or connections; the application (`crate::app`) applies
//! what these modules decide. Neither module imports any other module of this crate.

pub mod auth;
pub mod protocol;

/// The subprotocol the native protocol is selected by when a client offers it (browsers that
/// send a `bearer.<token>` entry must also offer this one, since they require the server to
/// pick one).
pub const SUBPROTOCOL: &str = "fanout.v1";
