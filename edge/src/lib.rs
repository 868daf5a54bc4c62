//! `switchyard-edge`: the stateless SIP edge of Switchyard.
//!
//! - [`sip`]: the SIP stack (transport, messages, transactions, dialogs, core);
//! - [`app`]: what the edge does with each request;
//! - [`rcml`]: RCML documents: parsing and fetching them;
//! - [`store`]: call state, shared by all pods through Redis;
//! - [`auth`], [`ratelimit`], [`cidr`]: digest authentication and rate limits;
//! - [`config`], [`http`], [`metrics`], [`telemetry`], [`allocator`]: running it.

pub mod allocator;
pub mod app;
pub mod auth;
pub mod call;
pub mod cidr;
pub mod config;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod rcml;
pub mod sip;
pub mod store;
pub mod telemetry;
