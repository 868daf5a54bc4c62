//! The routing table in Redis: the format the operator writes and the edge reads.
//!
//! Key space (version 1). Every key carries the hash tag `{routes}` so the whole table
//! lives in one Redis Cluster slot and each Lua script below runs on one node:
//!
//! | key                                   | type   | content                                  |
//! |---------------------------------------|--------|------------------------------------------|
//! | `sy:v1:{routes}:entries`              | hash   | `n:<number>` / `p:<pattern>` → Route JSON |
//! | `sy:v1:{routes}:owners`               | hash   | `<namespace>/<name>` → entries field      |
//! | `sy:v1:{routes}:generation`           | string | counter, INCR on every change             |
//! | `sy:v1:{routes}:epoch`                | string | random id of the last full sync           |
//! | `sy:v1:{routes}:staging:<id>:*`       | hash   | a full sync being written (60 s TTL)      |
//!
//! Every change publishes `<epoch>:<generation>` on the channel `sy:v1:routes:changes`.
//! Readers keep a snapshot and reload it when a notification (or a periodic version
//! check, for notifications lost while disconnected) shows a version they do not have.
//!
//! Atomicity: a per-resource write is one Lua script; a full sync writes a staging copy
//! first, then one Lua script RENAMEs it over the live keys, so a reader's load (also one
//! script) sees the old table or the new one, never a mix.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use redis::Script;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::redis_connection::{ConnectionOptions, RedisConnection};
use crate::redis_target::RedisTarget;
use crate::route::{Owner, Route};
use crate::store::{RouteLookup, RouteWriter, StoreError};
use crate::table::RouteTable;

pub const ENTRIES_KEY: &str = "sy:v1:{routes}:entries";
pub const OWNERS_KEY: &str = "sy:v1:{routes}:owners";
pub const GENERATION_KEY: &str = "sy:v1:{routes}:generation";
pub const EPOCH_KEY: &str = "sy:v1:{routes}:epoch";
pub const CHANGES_CHANNEL: &str = "sy:v1:routes:changes";
const STAGING_TTL_SECONDS: i64 = 60;
/// Fields per HSET while writing a staging copy: keeps each command small.
const STAGING_BATCH: usize = 500;

/// Which table a reader holds: the full sync it descends from and the change counter.
/// `None` in Redis means the table is absent (never written, or Redis lost its data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableVersion {
    pub epoch: String,
    pub generation: u64,
}

impl std::fmt::Display for TableVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.generation)
    }
}

const UPSERT_LUA: &str = r#"
-- KEYS: entries, owners, generation, epoch   ARGV: field, owner, route json, channel
local previous = redis.call('HGET', KEYS[2], ARGV[2])
if previous and previous ~= ARGV[1] then
  local held = redis.call('HGET', KEYS[1], previous)
  if held and cjson.decode(held).owner == ARGV[2] then
    redis.call('HDEL', KEYS[1], previous)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
local generation = redis.call('INCR', KEYS[3])
local epoch = redis.call('GET', KEYS[4]) or ''
redis.call('PUBLISH', ARGV[4], epoch .. ':' .. generation)
return generation
"#;

const REMOVE_LUA: &str = r#"
-- KEYS: entries, owners, generation, epoch   ARGV: owner, channel
local field = redis.call('HGET', KEYS[2], ARGV[1])
if not field then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
local held = redis.call('HGET', KEYS[1], field)
if not held or cjson.decode(held).owner ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], field)
local generation = redis.call('INCR', KEYS[3])
local epoch = redis.call('GET', KEYS[4]) or ''
redis.call('PUBLISH', ARGV[2], epoch .. ':' .. generation)
return 1
"#;

const COMMIT_LUA: &str = r#"
-- KEYS: entries, owners, generation, epoch, staging entries, staging owners
-- ARGV: new epoch, channel
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[1])
  redis.call('PERSIST', KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('RENAME', KEYS[6], KEYS[2])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
local generation = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ':' .. generation)
return generation
"#;

const LOAD_LUA: &str = r#"
-- KEYS: entries, generation, epoch
return {redis.call('GET', KEYS[2]) or false, redis.call('GET', KEYS[3]) or '',
        redis.call('HGETALL', KEYS[1])}
"#;

const VERSION_LUA: &str = r#"
-- KEYS: generation, epoch
return {redis.call('GET', KEYS[1]) or false, redis.call('GET', KEYS[2]) or ''}
"#;

/// How long a Redis command may take before it fails: a stalled Redis must turn into an
/// error the caller can report (503 on the edge, `RedisUnavailable` on the operator), not
/// into a call that hangs.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis routing table: writes for the operator, loads for readers.
#[derive(Clone)]
pub struct RedisRoutes {
    target: RedisTarget,
    connection: RedisConnection,
}

impl RedisRoutes {
    /// Does not touch the network: connections are made on first use and remade after
    /// failures, so a process can start while Redis is down. Every key of the table
    /// shares the hash tag `{routes}`, so in a cluster the whole table, its scripts and
    /// its full sync live on the master of one slot.
    pub fn new(target: impl Into<RedisTarget>) -> Result<Self, StoreError> {
        let target = target.into();
        let connection = target.connect(ConnectionOptions {
            timeout: DEFAULT_REDIS_TIMEOUT,
        })?;
        Ok(RedisRoutes { target, connection })
    }

    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::new(redis::Client::open(url)?)
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The version of the table in Redis; `None` when it is absent (for example after
    /// Redis restarted empty), which tells the operator to rebuild it.
    pub async fn version(&self) -> Result<Option<TableVersion>, StoreError> {
        let mut con = self.connection.clone();
        let (generation, epoch): (Option<u64>, String) = Script::new(VERSION_LUA)
            .key(GENERATION_KEY)
            .key(EPOCH_KEY)
            .invoke_async(&mut con)
            .await?;
        Ok(generation.map(|generation| TableVersion { epoch, generation }))
    }

    /// Reads the whole table and its version in one atomic step.
    pub async fn load(&self) -> Result<(Option<TableVersion>, Vec<Route>), StoreError> {
        let mut con = self.connection.clone();
        let (generation, epoch, fields): (Option<u64>, String, Vec<(String, String)>) =
            Script::new(LOAD_LUA)
                .key(ENTRIES_KEY)
                .key(GENERATION_KEY)
                .key(EPOCH_KEY)
                .invoke_async(&mut con)
                .await?;
        let routes = fields
            .into_iter()
            .map(|(field, json)| {
                serde_json::from_str(&json).map_err(|source| StoreError::Corrupt { field, source })
            })
            .collect::<Result<Vec<Route>, _>>()?;
        Ok((
            generation.map(|generation| TableVersion { epoch, generation }),
            routes,
        ))
    }
}

fn route_json(route: &Route) -> String {
    // Route holds only strings, integers and enums: serialising it cannot fail.
    serde_json::to_string(route).unwrap_or_default()
}

impl RouteWriter for RedisRoutes {
    async fn upsert(&self, route: &Route) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let _: u64 = Script::new(UPSERT_LUA)
            .key(ENTRIES_KEY)
            .key(OWNERS_KEY)
            .key(GENERATION_KEY)
            .key(EPOCH_KEY)
            .arg(route.key.field())
            .arg(&route.owner.0)
            .arg(route_json(route))
            .arg(CHANGES_CHANNEL)
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    async fn remove(&self, owner: &Owner) -> Result<bool, StoreError> {
        let mut con = self.connection.clone();
        let removed: i64 = Script::new(REMOVE_LUA)
            .key(ENTRIES_KEY)
            .key(OWNERS_KEY)
            .key(GENERATION_KEY)
            .key(EPOCH_KEY)
            .arg(&owner.0)
            .arg(CHANGES_CHANNEL)
            .invoke_async(&mut con)
            .await?;
        Ok(removed == 1)
    }

    async fn replace_all(&self, routes: &[Route]) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let epoch = format!("{:016x}", rand::rng().random::<u64>());
        let staging_entries = format!("sy:v1:{{routes}}:staging:{epoch}:entries");
        let staging_owners = format!("sy:v1:{{routes}}:staging:{epoch}:owners");

        for batch in routes.chunks(STAGING_BATCH) {
            let entries: Vec<(String, String)> = batch
                .iter()
                .map(|r| (r.key.field(), route_json(r)))
                .collect();
            let owners: Vec<(&str, String)> = batch
                .iter()
                .map(|r| (r.owner.0.as_str(), r.key.field()))
                .collect();
            redis::pipe()
                .hset_multiple(&staging_entries, &entries)
                .ignore()
                .expire(&staging_entries, STAGING_TTL_SECONDS)
                .ignore()
                .hset_multiple(&staging_owners, &owners)
                .ignore()
                .expire(&staging_owners, STAGING_TTL_SECONDS)
                .ignore()
                .exec_async(&mut con)
                .await?;
        }

        let generation: u64 = Script::new(COMMIT_LUA)
            .key(ENTRIES_KEY)
            .key(OWNERS_KEY)
            .key(GENERATION_KEY)
            .key(EPOCH_KEY)
            .key(&staging_entries)
            .key(&staging_owners)
            .arg(&epoch)
            .arg(CHANGES_CHANNEL)
            .invoke_async(&mut con)
            .await?;
        info!(
            routes = routes.len(),
            %epoch, generation, "replaced the routing table"
        );
        Ok(())
    }
}

/// How a [`CachedRoutes`] keeps up with Redis.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// How often the version is checked even without a notification (catches
    /// notifications lost while the subscription was down).
    pub poll_interval: Duration,
    /// Delay before reconnecting after an error; doubled up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            poll_interval: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

struct Cached {
    table: Arc<RouteTable>,
    version: Option<TableVersion>,
}

/// The edge's view of the Redis routing table: a local snapshot, reloaded when a change
/// notification or a periodic version check shows it is stale. Lookups never wait on
/// Redis. When the table disappears from Redis (restarted empty), the last snapshot keeps
/// serving until the operator rebuilds the table: stale routes beat refusing every call.
pub struct CachedRoutes {
    cached: RwLock<Cached>,
    version_tx: watch::Sender<Option<TableVersion>>,
}

impl CachedRoutes {
    /// Starts following the table in Redis. The returned handle's task runs until
    /// aborted; it survives Redis going away and coming back.
    pub fn follow(routes: RedisRoutes, options: CacheOptions) -> (Arc<Self>, JoinHandle<()>) {
        let (version_tx, _) = watch::channel(None);
        let cache = Arc::new(CachedRoutes {
            cached: RwLock::new(Cached {
                table: Arc::default(),
                version: None,
            }),
            version_tx,
        });
        let task = tokio::spawn(cache.clone().run(routes, options));
        (cache, task)
    }

    /// Notified with each version loaded, so callers (and tests) can wait for a change
    /// instead of sleeping.
    pub fn versions(&self) -> watch::Receiver<Option<TableVersion>> {
        self.version_tx.subscribe()
    }

    pub fn version(&self) -> Option<TableVersion> {
        self.cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version
            .clone()
    }

    async fn run(self: Arc<Self>, routes: RedisRoutes, options: CacheOptions) {
        let mut backoff = options.min_backoff;
        // Counts subscription attempts: in a cluster each one goes to the next seed node.
        let mut attempt = 0;
        loop {
            let mut subscribed = false;
            let error = self
                .follow_once(&routes, &options, attempt, &mut subscribed)
                .await;
            if subscribed {
                backoff = options.min_backoff;
            }
            warn!(%error, retry_in = ?backoff, "routing table subscription lost");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.max_backoff);
            attempt += 1;
        }
    }

    /// Subscribes, loads the table, then reloads whenever the version moves, until the
    /// subscription or Redis fails; sets `subscribed` once the table has been loaded.
    async fn follow_once(
        &self,
        routes: &RedisRoutes,
        options: &CacheOptions,
        attempt: usize,
        subscribed: &mut bool,
    ) -> StoreError {
        match self
            .subscribe_and_reload(routes, options, attempt, subscribed)
            .await
        {
            Ok(never) => match never {},
            Err(error) => error,
        }
    }

    async fn subscribe_and_reload(
        &self,
        routes: &RedisRoutes,
        options: &CacheOptions,
        attempt: usize,
        subscribed: &mut bool,
    ) -> Result<std::convert::Infallible, StoreError> {
        let mut pubsub = routes.target().subscriber(attempt).await?;
        pubsub.subscribe(CHANGES_CHANNEL).await?;
        // Subscribed first, loaded second: a change between the two is not missed.
        self.reload(routes).await?;
        *subscribed = true;
        let mut messages = pubsub.on_message();
        let mut poll = tokio::time::interval(options.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "subscription closed",
                        ))
                        .into());
                    };
                    let announced: String = message.get_payload().unwrap_or_default();
                    if self.version().map(|v| v.to_string()) != Some(announced) {
                        self.reload(routes).await?;
                    }
                }
                _ = poll.tick() => {
                    // Catches notifications lost while subscribed to a node that failed
                    // over, or published while the subscription was being remade.
                    let current = routes.version().await?;
                    if current.is_some() && current != self.version() {
                        self.reload(routes).await?;
                    }
                }
            }
        }
    }

    async fn reload(&self, routes: &RedisRoutes) -> Result<(), StoreError> {
        let (version, entries) = routes.load().await?;
        let Some(version) = version else {
            warn!("routing table absent from Redis; serving the last snapshot until it is rebuilt");
            return Ok(());
        };
        let table = Arc::new(RouteTable::new(entries));
        debug!(%version, routes = table.len(), "routing table loaded");
        {
            let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
            cached.table = table;
            cached.version = Some(version.clone());
        }
        self.version_tx.send_replace(Some(version));
        Ok(())
    }
}

impl RouteLookup for CachedRoutes {
    fn snapshot(&self) -> Arc<RouteTable> {
        self.cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .table
            .clone()
    }
}
