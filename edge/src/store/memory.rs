//! The call store in process memory: standalone mode (no Redis) and tests.
//!
//! Same semantics as the Redis store, under one mutex: every operation is atomic. TTLs
//! are honoured lazily: an expired call (with its index entries and counters) is treated
//! as absent when touched and swept on `create` and `due_timers`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    CallStore, Commit, FoundCall, Op, StoreError, call_keys, check_leg, check_ops, check_owner,
};

struct Call {
    version: u64,
    data: Vec<u8>,
    expires: Instant,
    timer: Option<u64>,
    /// Dialogs indexed for this call (they expire with it).
    dialogs: Vec<String>,
    /// CSeq counter per leg (they expire with it).
    cseq: BTreeMap<String, u32>,
    lease: Option<Lease>,
}

struct Lease {
    owner: String,
    expires: Instant,
}

impl Call {
    fn next_cseq(&mut self, sid: &str, leg: &str, floor: u32) -> Result<u32, StoreError> {
        let counter = self.cseq.entry(leg.to_owned()).or_insert(0);
        let next = counter
            .checked_add(1)
            .map(|n| n.max(floor.saturating_add(1)))
            .ok_or_else(|| StoreError::Corrupt(format!("CSeq of {sid}/{leg} overflows")))?;
        *counter = next;
        Ok(next)
    }

    /// Takes the lease if free, expired or `owner`'s; whether `owner` holds it now.
    fn claim(&mut self, owner: &str, lease: Duration, now: Instant) -> bool {
        if self
            .lease
            .as_ref()
            .is_some_and(|l| l.expires > now && l.owner != owner)
        {
            return false;
        }
        self.lease = Some(Lease {
            owner: owner.to_owned(),
            expires: now + lease,
        });
        true
    }

    fn release(&mut self, owner: &str) {
        if self.lease.as_ref().is_some_and(|l| l.owner == owner) {
            self.lease = None;
        }
    }
}

#[derive(Default)]
struct State {
    calls: HashMap<String, Call>,
    /// Dialog id → sid.
    dialogs: HashMap<String, String>,
}

impl State {
    /// The live call, after dropping it if it expired.
    fn live(&mut self, sid: &str, now: Instant) -> Option<&mut Call> {
        if self.calls.get(sid).is_some_and(|c| c.expires <= now) {
            self.remove_call(sid);
        }
        self.calls.get_mut(sid)
    }

    fn remove_call(&mut self, sid: &str) {
        if let Some(call) = self.calls.remove(sid) {
            for id in call.dialogs {
                if self.dialogs.get(&id).is_some_and(|owner| owner == sid) {
                    self.dialogs.remove(&id);
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.expires <= now)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in expired {
            self.remove_call(&sid);
        }
    }

    /// Checks every op against the current state before anything changes: all or
    /// nothing, like the Redis script.
    fn check_dialogs(&self, sid: &str, ops: &[Op]) -> Result<(), StoreError> {
        for op in ops {
            if let Op::IndexDialog { dialog_id } = op
                && self.dialogs.get(dialog_id).is_some_and(|held| held != sid)
            {
                return Err(StoreError::DialogInUse(dialog_id.clone()));
            }
        }
        Ok(())
    }

    /// Applies checked ops to a call that exists; returns the CSeqs allocated.
    fn apply(&mut self, sid: &str, ops: &[Op], now: Instant) -> Result<Vec<u32>, StoreError> {
        let State { calls, dialogs } = self;
        let call = calls
            .get_mut(sid)
            .ok_or_else(|| StoreError::NotFound(sid.to_owned()))?;
        let mut cseqs = Vec::new();
        for op in ops {
            match op {
                Op::IndexDialog { dialog_id } => {
                    dialogs.insert(dialog_id.clone(), sid.to_owned());
                    if !call.dialogs.contains(dialog_id) {
                        call.dialogs.push(dialog_id.clone());
                    }
                }
                Op::ForgetDialog { dialog_id } => {
                    if dialogs.get(dialog_id).is_some_and(|held| held == sid) {
                        dialogs.remove(dialog_id);
                    }
                    call.dialogs.retain(|id| id != dialog_id);
                }
                // Index entries here live exactly as long as their call.
                Op::KeepDialog { .. } => {}
                Op::ScheduleTimer { due_ms } => call.timer = Some(*due_ms),
                Op::CancelTimer => call.timer = None,
                Op::Claim { owner, lease } => {
                    call.claim(owner, *lease, now);
                }
                Op::Release { owner } => call.release(owner),
                Op::NextCseq { leg, floor } => cseqs.push(call.next_cseq(sid, leg, *floor)?),
            }
        }
        Ok(cseqs)
    }
}

/// Calls in process memory. Cheap to create; share it behind an `Arc`.
#[derive(Default)]
pub struct MemoryCallStore {
    state: Mutex<State>,
}

impl MemoryCallStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied transition behind
        // (checks run before changes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CallStore for MemoryCallStore {
    async fn create(
        &self,
        sid: &str,
        data: &[u8],
        ttl: Duration,
        ops: &[Op],
    ) -> Result<(), StoreError> {
        let keys = call_keys(sid)?;
        check_ops(&keys, ops)?;
        let now = Instant::now();
        let mut state = self.state();
        state.sweep(now);
        if state.calls.contains_key(sid) {
            return Err(StoreError::AlreadyExists(sid.to_owned()));
        }
        state.check_dialogs(sid, ops)?;
        state.calls.insert(
            sid.to_owned(),
            Call {
                version: 1,
                data: data.to_vec(),
                expires: now + ttl,
                timer: None,
                dialogs: Vec::new(),
                cseq: BTreeMap::new(),
                lease: None,
            },
        );
        state.apply(sid, ops, now)?;
        Ok(())
    }

    async fn load(&self, sid: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        call_keys(sid)?;
        let mut state = self.state();
        Ok(state
            .live(sid, Instant::now())
            .map(|c| (c.version, c.data.clone())))
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
        let now = Instant::now();
        let mut state = self.state();
        let current = state.live(sid, now).map(|c| (c.version, c.data.clone()));
        match current {
            Some((version, _)) if version == expected => {}
            current => return Ok(Commit::Conflict { current }),
        }
        state.check_dialogs(sid, ops)?;
        let version = expected + 1;
        if let Some(call) = state.calls.get_mut(sid) {
            call.version = version;
            call.data = data.to_vec();
            call.expires = now + ttl;
        }
        let cseqs = state.apply(sid, ops, now)?;
        Ok(Commit::Committed { version, cseqs })
    }

    async fn find_call(&self, dialog_id: &str) -> Result<Option<FoundCall>, StoreError> {
        if dialog_id.is_empty() {
            return Err(StoreError::InvalidKey("empty dialog id".into()));
        }
        let now = Instant::now();
        let mut state = self.state();
        let Some(sid) = state.dialogs.get(dialog_id).cloned() else {
            return Ok(None);
        };
        // The entry lives as long as its call.
        Ok(state.live(&sid, now).map(|call| FoundCall {
            version: call.version,
            data: call.data.clone(),
            sid,
        }))
    }

    async fn next_cseq(&self, sid: &str, leg: &str, floor: u32) -> Result<u32, StoreError> {
        call_keys(sid)?;
        check_leg(leg)?;
        let mut state = self.state();
        state
            .live(sid, Instant::now())
            .ok_or_else(|| StoreError::NotFound(sid.to_owned()))?
            .next_cseq(sid, leg, floor)
    }

    async fn claim(&self, sid: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        call_keys(sid)?;
        check_owner(owner)?;
        let now = Instant::now();
        let mut state = self.state();
        Ok(state
            .live(sid, now)
            .is_some_and(|call| call.claim(owner, lease, now)))
    }

    async fn release(&self, sid: &str, owner: &str) -> Result<(), StoreError> {
        call_keys(sid)?;
        check_owner(owner)?;
        let mut state = self.state();
        if let Some(call) = state.live(sid, Instant::now()) {
            call.release(owner);
        }
        Ok(())
    }

    async fn due_timers(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut state = self.state();
        state.sweep(Instant::now());
        let mut due: Vec<(u64, &String)> = state
            .calls
            .iter()
            .filter_map(|(sid, c)| c.timer.filter(|t| *t <= now_ms).map(|t| (t, sid)))
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, sid)| sid.clone())
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{edge_call_id, new_call_sid};

    const SHORT: Duration = Duration::from_millis(40);
    const LONG: Duration = Duration::from_secs(3600);

    fn call(tag: &str) -> (String, String) {
        (new_call_sid(tag), edge_call_id(tag, "a", "h"))
    }

    #[tokio::test]
    async fn expired_calls_vanish_with_their_index_and_timer() {
        let store = MemoryCallStore::new();
        let (sid, dialog) = call("a1");
        let ops = [
            Op::IndexDialog {
                dialog_id: dialog.clone(),
            },
            Op::ScheduleTimer { due_ms: 5 },
        ];
        store.create(&sid, b"x", SHORT, &ops).await.expect("create");
        store.next_cseq(&sid, "a", 0).await.expect("cseq");
        assert_eq!(
            store.due_timers(10, 10).await.expect("due"),
            vec![sid.clone()]
        );
        tokio::time::sleep(SHORT * 2).await;
        assert_eq!(store.load(&sid).await.expect("load"), None);
        assert_eq!(store.find_call(&dialog).await.expect("find"), None);
        assert!(store.due_timers(10, 10).await.expect("due").is_empty());
        assert!(store.state().calls.is_empty(), "swept");
        assert!(
            store.state().dialogs.is_empty(),
            "index swept with the call"
        );
        assert!(matches!(
            store.commit(&sid, 1, b"y", LONG, &[]).await,
            Ok(Commit::Conflict { current: None })
        ));
    }

    #[tokio::test]
    async fn commit_sets_the_new_ttl() {
        let store = MemoryCallStore::new();
        let (sid, _) = call("a2");
        store.create(&sid, b"x", SHORT, &[]).await.expect("create");
        let c = store
            .commit(&sid, 1, b"y", LONG, &[])
            .await
            .expect("commit");
        assert_eq!(
            c,
            Commit::Committed {
                version: 2,
                cseqs: vec![]
            }
        );
        tokio::time::sleep(SHORT * 2).await;
        assert_eq!(
            store.load(&sid).await.expect("load"),
            Some((2, b"y".to_vec()))
        );
        // And back to short once the call has ended.
        store
            .commit(&sid, 2, b"z", SHORT, &[])
            .await
            .expect("commit");
        tokio::time::sleep(SHORT * 2).await;
        assert_eq!(store.load(&sid).await.expect("load"), None);
    }

    #[tokio::test]
    async fn an_expired_dialog_can_be_indexed_by_a_new_call() {
        let store = MemoryCallStore::new();
        let (old, dialog) = call("a3");
        let index = [Op::IndexDialog {
            dialog_id: dialog.clone(),
        }];
        store
            .create(&old, b"x", SHORT, &index)
            .await
            .expect("create");
        tokio::time::sleep(SHORT * 2).await;
        let (new, _) = call("a3");
        store
            .create(&new, b"x", LONG, &index)
            .await
            .expect("create");
        assert_eq!(
            store.find_call(&dialog).await.expect("find").map(|f| f.sid),
            Some(new)
        );
    }

    #[tokio::test]
    async fn leases_expire() {
        let store = MemoryCallStore::new();
        let (sid, _) = call("a4");
        store.create(&sid, b"x", LONG, &[]).await.expect("create");
        assert!(store.claim(&sid, "a", SHORT).await.expect("claim"));
        assert!(!store.claim(&sid, "b", SHORT).await.expect("claim"));
        tokio::time::sleep(SHORT * 2).await;
        assert!(store.claim(&sid, "b", SHORT).await.expect("claim"));
    }

    #[tokio::test]
    async fn cseq_saturates_instead_of_wrapping() {
        let store = MemoryCallStore::new();
        let (sid, _) = call("a5");
        store.create(&sid, b"x", LONG, &[]).await.expect("create");
        assert_eq!(
            store
                .next_cseq(&sid, "a", u32::MAX - 1)
                .await
                .expect("cseq"),
            u32::MAX
        );
        assert!(matches!(
            store.next_cseq(&sid, "a", 0).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
