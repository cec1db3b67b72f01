//! The answer of every parser in proto that may be handed an incomplete input.
//!
//! Owns: `Status`. A leaf: it uses nothing, so every parser can use it without an import circle.

/// A parser's answer when its input may be incomplete, in the spirit of httparse's `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole value was parsed.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
}
