//! Harness for Switchyard's workspace-level end-to-end tests: real processes, spawned and
//! owned by each test.

pub mod redis_server;

pub use redis_server::{RedisServer, free_port};
