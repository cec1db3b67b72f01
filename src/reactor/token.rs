//! Connection ids and their mapping to mio tokens.
//!
//! Owns: `ConnId` (slab slot + generation) and the reserved tokens. Invariant: a token names a
//! connection only while the slot holds the same generation, so an event or command for a
//! connection that closed, and whose slot was reused, is recognised as stale and dropped.

use std::fmt;

use mio::Token;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("fanout packs slot and generation into a 64-bit mio::Token");

/// The listening socket.
pub(crate) const LISTENER: Token = Token(usize::MAX);
/// The worker's waker (shutdown and, later, cross-worker messages).
pub(crate) const WAKER: Token = Token(usize::MAX - 1);

/// Identifies one connection for its whole life; never reused for another connection (until the
/// 32-bit generation wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// Generations stop short of `u32::MAX` so no connection token equals a reserved one.
    pub(crate) const MAX_GENERATION: u32 = u32::MAX - 1;

    pub(crate) fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.slot as usize)
    }

    pub(crate) fn from_token(token: Token) -> ConnId {
        ConnId { slot: token.0 as u32, generation: (token.0 >> 32) as u32 }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_reserved_tokens_are_unreachable() {
        let id = ConnId { slot: 7, generation: 3 };
        assert_eq!(ConnId::from_token(id.token()), id);
        let last = ConnId { slot: u32::MAX, generation: ConnId::MAX_GENERATION };
        assert_ne!(last.token(), LISTENER);
        assert_ne!(last.token(), WAKER);
        assert!(last.token().0 < WAKER.0);
    }
}
