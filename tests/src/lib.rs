//! Harness for Switchyard's workspace-level end-to-end tests: real processes, spawned and
//! owned by each test.

pub mod app_server;
pub mod baresip;
pub mod manifests;
pub mod processes;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod routes;
pub mod sipp;
pub mod ua;

pub use processes::{Edge, binary, repo_root};
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;
pub use redis_server::{RedisServer, free_port};
