//! The SIP stack under every call, in layers (RFC 3261):
//!
//! - [`transport`]: UDP and TCP sockets, TCP framing, limits;
//! - [`message`]: bytes to rsip messages (normalised), header accessors, responses;
//! - [`transaction`]: the four transaction state machines and their timers;
//! - [`dialog`]: dialogs as plain serialisable values (kept in shared storage);
//! - [`endpoint`]: the core that checks, matches and dispatches each message.
//!
//! It is written here rather than taken from a crate because dialogs and calls must live
//! in shared storage so any edge process can carry on any call; see
//! `docs/architecture.md`.

pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod transaction;
pub mod transport;

use rand::Rng;

/// A random token for tags, branches and Call-IDs (alphanumeric).
pub fn random_token(length: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}
