//! Close status codes (RFC 6455 §7.4): the `CloseCode` type and which codes may cross the wire.
//!
//! Owns: `CloseCode`. A leaf, so that both the close-frame codec and `ProtocolError` (which names
//! the code each violation closes with) can use it without depending on each other.

/// A close status code (RFC 6455 §7.4): what a close frame carries and what `on_close` reports.
///
/// Any `u16` can be held; [`CloseCode::is_sendable`] says whether it may cross the wire. The
/// named codes are the ones §7.4.1 defines; applications use 4000-4999 for their own (the
/// Pusher protocol's 4001-4301, for example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, idle timeout).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a kind of data the endpoint cannot accept (a binary frame where text is expected).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reported, never sent, when a close frame carried no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: reported, never sent, when the connection ended without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data did not match its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy (used for slow consumers).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame or message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);

    /// The code with this number.
    pub const fn new(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// The number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether a peer may put this code in a close frame: the ones RFC 6455 defines for use on
    /// the wire (1000-1003, 1007-1011) and the ranges for libraries and applications (3000-4999).
    pub const fn is_sendable(self) -> bool {
        is_valid_wire_code(self.0)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl PartialEq<u16> for CloseCode {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Codes a peer may put in a close frame: the ones RFC 6455 defines for use on the wire
/// (1000-1003, 1007-1011) and the ranges for libraries and applications (3000-4999).
pub(super) const fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}
