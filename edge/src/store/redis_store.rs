//! The call store in Redis, shared by every edge pod.
//!
//! Each transition of a call is one Lua script over keys of one hash slot, so it is
//! atomic on a single server and in Redis Cluster alike. The timers sorted set lives in
//! another slot and is only an index: the authoritative due time is field `t` of the
//! call's hash, written by the script. See `docs/call-state.md` for why the index may
//! hold stale entries and how `due_timers` repairs them.

use std::future::Future;
use std::time::Duration;

use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use switchyard_routing::{ConnectionOptions, RedisConnection, RedisTarget};
use tracing::{debug, warn};

use super::keys::{CallKeys, TIMERS_KEY, dialog_key};
use super::{CallStore, Commit, Op, StoreError, call_keys, check_leg, check_ops, ttl_ms};
use crate::metrics::METRICS;

/// How long one store operation may take before it fails as `Unavailable`: long enough
/// for a busy Redis, short enough that a SIP transaction can still answer 503 before the
/// peer's Timer B/F gives up.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Create or commit. KEYS: the call hash, then one dialog index key per dialog op in
/// order. ARGV: mode ('create'|'commit'), expected version, ttl ms, data, sid, dialog
/// key prefix, call key; then (op, argument) pairs: 'I'/'F' + Call-ID, 'S' + due ms,
/// 'C' + ''. Everything is checked before the first write: Lua scripts are not rolled
/// back, so "all or nothing" has to be built in.
const TRANSITION_LUA: &str = r#"
local call = KEYS[1]
local mode, expected, ttl, data, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local dlg_prefix, call_key = ARGV[6], ARGV[7]
local current = redis.call('HGET', call, 'v')
if mode == 'create' then
  if current then return {'exists'} end
elseif not current then
  return {'conflict'}
elseif current ~= expected then
  return {'conflict', current, redis.call('HGET', call, 'd') or ''}
end
local k = 2
for i = 8, #ARGV, 2 do
  local op = ARGV[i]
  if op == 'I' then
    local held = redis.call('GET', KEYS[k])
    if held and held ~= sid then return {'dialog', ARGV[i + 1]} end
  end
  if op == 'I' or op == 'F' then k = k + 1 end
end
local version = tostring((tonumber(current) or 0) + 1)
redis.call('HSET', call, 'v', version, 'd', data)
k = 2
for i = 8, #ARGV, 2 do
  local op, arg = ARGV[i], ARGV[i + 1]
  if op == 'I' then
    redis.call('SET', KEYS[k], sid)
    redis.call('HSET', call, 'i:' .. arg, '1')
    k = k + 1
  elseif op == 'F' then
    if redis.call('GET', KEYS[k]) == sid then redis.call('DEL', KEYS[k]) end
    redis.call('HDEL', call, 'i:' .. arg)
    k = k + 1
  elseif op == 'S' then
    redis.call('HSET', call, 't', arg)
  elseif op == 'C' then
    redis.call('HDEL', call, 't')
  end
end
-- Every key of the call expires together. Index keys and counters are found through
-- the hash's bookkeeping fields (i:<call-id>, l:<leg>); they are in the call's slot.
redis.call('PEXPIRE', call, ttl)
for _, field in ipairs(redis.call('HKEYS', call)) do
  local kind, name = string.sub(field, 1, 2), string.sub(field, 3)
  if kind == 'i:' then
    redis.call('PEXPIRE', dlg_prefix .. name, ttl)
  elseif kind == 'l:' then
    redis.call('PEXPIRE', call_key .. ':cseq:' .. name, ttl)
  end
end
return {'ok', version}
"#;

/// KEYS: call hash, counter. ARGV: leg, floor. The counter inherits the call's TTL and
/// is recorded in the hash so later commits extend it too.
const NEXT_CSEQ_LUA: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return -1 end
local n = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[2])
if n <= floor then
  n = floor + 1
  redis.call('SET', KEYS[2], n)
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('HSET', KEYS[1], 'l:' .. ARGV[1], '1')
return n
"#;

/// KEYS: lease. ARGV: owner, lease ms. An expired lease is a missing key.
const CLAIM_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS: lease. ARGV: owner.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Calls in Redis. Cheap to share (`Arc`); the connection is multiplexed.
pub struct RedisCallStore {
    connection: RedisConnection,
    timeout: Duration,
    transition: Script,
    next_cseq: Script,
    claim: Script,
    release: Script,
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

fn is_noscript(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

fn text(bytes: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(bytes).map_err(|_| StoreError::Corrupt("non-UTF-8 field".into()))
}

fn version_of(bytes: &[u8]) -> Result<u64, StoreError> {
    let text = text(bytes)?;
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("version {text:?} is not a number")))
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
            transition: Script::new(TRANSITION_LUA),
            next_cseq: Script::new(NEXT_CSEQ_LUA),
            claim: Script::new(CLAIM_LUA),
            release: Script::new(RELEASE_LUA),
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

    /// The create/commit script with its timer index update pipelined around it: one
    /// round trip. The ZADDs go out whatever the script decides (a pipeline cannot be
    /// conditional); an entry for a transition that did not happen is harmless, because
    /// the index is only trusted when the call's own `t` field agrees.
    ///
    /// The ZADD is sent both before and after the script. Before: if the connection
    /// dies mid-pipeline, the script cannot have run without its index entry. After: a
    /// `due_timers` repair that removed the entry and re-read `t` just before the
    /// script ran cannot leave the new timer unindexed. Same connection, so Redis runs
    /// them in this order.
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
        let mut script_keys = vec![keys.call.clone()];
        let mut args: Vec<Vec<u8>> = vec![
            mode_arg.into(),
            expected.to_string().into(),
            ttl_ms(ttl).to_string().into(),
            data.to_vec(),
            sid.into(),
            keys.dialog_prefix().into(),
            keys.call.clone().into(),
        ];
        let mut pipe = redis::pipe();
        let mut timer_cmds = Vec::new();
        for op in ops {
            match op {
                Op::IndexDialog { sip_call_id } | Op::ForgetDialog { sip_call_id } => {
                    let code = if matches!(op, Op::IndexDialog { .. }) {
                        "I"
                    } else {
                        "F"
                    };
                    script_keys.push(dialog_key(sip_call_id));
                    args.push(code.into());
                    args.push(sip_call_id.clone().into());
                }
                Op::ScheduleTimer { due_ms } => {
                    args.push("S".into());
                    args.push(due_ms.to_string().into());
                    // LT: the index only ever moves a timer earlier, so a late-arriving
                    // or losing ZADD can make a timer fire early (filtered) but never
                    // late.
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(TIMERS_KEY).arg("LT").arg(*due_ms).arg(sid);
                    timer_cmds.push(zadd);
                }
                Op::CancelTimer => {
                    // The index entry is left for `due_timers` to drop: removing it here
                    // could remove the entry of a timer a concurrent commit just set.
                    args.push("C".into());
                    args.push(Vec::new());
                }
            }
        }
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(self.transition.get_hash())
            .arg(script_keys.len())
            .arg(&script_keys)
            .arg(&args);
        for cmd in &timer_cmds {
            pipe.add_command(cmd.clone()).ignore();
        }
        pipe.add_command(evalsha);
        for cmd in timer_cmds {
            pipe.add_command(cmd).ignore();
        }
        let mut con = self.connection.clone();
        let reply: Result<(Vec<Vec<u8>>,), RedisError> = pipe.query_async(&mut con).await;
        let reply = match reply {
            Err(e) if is_noscript(&e) => {
                // First use on this server (or it restarted): load and go again.
                debug!("loading the call transition script");
                self.transition
                    .load_async(&mut con)
                    .await
                    .map_err(classify)?;
                pipe.query_async(&mut con).await
            }
            other => other,
        };
        Ok(reply.map_err(classify)?.0)
    }
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
                (Some(version), Some(data)) => Ok(Some((version_of(&version)?, data))),
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
                    version: version_of(version)?,
                }),
                (Some(b"conflict"), None, _) => {
                    debug!(sid, expected, "commit conflict: the call is gone");
                    Ok(Commit::Conflict { current: None })
                }
                (Some(b"conflict"), Some(version), Some(data)) => {
                    let version = version_of(version)?;
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

    async fn find_dialog(&self, sip_call_id: &str) -> Result<Option<String>, StoreError> {
        if sip_call_id.is_empty() {
            return Err(StoreError::InvalidKey("empty Call-ID".into()));
        }
        self.run("find_dialog", async {
            let mut con = self.connection.clone();
            redis::cmd("GET")
                .arg(dialog_key(sip_call_id))
                .query_async(&mut con)
                .await
                .map_err(classify)
        })
        .await
    }

    async fn next_cseq(&self, sid: &str, leg: &str, floor: u32) -> Result<u32, StoreError> {
        let keys = call_keys(sid)?;
        check_leg(leg)?;
        self.run("next_cseq", async {
            let mut con = self.connection.clone();
            let n: i64 = self
                .next_cseq
                .key(&keys.call)
                .key(keys.cseq(leg))
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
        self.run("claim", async {
            let mut con = self.connection.clone();
            let held: i64 = self
                .claim
                .key(keys.owner())
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
        self.run("release", async {
            let mut con = self.connection.clone();
            let _: i64 = self
                .release
                .key(keys.owner())
                .arg(owner)
                .invoke_async(&mut con)
                .await
                .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run("due_timers", self.due_timers_inner(now_ms, limit))
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

impl RedisCallStore {
    /// The timers index is a hint: an entry's score is never later than the call's real
    /// due time (`t` in its hash), but it may be earlier, or the timer may be cancelled or
    /// the call gone. Candidates are checked against `t`; stale entries are removed and
    /// re-added from `t` read *after* the removal, so a commit racing with the repair
    /// either is seen by the re-read or adds its own entry after the removal.
    async fn due_timers_inner(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut con = self.connection.clone();
        let candidates: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(TIMERS_KEY)
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut con)
            .await
            .map_err(classify)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Members that are not sids cannot be ours: drop them with the stale ones.
        let (valid, garbage): (Vec<(String, CallKeys)>, Vec<String>) = {
            let mut valid = Vec::new();
            let mut garbage = Vec::new();
            for sid in candidates {
                match CallKeys::new(&sid) {
                    Some(keys) => valid.push((sid, keys)),
                    None => garbage.push(sid),
                }
            }
            (valid, garbage)
        };
        let mut read = redis::pipe();
        for (_, keys) in &valid {
            read.hget(&keys.call, "t");
        }
        let due_times: Vec<Option<String>> = if valid.is_empty() {
            Vec::new()
        } else {
            read.query_async(&mut con).await.map_err(classify)?
        };

        let mut due = Vec::new();
        let mut stale: Vec<&(String, CallKeys)> = Vec::new();
        for (entry, t) in valid.iter().zip(due_times) {
            match t.as_deref().map(str::parse::<u64>) {
                Some(Ok(t)) if t <= now_ms => due.push((t, entry.0.clone())),
                Some(Err(_)) => {
                    warn!(sid = %entry.0, "timer field is not a number; ignoring the timer");
                    stale.push(entry);
                }
                _ => stale.push(entry),
            }
        }
        if !stale.is_empty() || !garbage.is_empty() {
            self.repair(&mut con, &stale, &garbage).await?;
        }
        due.sort();
        Ok(due.into_iter().map(|(_, sid)| sid).collect())
    }

    async fn repair(
        &self,
        con: &mut RedisConnection,
        stale: &[&(String, CallKeys)],
        garbage: &[String],
    ) -> Result<(), StoreError> {
        let mut remove = redis::pipe();
        for sid in garbage {
            remove.zrem(TIMERS_KEY, sid).ignore();
        }
        for (sid, _) in stale {
            remove.zrem(TIMERS_KEY, sid).ignore();
        }
        // Same connection, same pipeline: these reads run after the removals.
        for (_, keys) in stale {
            remove.hget(&keys.call, "t");
        }
        let reread: Vec<Option<String>> = remove.query_async(con).await.map_err(classify)?;
        let mut readd = redis::pipe();
        let mut any = false;
        for ((sid, _), t) in stale.iter().map(|e| (&e.0, &e.1)).zip(reread) {
            if let Some(Ok(t)) = t.as_deref().map(str::parse::<u64>) {
                readd
                    .cmd("ZADD")
                    .arg(TIMERS_KEY)
                    .arg("LT")
                    .arg(t)
                    .arg(sid)
                    .ignore();
                any = true;
            }
        }
        if any {
            readd.exec_async(con).await.map_err(classify)?;
        }
        debug!(
            stale = stale.len(),
            garbage = garbage.len(),
            "repaired timer index entries"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tag_for_sip_call_id;

    #[test]
    fn dialog_keys_land_in_the_call_slot() {
        let sid = super::super::new_call_sid("0123456789abcdef");
        let keys = call_keys(&sid).expect("valid sid");
        let id = super::super::edge_call_id("0123456789abcdef", "a", "h");
        assert_eq!(tag_for_sip_call_id(&id), keys.tag);
        assert!(dialog_key(&id).starts_with(&keys.dialog_prefix()));
    }
}
