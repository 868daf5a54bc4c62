//! RCML: the documents that tell the edge what to do with a call.
//!
//! - [`document`]: the model and the parser;
//! - [`fetch`]: getting documents over HTTP(S) or from `file:` URLs;
//! - [`params`]: the request parameters Restcomm sends with each fetch.
//!
//! What is supported, and how errors are handled, is in `docs/rcml.md`.

pub mod document;
pub mod fetch;
pub mod params;

pub use document::{Dial, DialTarget, Document, RcmlError, RejectReason, Verb, parse};
pub use fetch::{FetchError, Fetched, Fetcher, Purpose, resolve};
pub use params::Params;
