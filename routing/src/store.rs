//! The two sides of the routing contract, each a trait with two backends.
//!
//! - [`RouteLookup`] is what the edge asks on every INVITE. It is synchronous and never
//!   touches the network: the Redis backend answers from a local snapshot that change
//!   notifications keep fresh ([`crate::redis_table::CachedRoutes`]).
//! - [`RouteWriter`] is what the operator does: write one resource's route, remove it,
//!   or replace the whole table at once.
//!
//! [`crate::memory::MemoryRoutes`] implements both, for standalone mode and tests;
//! [`crate::redis_table::RedisRoutes`] writes to Redis and `CachedRoutes` reads from it.

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;

use crate::route::{Owner, Route};
use crate::table::RouteTable;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("routing table entry {field:?} is not valid JSON: {source}")]
    Corrupt {
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The read side: finds the route for a dialled number.
pub trait RouteLookup: Send + Sync {
    /// The route for a dialled number (the Request-URI user part).
    fn lookup(&self, dialled: &str) -> Option<Arc<Route>> {
        self.snapshot().lookup(dialled)
    }

    /// The whole table as it stands now.
    fn snapshot(&self) -> Arc<RouteTable>;
}

/// The write side: keeps the table equal to what is declared. Every call is atomic:
/// a reader sees the table before it or after it, never halfway.
pub trait RouteWriter: Send + Sync {
    /// Writes `route`, owned by `route.owner`. If that owner had a route under another key
    /// (its number changed), that route is removed in the same step.
    fn upsert(&self, route: &Route) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the route `owner` holds. A key that has since been taken over by another
    /// owner is left alone. Returns whether a route was removed.
    fn remove(&self, owner: &Owner) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces the whole table with `routes` (one route per key; owners decided by the
    /// caller).
    fn replace_all(&self, routes: &[Route]) -> impl Future<Output = Result<(), StoreError>> + Send;
}
