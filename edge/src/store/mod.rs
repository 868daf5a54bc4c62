//! The edge's call-state store: atomic, versioned persistence of opaque call documents.
//!
//! Edge pods are stateless: everything about a call lives here, so any pod can carry on
//! any call. The store does not know what a call contains: the call flow serialises its
//! own record into bytes and the store keeps it with a version number, plus the side
//! structures a SIP edge needs (dialog index, CSeq counters, ownership lease, timers).
//!
//! Backends: [`RedisCallStore`] (shared by all pods) and [`MemoryCallStore`] (standalone
//! mode, one process). [`CallStore`] uses `async fn`s and is not dyn-compatible, so
//! [`AnyCallStore`] picks one at run time.
//!
//! Round trips to Redis per operation (any deployment: every operation is one script or
//! command on the node of one slot; see `docs/call-state.md`):
//!
//! | operation      | round trips | how                                              |
//! |----------------|-------------|--------------------------------------------------|
//! | `create`       | 1           | one Lua script, ops included                     |
//! | `commit`       | 1           | one Lua script (CAS), ops included               |
//! | `load`         | 1           | HMGET                                            |
//! | `find_call`    | 1           | one Lua script: the dialog index, then the call  |
//! | `next_cseq`    | 1           | one Lua script                                   |
//! | `claim`        | 1           | one Lua script                                   |
//! | `release`      | 1           | one Lua script                                   |
//! | `due_timers`   | 1 per bucket, 16 at a time | one Lua script per bucket's timer set |
//! | `ping`         | 1           | PING                                             |
//!
//! A script's first use on a server (or after a restart) costs one more round trip
//! (EVALSHA answered NOSCRIPT, SCRIPT LOAD, retry).

mod keys;
mod memory;
mod redis_store;

use std::future::Future;
use std::time::Duration;

use thiserror::Error;

pub use keys::{
    BUCKETS, CallKeys, KEY_PREFIX, SID_LEN, TAG_LEN, all_tags, bucket_tag, call_prefix, dialog_id,
    dialog_key, edge_call_id, new_call_sid, tag_for_sip_call_id, tag_of_sid, timers_key,
};
pub use memory::MemoryCallStore;
pub use redis_store::{DEFAULT_STORE_TIMEOUT, RedisCallStore};

/// A side effect applied atomically with a create or commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The dialog index entry `sy:v2:dlg:{tag}:<dialog-id>` → sid. Only for dialogs whose
    /// Call-ID is in the call's bucket (edge Call-IDs made with the call's tag, or the
    /// Call-ID the call's tag was derived from); any other is refused with
    /// [`StoreError::InvalidKey`].
    IndexDialog { dialog_id: String },
    /// Removes the dialog index entry, if it points at this call.
    ForgetDialog { dialog_id: String },
    /// Gives a dialog index entry of this call the commit's TTL, so it lives as long as
    /// the call. The store keeps no list of a call's entries (it would cost every held
    /// call memory): the call flow, which knows its legs, names them in each commit.
    KeepDialog { dialog_id: String },
    /// Sets the call's single timer to fire at `due_ms` (ms since the Unix epoch),
    /// replacing any earlier one.
    ScheduleTimer { due_ms: u64 },
    /// Clears the call's timer.
    CancelTimer,
    /// Takes the ownership lease for `lease` if it is free, expired or `owner`'s already;
    /// a lease another owner holds is left alone (the commit still happens).
    Claim { owner: String, lease: Duration },
    /// Gives the lease up if `owner` holds it.
    Release { owner: String },
    /// Allocates the next CSeq of a leg, as [`CallStore::next_cseq`] does; the numbers
    /// come back in [`Commit::Committed`], in the order of these ops.
    NextCseq { leg: String, floor: u32 },
}

/// The outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Written as `version` (the expected version + 1), with every op applied; `cseqs`
    /// holds the numbers the `NextCseq` ops allocated.
    Committed { version: u64, cseqs: Vec<u32> },
    /// Nothing was written: the stored version was not the expected one. `current` is
    /// what is stored now (`None`: the call does not exist, e.g. it expired).
    Conflict { current: Option<(u64, Vec<u8>)> },
}

/// A call found through the dialog index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCall {
    pub sid: String,
    pub version: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// Redis is down, unreachable, too slow or refusing writes: the edge answers 503 with
    /// Retry-After. A write that failed this way may or may not have been applied: reload
    /// before retrying.
    #[error("call store unavailable: {0}")]
    Unavailable(String),
    /// Stored data the store cannot read (wrong type, missing field): a bug or tampering.
    #[error("corrupt call state: {0}")]
    Corrupt(String),
    /// A sid, Call-ID or leg the store cannot make a key of, or a dialog op for a Call-ID
    /// outside the call's hash slot.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// `create` for a sid that exists.
    #[error("call {0} already exists")]
    AlreadyExists(String),
    /// `next_cseq` for a call that does not exist (its counters would have no TTL to
    /// inherit).
    #[error("call {0} does not exist")]
    NotFound(String),
    /// `IndexDialog` for a dialog another call has indexed; nothing was applied.
    #[error("dialog {0} belongs to another call")]
    DialogInUse(String),
    /// The store cannot be set up as configured (a malformed Redis URL).
    #[error("call store configuration: {0}")]
    Config(String),
    /// An answer from Redis that is none of the above (a script error): a bug.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
}

/// Atomic, versioned persistence of calls. See the module docs for costs.
pub trait CallStore: Send + Sync + 'static {
    /// Creates the call at version 1 with `ops` applied atomically; Err(AlreadyExists) if
    /// the sid exists. (A new call has nothing to send, so CSeqs `NextCseq` allocates
    /// here are not returned.)
    fn create(
        &self,
        sid: &str,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The call's version and data, `None` if it does not exist (or expired).
    fn load(
        &self,
        sid: &str,
    ) -> impl Future<Output = Result<Option<(u64, Vec<u8>)>, StoreError>> + Send;

    /// Compare-and-set: writes `data` as version expected+1 and applies `ops`, all or
    /// nothing, only if the stored version is `expected`. Every key of the call gets
    /// `ttl`.
    fn commit(
        &self,
        sid: &str,
        expected: u64,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// The call a dialog (by its [`dialog_id`]) belongs to, with its version and data,
    /// in one step.
    fn find_call(
        &self,
        dialog_id: &str,
    ) -> impl Future<Output = Result<Option<FoundCall>, StoreError>> + Send;

    /// Atomically allocates the next CSeq number for a leg of a call: 1 for a new leg,
    /// then one more each time, and never at or below `floor` (pass the highest CSeq
    /// seen on the leg, or 0). The counter is part of the call and expires with it;
    /// `NotFound` for a call that does not exist.
    fn next_cseq(
        &self,
        sid: &str,
        leg: &str,
        floor: u32,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Ownership lease: take it if free, expired, or already ours (then it is renewed
    /// for `lease`); returns whether we hold it now. A call that does not exist cannot
    /// be claimed (false). The lease is part of the call and expires with it at the
    /// latest.
    fn claim(
        &self,
        sid: &str,
        owner: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up if `owner` holds it; otherwise does nothing.
    fn release(
        &self,
        sid: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sids whose timer is due at `now_ms`, at most `limit`, earliest first. A timer
    /// stays due until a commit cancels or reschedules it, so a pod that dies while
    /// handling one leaves it for the next poll.
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Cheap liveness check (PING) for readiness and for refusing calls while Redis is
    /// down.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The keys of a sid, or `InvalidKey`.
pub(crate) fn call_keys(sid: &str) -> Result<CallKeys, StoreError> {
    CallKeys::new(sid).ok_or_else(|| StoreError::InvalidKey(format!("not a call sid: {sid:?}")))
}

/// Refuses dialog ops whose index key would fall outside the call's slot, empty dialog
/// ids, bad leg names and empty owners; checked before anything is sent, so a refused
/// transition changes nothing.
pub(crate) fn check_ops(keys: &CallKeys, ops: &[Op]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            Op::IndexDialog { dialog_id }
            | Op::ForgetDialog { dialog_id }
            | Op::KeepDialog { dialog_id } => {
                if dialog_id.is_empty() {
                    return Err(StoreError::InvalidKey("empty dialog id".into()));
                }
                let tag = tag_for_sip_call_id(dialog_id);
                if tag != keys.tag {
                    return Err(StoreError::InvalidKey(format!(
                        "dialog {dialog_id:?} is in bucket {tag}, the call in {}",
                        keys.tag
                    )));
                }
            }
            Op::NextCseq { leg, .. } => check_leg(leg)?,
            Op::Claim { owner, .. } | Op::Release { owner } => check_owner(owner)?,
            Op::ScheduleTimer { .. } | Op::CancelTimer => {}
        }
    }
    Ok(())
}

pub(crate) fn check_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() || owner.len() > 256 {
        return Err(StoreError::InvalidKey(format!(
            "not an owner name: {owner:?}"
        )));
    }
    Ok(())
}

pub(crate) fn check_leg(leg: &str) -> Result<(), StoreError> {
    if leg.is_empty() || leg.len() > 64 || leg.bytes().any(|b| b.is_ascii_control()) {
        return Err(StoreError::InvalidKey(format!("not a leg name: {leg:?}")));
    }
    Ok(())
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses 0).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The store the binary runs with, chosen at start-up.
pub enum AnyCallStore {
    Memory(MemoryCallStore),
    Redis(RedisCallStore),
}

impl From<MemoryCallStore> for AnyCallStore {
    fn from(store: MemoryCallStore) -> Self {
        AnyCallStore::Memory(store)
    }
}

impl From<RedisCallStore> for AnyCallStore {
    fn from(store: RedisCallStore) -> Self {
        AnyCallStore::Redis(store)
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyCallStore::Memory($store) => $call.await,
            AnyCallStore::Redis($store) => $call.await,
        }
    };
}

impl CallStore for AnyCallStore {
    async fn create(
        &self,
        sid: &str,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.create(sid, data, ttl, ops))
    }

    async fn load(&self, sid: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        delegate!(self, s => s.load(sid))
    }

    async fn commit(
        &self,
        sid: &str,
        expected: u64,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> Result<Commit, StoreError> {
        delegate!(self, s => s.commit(sid, expected, data, ttl, ops))
    }

    async fn find_call(&self, dialog_id: &str) -> Result<Option<FoundCall>, StoreError> {
        delegate!(self, s => s.find_call(dialog_id))
    }

    async fn next_cseq(&self, sid: &str, leg: &str, floor: u32) -> Result<u32, StoreError> {
        delegate!(self, s => s.next_cseq(sid, leg, floor))
    }

    async fn claim(&self, sid: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        delegate!(self, s => s.claim(sid, owner, lease))
    }

    async fn release(&self, sid: &str, owner: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.release(sid, owner))
    }

    async fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        delegate!(self, s => s.due_timers(now_ms, limit))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping())
    }
}
