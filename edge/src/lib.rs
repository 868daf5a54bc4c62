//! `switchyard-edge`: the stateless SIP edge of Switchyard.
//!
//! - [`sip`]: the SIP stack (transport, messages, transactions, dialogs, core);
//! - [`app`]: what the edge does with each request;
//! - [`rcml`]: RCML documents: parsing and fetching them;
//! - [`store`]: call state, shared by all pods through Redis;
//! - [`config`], [`http`], [`metrics`], [`telemetry`], [`allocator`]: running it.

pub mod allocator;
pub mod app;
pub mod call;
pub mod config;
pub mod http;
pub mod metrics;
pub mod rcml;
pub mod sip;
pub mod store;
pub mod telemetry;
