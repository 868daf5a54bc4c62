//! The contract between the Switchyard operator and edge.
//!
//! - [`resource`]: the `PhoneNumber` custom resource, defined once for both.
//! - [`validate`]: the checks a schema cannot do (and those it does, for standalone use).
//! - [`route`] and [`table`]: a route, and the lookup rules every backend shares.
//! - [`store`]: the read and write traits; [`memory`] and [`redis_table`] implement them.
//! - [`manifests`]: PhoneNumber YAML files, for the edge's standalone mode.
//! - [`crd`]: the CustomResourceDefinition generated from the Rust type.

pub mod crd;
pub mod manifests;
pub mod memory;
pub mod redis_table;
pub mod resource;
pub mod route;
pub mod store;
pub mod table;
pub mod validate;

pub use memory::MemoryRoutes;
pub use redis_table::{CacheOptions, CachedRoutes, RedisRoutes, TableVersion};
pub use resource::{HttpMethod, PhoneNumber, PhoneNumberSpec, PhoneNumberStatus};
pub use route::{AppUrl, Owner, Route, RouteKey};
pub use store::{RouteLookup, RouteWriter, StoreError};
pub use table::RouteTable;
