//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Every line about a resource carries it: reconcile runs inside a span with a
//! `resource = namespace/name` field, which the formatter prints on each event.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
