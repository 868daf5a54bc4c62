//! The call store in Redis, shared by every edge pod: one server, Redis Cluster or a
//! Sentinel-managed master.
//!
//! Each operation is one Lua script (or one command) over keys of one hash slot, the
//! slot of the call's bucket (`keys.rs`): the call's hash, its dialog index entries and
//! its bucket's timer set. So it is atomic on a single server and in Redis Cluster alike,
//! and every transition costs one round trip. See `docs/call-state.md`.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use switchyard_routing::{ConnectionOptions, RedisConnection, RedisTarget};
use tracing::{debug, warn};

use super::keys::{CallKeys, all_tags, call_prefix, dialog_key, tag_for_sip_call_id, timers_key};
use super::{
    CallStore, Commit, FoundCall, Op, StoreError, call_keys, check_leg, check_ops, check_owner,
    ttl_ms,
};
use crate::metrics::METRICS;

/// How long one store operation may take before it fails as `Unavailable`: long enough
/// for a busy Redis, short enough that a SIP transaction can still answer 503 before the
/// peer's Timer B/F gives up.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Buckets polled at once by `due_timers`.
const POLL_CONCURRENCY: usize = 16;

/// Lua shared by the scripts below: the server's clock (so pods' clocks need not agree
/// on lease expiry), CSeq allocation and the lease, each used by a standalone script and
/// inside transitions.
macro_rules! lua_prelude {
    () => {
        r#"
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function next_cseq(call, leg, floor)
  local field = 'c:' .. leg
  local n = redis.call('HINCRBY', call, field, 1)
  local f = tonumber(floor)
  if n <= f then
    n = f + 1
    redis.call('HSET', call, field, string.format('%d', n))
  end
  return string.format('%d', n)
end
local function claim(call, owner, lease)
  local now = server_ms()
  local holder = redis.call('HGET', call, 'o')
  if holder and holder ~= owner and tonumber(redis.call('HGET', call, 'e') or '0') > now then
    return 0
  end
  redis.call('HSET', call, 'o', owner, 'e', string.format('%.0f', now + tonumber(lease)))
  return 1
end
"#
    };
}

/// Create or commit. KEYS: [1] the call hash, [2] its bucket's timer set, then one dialog
/// index key per dialog op, in order. ARGV: [1] mode ('create'|'commit'), [2] expected
/// version, [3] ttl ms, [4] data, [5] sid; then one triple per op: 'I'/'F'/'K' + dialog
/// id + '', 'S' + due ms + '', 'C' + '' + '', 'L' + owner + lease ms, 'R' + owner + '',
/// 'N' + leg + floor. Everything is checked before the first write: Lua scripts are not
/// rolled back, so "all or nothing" has to be built in.
const TRANSITION_LUA: &str = concat!(
    lua_prelude!(),
    r#"
local call, timers = KEYS[1], KEYS[2]
local mode, expected, ttl, data, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('HGET', call, 'v')
if mode == 'create' then
  if current then return {'exists'} end
elseif not current then
  return {'conflict'}
elseif current ~= expected then
  return {'conflict', current, redis.call('HGET', call, 'd') or ''}
end
local k = 3
for i = 6, #ARGV, 3 do
  local op = ARGV[i]
  if op == 'I' then
    local held = redis.call('GET', KEYS[k])
    if held and held ~= sid then return {'dialog', ARGV[i + 1]} end
  end
  if op == 'I' or op == 'F' or op == 'K' then k = k + 1 end
end
local version = tostring((tonumber(current) or 0) + 1)
redis.call('HSET', call, 'v', version, 'd', data)
local reply = {'ok', version}
k = 3
for i = 6, #ARGV, 3 do
  local op, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'I' then
    redis.call('SET', KEYS[k], sid, 'PX', ttl)
    k = k + 1
  elseif op == 'F' then
    if redis.call('GET', KEYS[k]) == sid then redis.call('DEL', KEYS[k]) end
    k = k + 1
  elseif op == 'K' then
    if redis.call('GET', KEYS[k]) == sid then redis.call('PEXPIRE', KEYS[k], ttl) end
    k = k + 1
  elseif op == 'S' then
    redis.call('ZADD', timers, a, sid)
  elseif op == 'C' then
    redis.call('ZREM', timers, sid)
  elseif op == 'L' then
    claim(call, a, b)
  elseif op == 'R' then
    if redis.call('HGET', call, 'o') == a then redis.call('HDEL', call, 'o', 'e') end
  elseif op == 'N' then
    reply[#reply + 1] = next_cseq(call, a, b)
  end
end
-- The call and its dialog index entries expire together: entries written here got the
-- TTL above, and the caller names its other entries with 'K' ops.
redis.call('PEXPIRE', call, ttl)
return reply
"#
);

/// KEYS: [1] a dialog index key. ARGV: [1] the call key prefix of its bucket. The
/// dialog's call with its version and data, or nil.
const FIND_CALL_LUA: &str = r#"
local sid = redis.call('GET', KEYS[1])
if not sid then return false end
local found = redis.call('HMGET', ARGV[1] .. sid, 'v', 'd')
if not found[1] then return false end
return {sid, found[1], found[2] or ''}
"#;

/// KEYS: call hash. ARGV: leg, floor. -1: no such call.
const NEXT_CSEQ_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return next_cseq(KEYS[1], ARGV[1], ARGV[2])
"#
);

/// KEYS: call hash. ARGV: owner, lease ms. A call that does not exist is not claimed:
/// writing its lease would leave a hash without a TTL.
const CLAIM_LUA: &str = concat!(
    lua_prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return claim(KEYS[1], ARGV[1], ARGV[2])
"#
);

/// KEYS: call hash. ARGV: owner.
const RELEASE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then redis.call('HDEL', KEYS[1], 'o', 'e') end
return 0
"#;

/// KEYS: [1] a bucket's timer set. ARGV: [1] now ms, [2] limit, [3] the bucket's call key
/// prefix. Due timers as (sid, due) pairs; entries of calls that expired without
/// cancelling their timer are removed on the way.
const DUE_TIMERS_LUA: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #due, 2 do
  local sid = due[i]
  if redis.call('EXISTS', ARGV[3] .. sid) == 1 then
    out[#out + 1] = sid
    out[#out + 1] = due[i + 1]
  else
    redis.call('ZREM', KEYS[1], sid)
  end
end
return out
"#;

/// The scripts, hashed once per process (EVALSHA sends the hash).
static TRANSITION: LazyLock<Script> = LazyLock::new(|| Script::new(TRANSITION_LUA));
static FIND_CALL: LazyLock<Script> = LazyLock::new(|| Script::new(FIND_CALL_LUA));
static NEXT_CSEQ: LazyLock<Script> = LazyLock::new(|| Script::new(NEXT_CSEQ_LUA));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));
static DUE_TIMERS: LazyLock<Script> = LazyLock::new(|| Script::new(DUE_TIMERS_LUA));

/// Calls in Redis. Cheap to share (`Arc`); the connection is multiplexed.
pub struct RedisCallStore {
    connection: RedisConnection,
    timeout: Duration,
}

/// Whether an error means "Redis is not serving right now" (503 and retry later) rather
/// than a bug in what we sent.
fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::Io
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
        // A script that hit its time limit; the server answers BUSY until it ends.
        || error.code() == Some("BUSY")
}

fn classify(error: RedisError) -> StoreError {
    if is_unavailable(&error) {
        StoreError::Unavailable(error.to_string())
    } else if matches!(
        error.kind(),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType
    ) {
        StoreError::Corrupt(error.to_string())
    } else {
        StoreError::Redis(error)
    }
}

fn text(bytes: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(bytes).map_err(|_| StoreError::Corrupt("non-UTF-8 field".into()))
}

fn number_of<T: std::str::FromStr>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    let text = text(bytes)?;
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {text:?} is not a number")))
}

enum Mode {
    Create,
    Commit { expected: u64 },
}

impl RedisCallStore {
    /// Does not touch the network: the connection is made on first use and remade after
    /// failures, so the edge can start (and answer 503) while Redis is down.
    pub fn new(target: impl Into<RedisTarget>, timeout: Duration) -> Result<Self, StoreError> {
        let connection = target
            .into()
            .connect(ConnectionOptions { timeout })
            .map_err(|e| StoreError::Config(format!("Redis connection: {e}")))?;
        Ok(RedisCallStore {
            connection,
            timeout,
        })
    }

    pub fn open(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Config(format!("Redis URL {url:?}: {e}")))?;
        Self::new(client, timeout)
    }

    /// Runs one operation under the deadline, classifying and counting failures.
    async fn run<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _timer = METRICS
            .store_duration
            .with_label_values(&[op])
            .start_timer();
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from Redis within {:?}",
                self.timeout
            ))),
        };
        if let Err(error) = &result
            && matches!(
                error,
                StoreError::Unavailable(_) | StoreError::Corrupt(_) | StoreError::Redis(_)
            )
        {
            METRICS.store_errors.with_label_values(&[op]).inc();
            warn!(op, %error, "call store operation failed");
        }
        result
    }

    /// The create/commit script: one round trip, whatever the ops.
    async fn transition(
        &self,
        mode: Mode,
        sid: &str,
        keys: &CallKeys,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let (mode_arg, expected) = match mode {
            Mode::Create => ("create", 0),
            Mode::Commit { expected } => ("commit", expected),
        };
        let mut invocation = TRANSITION.key(&keys.call);
        invocation
            .key(keys.timers())
            .arg(mode_arg)
            .arg(expected)
            .arg(ttl_ms(ttl))
            .arg(data)
            .arg(sid);
        for op in ops {
            match op {
                Op::IndexDialog { dialog_id } => {
                    invocation
                        .key(dialog_key(dialog_id))
                        .arg("I")
                        .arg(dialog_id)
                        .arg("");
                }
                Op::ForgetDialog { dialog_id } => {
                    invocation
                        .key(dialog_key(dialog_id))
                        .arg("F")
                        .arg(dialog_id)
                        .arg("");
                }
                Op::KeepDialog { dialog_id } => {
                    invocation
                        .key(dialog_key(dialog_id))
                        .arg("K")
                        .arg(dialog_id)
                        .arg("");
                }
                Op::ScheduleTimer { due_ms } => {
                    invocation.arg("S").arg(*due_ms).arg("");
                }
                Op::CancelTimer => {
                    invocation.arg("C").arg("").arg("");
                }
                Op::Claim { owner, lease } => {
                    invocation.arg("L").arg(owner).arg(ttl_ms(*lease));
                }
                Op::Release { owner } => {
                    invocation.arg("R").arg(owner).arg("");
                }
                Op::NextCseq { leg, floor } => {
                    invocation.arg("N").arg(leg).arg(*floor);
                }
            }
        }
        let mut con = self.connection.clone();
        invocation.invoke_async(&mut con).await.map_err(classify)
    }

    async fn due_in_bucket(
        &self,
        tag: String,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut con = self.connection.clone();
        let pairs: Vec<(String, String)> = DUE_TIMERS
            .key(timers_key(&tag))
            .arg(now_ms)
            .arg(limit)
            .arg(call_prefix(&tag))
            .invoke_async(&mut con)
            .await
            .map_err(classify)?;
        pairs
            .into_iter()
            .map(|(sid, due)| {
                // Scores come back as Redis formats doubles; timers are whole ms.
                let due = due
                    .parse::<f64>()
                    .map_err(|_| StoreError::Corrupt(format!("timer of {sid} is {due:?}")))?;
                Ok((due as u64, sid))
            })
            .collect()
    }
}

fn cseqs_of(reply: &[Vec<u8>]) -> Result<Vec<u32>, StoreError> {
    reply
        .iter()
        .skip(2)
        .map(|n| {
            let n: u64 = number_of(n, "CSeq")?;
            u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("CSeq {n} out of range")))
        })
        .collect()
}

impl CallStore for RedisCallStore {
    async fn create(
        &self,
        sid: &str,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> Result<(), StoreError> {
        let keys = call_keys(sid)?;
        check_ops(&keys, ops)?;
        self.run("create", async {
            let reply = self
                .transition(Mode::Create, sid, &keys, data, ttl, ops)
                .await?;
            match reply.first().map(Vec::as_slice) {
                Some(b"ok") => Ok(()),
                Some(b"exists") => Err(StoreError::AlreadyExists(sid.to_owned())),
                Some(b"dialog") => Err(dialog_in_use(&reply)),
                _ => Err(StoreError::Corrupt(format!(
                    "create: unexpected reply {reply:?}"
                ))),
            }
        })
        .await
    }

    async fn load(&self, sid: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let keys = call_keys(sid)?;
        self.run("load", async {
            let mut con = self.connection.clone();
            let (version, data): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
                .arg(&keys.call)
                .arg("v")
                .arg("d")
                .query_async(&mut con)
                .await
                .map_err(classify)?;
            match (version, data) {
                (None, _) => Ok(None),
                (Some(version), Some(data)) => Ok(Some((number_of(&version, "version")?, data))),
                (Some(_), None) => Err(StoreError::Corrupt(format!("{sid} has no data"))),
            }
        })
        .await
    }

    async fn commit(
        &self,
        sid: &str,
        expected: u64,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> Result<Commit, StoreError> {
        let keys = call_keys(sid)?;
        check_ops(&keys, ops)?;
        self.run("commit", async {
            let reply = self
                .transition(Mode::Commit { expected }, sid, &keys, data, ttl, ops)
                .await?;
            match (reply.first().map(Vec::as_slice), reply.get(1), reply.get(2)) {
                (Some(b"ok"), Some(version), _) => Ok(Commit::Committed {
                    version: number_of(version, "version")?,
                    cseqs: cseqs_of(&reply)?,
                }),
                (Some(b"conflict"), None, _) => {
                    debug!(sid, expected, "commit conflict: the call is gone");
                    Ok(Commit::Conflict { current: None })
                }
                (Some(b"conflict"), Some(version), Some(data)) => {
                    let version = number_of(version, "version")?;
                    debug!(sid, expected, version, "commit conflict");
                    Ok(Commit::Conflict {
                        current: Some((version, data.clone())),
                    })
                }
                (Some(b"dialog"), ..) => Err(dialog_in_use(&reply)),
                _ => Err(StoreError::Corrupt(format!(
                    "commit: unexpected reply {reply:?}"
                ))),
            }
        })
        .await
    }

    async fn find_call(&self, dialog_id: &str) -> Result<Option<FoundCall>, StoreError> {
        if dialog_id.is_empty() {
            return Err(StoreError::InvalidKey("empty dialog id".into()));
        }
        self.run("find_call", async {
            let mut con = self.connection.clone();
            let found: Option<(String, Vec<u8>, Vec<u8>)> = FIND_CALL
                .key(dialog_key(dialog_id))
                .arg(call_prefix(&tag_for_sip_call_id(dialog_id)))
                .invoke_async(&mut con)
                .await
                .map_err(classify)?;
            found
                .map(|(sid, version, data)| {
                    Ok(FoundCall {
                        version: number_of(&version, "version")?,
                        sid,
                        data,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn next_cseq(&self, sid: &str, leg: &str, floor: u32) -> Result<u32, StoreError> {
        let keys = call_keys(sid)?;
        check_leg(leg)?;
        self.run("next_cseq", async {
            let mut con = self.connection.clone();
            let n: i64 = NEXT_CSEQ
                .key(&keys.call)
                .arg(leg)
                .arg(floor)
                .invoke_async(&mut con)
                .await
                .map_err(classify)?;
            if n == -1 {
                return Err(StoreError::NotFound(sid.to_owned()));
            }
            u32::try_from(n)
                .map_err(|_| StoreError::Corrupt(format!("CSeq {n} of {sid}/{leg} out of range")))
        })
        .await
    }

    async fn claim(&self, sid: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let keys = call_keys(sid)?;
        check_owner(owner)?;
        self.run("claim", async {
            let mut con = self.connection.clone();
            let held: i64 = CLAIM
                .key(&keys.call)
                .arg(owner)
                .arg(ttl_ms(lease))
                .invoke_async(&mut con)
                .await
                .map_err(classify)?;
            Ok(held == 1)
        })
        .await
    }

    async fn release(&self, sid: &str, owner: &str) -> Result<(), StoreError> {
        let keys = call_keys(sid)?;
        check_owner(owner)?;
        self.run("release", async {
            let mut con = self.connection.clone();
            let _: i64 = RELEASE
                .key(&keys.call)
                .arg(owner)
                .invoke_async(&mut con)
                .await
                .map_err(classify)?;
            Ok(())
        })
        .await
    }

    /// One script per bucket, [`POLL_CONCURRENCY`] at a time: on one server they share
    /// the connection's pipeline, in a cluster each goes to its slot's master. (With all
    /// 256 in flight at once, the redis crate's cluster client did not recover from a
    /// master failover: `tests/tests/cluster.rs`.)
    async fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run("due_timers", async {
            let buckets: Vec<_> = futures_util::stream::iter(all_tags())
                .map(|tag| self.due_in_bucket(tag, now_ms, limit))
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
            let mut due = Vec::new();
            for bucket in buckets {
                due.extend(bucket?);
            }
            due.sort();
            due.truncate(limit);
            Ok(due.into_iter().map(|(_, sid)| sid).collect())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", async {
            let mut con = self.connection.clone();
            let _: String = redis::cmd("PING")
                .query_async(&mut con)
                .await
                .map_err(classify)?;
            Ok(())
        })
        .await
    }
}

fn dialog_in_use(reply: &[Vec<u8>]) -> StoreError {
    let id = reply
        .get(1)
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_default();
    StoreError::DialogInUse(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{dialog_id, edge_call_id, new_call_sid};

    #[test]
    fn dialog_keys_land_in_the_call_slot() {
        let sid = new_call_sid("ab");
        let keys = call_keys(&sid).expect("valid sid");
        let id = dialog_id(&edge_call_id("ab", "a", "h"), "t");
        assert_eq!(tag_for_sip_call_id(&id), keys.tag);
        assert!(dialog_key(&id).starts_with(&keys.dialog_prefix()));
        assert!(keys.timers().contains("{ab}"));
    }
}
