//! Connections to whichever Redis a [`RedisTarget`] names, behind one type.
//!
//! [`RedisConnection`] implements the redis crate's `aio::ConnectionLike`, so scripts,
//! commands and pipelines run on it unchanged whatever the deployment:
//!
//! - one server: the crate's `ConnectionManager` (multiplexed, reconnects by itself);
//! - Redis Cluster: the crate's cluster client, which routes each command (and each
//!   single-slot pipeline or script) to the master of its slot and follows `MOVED`/`ASK`
//!   and failovers. A pipeline whose commands span slots is refused with `CROSSSLOT`;
//!   the key spaces are designed so that never happens (one hash tag per transition);
//! - Sentinel: [`SentinelConnection`], written here because the crate has no
//!   self-healing Sentinel connection: it asks the sentinels for the master, keeps one
//!   multiplexed connection to it, and after a connection error or a `READONLY` answer
//!   (the old master, demoted) drops it, so the next command asks the sentinels again.
//!
//! None of them connects before its first command, so a binary starts (and reports
//! itself unready, or answers 503) while Redis is down, and recovers when Redis returns
//! without being restarted.
//!
//! Pub/sub is not multiplexed: [`RedisTarget::subscriber`] opens a dedicated connection.
//! In a cluster, a plain `PUBLISH` reaches subscribers on every node, so any seed node
//! will do; successive attempts rotate through them so one dead node is not retried
//! forever.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};
use tracing::{debug, info};

use crate::redis_target::RedisTarget;

/// Connection attempts to an unreachable cluster node before the client stops trying it
/// and looks for the node that took its slots over.
const CLUSTER_NODE_ATTEMPTS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(3).unwrap();

/// Timeouts and retries shared by every connection a binary opens.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionOptions {
    /// Connecting, and waiting for one answer; a stalled Redis turns into an error.
    pub timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            timeout: Duration::from_secs(2),
        }
    }
}

/// A connection to a single server, a cluster or a Sentinel-managed master. Cheap to
/// clone: clones share the underlying connections.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

impl RedisTarget {
    /// A connection that connects on first use and reconnects after failures.
    pub fn connect(&self, options: ConnectionOptions) -> RedisResult<RedisConnection> {
        let timeout = options.timeout;
        Ok(match self {
            RedisTarget::Single(info) => {
                let client = redis::Client::open(info.clone())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                RedisConnection::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTarget::Cluster { nodes } => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A command that meets MOVED/TRYAGAIN or a dead master is retried
                    // a few times, quickly: the callers answer 503 rather than wait.
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(250)
                    // A node that cannot be reached after a few attempts is dropped from
                    // the connection map; requests for its slots then make the client
                    // refresh the topology and find the replica that took over. Without
                    // a limit it reconnects to a dead master forever.
                    .max_connection_attempts(CLUSTER_NODE_ATTEMPTS)
                    .build()?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                RedisConnection::Cluster(client.get_pending_async_connection_with_config(config))
            }
            RedisTarget::Sentinel { .. } => {
                RedisConnection::Sentinel(SentinelConnection::new(self.sentinel_client()?, timeout))
            }
        })
    }

    fn sentinel_client(&self) -> RedisResult<SentinelClient> {
        let RedisTarget::Sentinel {
            sentinels,
            master_name,
            node,
            tls,
        } = self
        else {
            return Err((ErrorKind::InvalidClientConfig, "not a Sentinel target").into());
        };
        let mut node_info =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(node.clone());
        if *tls {
            node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
        }
        SentinelClient::build(
            sentinels.clone(),
            master_name.clone(),
            Some(node_info),
            SentinelServerType::Master,
        )
    }

    /// A dedicated pub/sub connection. `attempt` counts the caller's consecutive
    /// failures: a cluster subscriber moves on to the next seed node with each one.
    pub async fn subscriber(&self, attempt: usize) -> RedisResult<PubSub> {
        match self {
            RedisTarget::Single(info) => {
                redis::Client::open(info.clone())?.get_async_pubsub().await
            }
            RedisTarget::Cluster { nodes } => {
                let node = &nodes[attempt % nodes.len()];
                debug!(node = %node.addr(), "subscribing through a cluster node");
                redis::Client::open(node.clone())?.get_async_pubsub().await
            }
            RedisTarget::Sentinel { .. } => {
                let client = self.sentinel_client()?.async_get_client().await?;
                client.get_async_pubsub().await
            }
        }
    }
}

/// Whether an error means the connection (or the node behind it) is no good any more,
/// so a Sentinel connection should be re-resolved.
fn connection_is_broken(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// The master a set of sentinels names, followed across failovers.
#[derive(Clone)]
pub struct SentinelConnection {
    shared: Arc<SentinelShared>,
}

struct SentinelShared {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and a counter that tells connections apart, so an error on
    /// an old connection does not throw away a newer one.
    current: std::sync::Mutex<(u64, Option<MultiplexedConnection>)>,
    config: AsyncConnectionConfig,
    timeout: Duration,
}

impl SentinelConnection {
    fn new(sentinel: SentinelClient, timeout: Duration) -> Self {
        SentinelConnection {
            shared: Arc::new(SentinelShared {
                sentinel: tokio::sync::Mutex::new(sentinel),
                current: std::sync::Mutex::new((0, None)),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout)),
                timeout,
            }),
        }
    }

    fn current(&self) -> (u64, Option<MultiplexedConnection>) {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The master's connection, asking the sentinels for the master when there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let (generation, Some(connection)) = self.current() {
            return Ok((generation, connection));
        }
        // One task asks the sentinels; the others wait and take its answer.
        let mut sentinel = self.shared.sentinel.lock().await;
        if let (generation, Some(connection)) = self.current() {
            return Ok((generation, connection));
        }
        let resolve = async {
            let client = sentinel.async_get_client().await?;
            let address = client.get_connection_info().addr().to_string();
            let connection = client
                .get_multiplexed_async_connection_with_config(&self.shared.config)
                .await?;
            Ok::<_, RedisError>((address, connection))
        };
        let (address, connection) = tokio::time::timeout(self.shared.timeout * 2, resolve)
            .await
            .map_err(|_| {
                RedisError::from((ErrorKind::Io, "no master from the sentinels in time"))
            })??;
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        current.0 += 1;
        current.1 = Some(connection.clone());
        info!(master = %address, "connected to the master the sentinels name");
        Ok((current.0, connection))
    }

    /// Passes a result on, forgetting the connection it came from if it failed in a way
    /// that says the connection (or its node) is no good any more.
    fn observe<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result {
            self.forget(generation, error);
        }
        result
    }

    fn forget(&self, generation: u64, error: &RedisError) {
        if !connection_is_broken(error) {
            return;
        }
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if current.0 == generation && current.1.is_some() {
            current.1 = None;
            info!(%error, "master connection lost: asking the sentinels again on next use");
        }
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut connection) = self.connection().await?;
            let result = connection.req_packed_command(cmd).await;
            self.observe(generation, result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut connection) = self.connection().await?;
            let result = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(generation, result)
        })
    }

    fn get_db(&self) -> i64 {
        self.current().1.map(|c| c.get_db()).unwrap_or_default()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
            RedisConnection::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
            RedisConnection::Sentinel(c) => c.get_db(),
        }
    }
}
