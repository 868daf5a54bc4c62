//! The contract between the Switchyard operator and edge.
//!
//! - [`resource`]: the `PhoneNumber` custom resource, defined once for both.
//! - [`validate`]: the checks a schema cannot do (and those it does, for standalone use).
//! - [`route`] and [`table`]: a route, and the lookup rules every backend shares.
//! - [`store`]: the read and write traits; [`memory`] and [`redis_table`] implement them.
//! - [`redis_target`] and [`redis_connection`]: one server, Redis Cluster or Sentinel, as
//!   `--redis-url` names them, behind one connection type (both binaries use them).
//! - [`manifests`]: PhoneNumber YAML files, for the edge's standalone mode.
//! - [`crd`]: the CustomResourceDefinition generated from the Rust type.

pub mod crd;
pub mod manifests;
pub mod memory;
pub mod redis_connection;
pub mod redis_table;
pub mod redis_target;
pub mod resource;
pub mod route;
pub mod store;
pub mod table;
pub mod validate;

pub use memory::MemoryRoutes;
pub use redis_connection::{ConnectionOptions, RedisConnection};
pub use redis_table::{CacheOptions, CachedRoutes, RedisRoutes, TableVersion};
pub use redis_target::{RedisAuth, RedisTarget, RedisUrlError};
pub use resource::{HttpMethod, PhoneNumber, PhoneNumberSpec, PhoneNumberStatus};
pub use route::{AppUrl, Owner, Route, RouteKey};
pub use store::{RouteLookup, RouteWriter, StoreError};
pub use table::RouteTable;
