//! The Switchyard operator: keeps the Redis routing table equal to the PhoneNumber
//! resources the cluster declares.
//!
//! - [`config`]: flags and environment variables.
//! - [`controller`]: the reconcile pipeline (validate, decide, apply, update status).
//! - [`ownership`]: which resource owns a number or pattern (pure, unit tested).
//! - [`inventory`]: the watch caches read as one, and reconcile triggers.
//! - [`resync`]: full sync and the fast rebuild when the table disappears.
//! - [`leader`]: leader election with a `coordination.k8s.io/v1` Lease.
//! - [`metrics`], [`http`]: Prometheus metrics and `/metrics`, `/healthz`, `/readyz`.
//! - [`telemetry`]: logging to stderr.

pub mod config;
pub mod controller;
pub mod http;
pub mod inventory;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod resync;
pub mod telemetry;

/// Removes the route of a deleted PhoneNumber before the resource goes away.
pub const FINALIZER: &str = "switchyard.dev/route-cleanup";

/// The field manager of every write (status server-side apply, finalizer patches, the
/// Lease) and the reporting controller of Events.
pub const FIELD_MANAGER: &str = "switchyard-operator";

/// Completes when `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
