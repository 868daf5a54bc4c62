//! `switchyard-edge`: the stateless SIP edge of Switchyard.
//!
//! - [`sip`]: the SIP stack (transport, messages, transactions, dialogs, core);
//! - [`app`]: what the edge does with each request;
//! - [`store`]: call state, shared by all pods through Redis;
//! - [`config`], [`http`], [`metrics`], [`telemetry`]: running it.

pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod sip;
pub mod store;
pub mod telemetry;
