//! Connection ids and their mapping to mio tokens.
//!
//! Owns: `ConnId` (worker + slab slot + generation) and the reserved tokens. Invariants: a token
//! names a connection only while the slot holds the same generation, so an event or command for
//! a connection that closed, and whose slot was reused, is recognised as stale and dropped; a
//! `ConnId` names its worker, so a command for it from any worker reaches the right one.

use std::fmt;

use mio::Token;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("fanout packs slot and generation into a 64-bit mio::Token");

/// The listening socket.
pub(crate) const LISTENER: Token = Token(usize::MAX);
/// The worker's waker (shutdown and, later, cross-worker messages).
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// The second listening socket, serving TLS beside a plain `listen` (`Config::tls_listen`).
/// Its generation half (all ones) is above `ConnId::MAX_GENERATION`, so no connection has it.
pub(crate) const TLS_LISTENER: Token = Token(usize::MAX - 2);
/// The coalescing window's timer (`window_timer.rs`); above every connection's token like the others.
pub(crate) const WINDOW_TIMER: Token = Token(usize::MAX - 3);

/// Identifies one connection for its whole life; never reused for another connection (until the
/// 32-bit generation wraps). Valid on any worker: sends and closes for a connection of another
/// worker are routed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) worker: u16,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// Generations stop short of `u32::MAX` so no connection token equals a reserved one.
    pub(crate) const MAX_GENERATION: u32 = u32::MAX - 1;

    pub(crate) fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.slot as usize)
    }

    pub(crate) fn from_token(token: Token, worker: u16) -> ConnId {
        ConnId { worker, slot: token.0 as u32, generation: (token.0 >> 32) as u32 }
    }

    /// The index of the worker that owns the connection.
    pub fn worker(self) -> usize {
        usize::from(self.worker)
    }

    /// The id as two numbers, for wire formats that name a connection (Pusher's `socket_id` is
    /// "A.B"): (worker and slot, generation). `from_parts` turns them back into the id.
    pub fn to_parts(self) -> (u64, u32) {
        ((u64::from(self.worker) << 32) | u64::from(self.slot), self.generation)
    }

    /// The id `to_parts` gave these numbers for. Numbers that name no connection give an id
    /// that matches none: commands for it are dropped.
    pub fn from_parts(high: u64, low: u32) -> ConnId {
        ConnId { worker: (high >> 32) as u16, slot: high as u32, generation: low }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.worker, self.slot, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_reserved_tokens_are_unreachable() {
        let id = ConnId { worker: 2, slot: 7, generation: 3 };
        assert_eq!(ConnId::from_token(id.token(), 2), id);
        let last = ConnId { worker: 0, slot: u32::MAX, generation: ConnId::MAX_GENERATION };
        for reserved in [LISTENER, WAKER, TLS_LISTENER, WINDOW_TIMER] {
            assert!(last.token().0 < reserved.0, "{reserved:?}");
        }
    }

    #[test]
    fn parts_round_trip() {
        let id = ConnId { worker: 63, slot: u32::MAX - 5, generation: 77 };
        let (high, low) = id.to_parts();
        assert_eq!(ConnId::from_parts(high, low), id);
        assert_eq!(id.worker(), 63);
        assert_eq!(format!("{high}.{low}"), "274877906938.77");
    }
}
