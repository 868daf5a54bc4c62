//! The behaviour every `CallStore` backend must show, as generic async functions run
//! against the memory store and a real redis-server (`store_redis.rs`).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_edge::store::{
    BUCKETS, CallStore, Commit, FoundCall, Op, StoreError, bucket_tag, edge_call_id, new_call_sid,
    tag_for_sip_call_id,
};

pub const HOUR: Duration = Duration::from_secs(3600);
pub const HOST: &str = "edge.test";

/// A fresh random tag, as the edge makes one for a new inbound Call-ID.
pub fn fresh_tag() -> String {
    tag_for_sip_call_id(&format!("{}@caller.test", new_call_sid("00")))
}

/// A bucket other than `tag`'s.
pub fn other_tag(tag: &str) -> String {
    let bucket = u64::from_str_radix(tag, 16).expect("a hex tag");
    bucket_tag((bucket + 1) % BUCKETS)
}

/// The sid of the call a dialog belongs to.
pub async fn owner_of<S: CallStore>(store: &S, dialog_id: &str) -> Option<String> {
    store
        .find_call(dialog_id)
        .await
        .expect("find_call")
        .map(|found| found.sid)
}

/// Polls `check` until it returns true or `within` passes; returns whether it did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn create_and_load<S: CallStore>(store: &S) {
    let sid = new_call_sid(&fresh_tag());
    assert_eq!(store.load(&sid).await.expect("load"), None);
    store
        .create(&sid, b"{\"state\":\"ringing\"}", HOUR, &[])
        .await
        .expect("create");
    assert_eq!(
        store.load(&sid).await.expect("load"),
        Some((1, b"{\"state\":\"ringing\"}".to_vec()))
    );
    // Binary data survives untouched (the store does not look inside).
    let other = new_call_sid(&fresh_tag());
    let bytes: Vec<u8> = (0..=255).collect();
    store
        .create(&other, &bytes, HOUR, &[])
        .await
        .expect("create");
    assert_eq!(store.load(&other).await.expect("load"), Some((1, bytes)));
}

pub async fn create_twice_fails<S: CallStore>(store: &S) {
    let sid = new_call_sid(&fresh_tag());
    store
        .create(&sid, b"first", HOUR, &[])
        .await
        .expect("create");
    let again = store.create(&sid, b"second", HOUR, &[]).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(ref s)) if *s == sid),
        "{again:?}"
    );
    assert_eq!(
        store.load(&sid).await.expect("load"),
        Some((1, b"first".to_vec()))
    );
}

pub async fn invalid_sids_are_refused<S: CallStore>(store: &S) {
    for sid in ["", "CA", "not-a-sid", "CA0123456789ABCDEF0123456789ABCDEF"] {
        assert!(
            matches!(store.load(sid).await, Err(StoreError::InvalidKey(_))),
            "{sid}"
        );
        assert!(matches!(
            store.create(sid, b"x", HOUR, &[]).await,
            Err(StoreError::InvalidKey(_))
        ));
    }
}

pub async fn commit_compare_and_set<S: CallStore>(store: &S) {
    let tag = fresh_tag();
    let sid = new_call_sid(&tag);
    store.create(&sid, b"v1", HOUR, &[]).await.expect("create");

    let done = store
        .commit(&sid, 1, b"v2", HOUR, &[])
        .await
        .expect("commit");
    assert_eq!(
        done,
        Commit::Committed {
            version: 2,
            cseqs: vec![]
        }
    );
    assert_eq!(
        store.load(&sid).await.expect("load"),
        Some((2, b"v2".to_vec()))
    );

    // A stale writer learns what is there now, and its ops do not happen.
    let dialog = edge_call_id(&tag, "b", HOST);
    let stale = store
        .commit(
            &sid,
            1,
            b"stale",
            HOUR,
            &[
                Op::IndexDialog {
                    dialog_id: dialog.clone(),
                },
                Op::ScheduleTimer { due_ms: 1_000 },
            ],
        )
        .await
        .expect("commit");
    assert_eq!(
        stale,
        Commit::Conflict {
            current: Some((2, b"v2".to_vec()))
        }
    );
    assert_eq!(
        store.load(&sid).await.expect("load"),
        Some((2, b"v2".to_vec()))
    );
    assert_eq!(owner_of(store, &dialog).await, None);
    assert!(
        !store
            .due_timers(10_000, 100)
            .await
            .expect("due")
            .contains(&sid),
        "a conflicting commit's timer must not fire"
    );

    // A writer from the future conflicts too.
    assert!(matches!(
        store
            .commit(&sid, 7, b"x", HOUR, &[])
            .await
            .expect("commit"),
        Commit::Conflict {
            current: Some((2, _))
        }
    ));
    // Committing to a call that does not exist: nothing to compare with.
    let missing = new_call_sid(&tag);
    assert_eq!(
        store
            .commit(&missing, 1, b"x", HOUR, &[])
            .await
            .expect("commit"),
        Commit::Conflict { current: None }
    );
    assert_eq!(store.load(&missing).await.expect("load"), None);
}

pub async fn concurrent_commits_one_winner<S: CallStore>(store: Arc<S>) {
    for round in 0..50 {
        let sid = new_call_sid(&fresh_tag());
        store
            .create(&sid, b"start", HOUR, &[])
            .await
            .expect("create");
        let tasks: Vec<_> = (0..2)
            .map(|writer| {
                let store = store.clone();
                let sid = sid.clone();
                tokio::spawn(async move {
                    let data = format!("writer {writer}");
                    let outcome = store
                        .commit(&sid, 1, data.as_bytes(), HOUR, &[])
                        .await
                        .expect("commit");
                    (data, outcome)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (data, outcome) = task.await.expect("task");
            match outcome {
                Commit::Committed { version, .. } => {
                    assert_eq!(version, 2);
                    winners.push(data);
                }
                Commit::Conflict { current } => {
                    let (version, _) = current.expect("the call exists");
                    assert_eq!(version, 2);
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            store.load(&sid).await.expect("load"),
            Some((2, winners[0].clone().into_bytes()))
        );
    }
}

pub async fn dialog_index<S: CallStore>(store: &S) {
    // An inbound leg with a foreign Call-ID: the call's tag comes from that Call-ID.
    let inbound = "a84b4c76e66710@pc33.atlanta.test";
    let tag = tag_for_sip_call_id(inbound);
    let sid = new_call_sid(&tag);
    let outbound = edge_call_id(&tag, "b", HOST);
    store
        .create(
            &sid,
            b"call",
            HOUR,
            &[Op::IndexDialog {
                dialog_id: inbound.into(),
            }],
        )
        .await
        .expect("create");
    assert_eq!(owner_of(store, inbound).await, Some(sid.clone()));
    assert_eq!(owner_of(store, &outbound).await, None);

    let v = store
        .commit(
            &sid,
            1,
            b"dialled",
            HOUR,
            &[Op::IndexDialog {
                dialog_id: outbound.clone(),
            }],
        )
        .await
        .expect("commit");
    assert_eq!(
        v,
        Commit::Committed {
            version: 2,
            cseqs: vec![]
        }
    );
    assert_eq!(owner_of(store, &outbound).await, Some(sid.clone()));

    let v = store
        .commit(
            &sid,
            2,
            b"bob gone",
            HOUR,
            &[Op::ForgetDialog {
                dialog_id: outbound.clone(),
            }],
        )
        .await
        .expect("commit");
    assert_eq!(
        v,
        Commit::Committed {
            version: 3,
            cseqs: vec![]
        }
    );
    assert_eq!(owner_of(store, &outbound).await, None);
    assert_eq!(owner_of(store, inbound).await, Some(sid.clone()));

    // Another call in the same slot cannot take a dialog that is indexed: all or nothing.
    let thief = new_call_sid(&tag);
    let taken = store
        .create(
            &thief,
            b"thief",
            HOUR,
            &[Op::IndexDialog {
                dialog_id: inbound.into(),
            }],
        )
        .await;
    assert!(
        matches!(taken, Err(StoreError::DialogInUse(ref id)) if id == inbound),
        "{taken:?}"
    );
    assert_eq!(store.load(&thief).await.expect("load"), None);
    assert_eq!(owner_of(store, inbound).await, Some(sid.clone()));

    // Forgetting a dialog of another call leaves it alone.
    store
        .create(&thief, b"thief", HOUR, &[])
        .await
        .expect("create");
    store
        .commit(
            &thief,
            1,
            b"thief",
            HOUR,
            &[Op::ForgetDialog {
                dialog_id: inbound.into(),
            }],
        )
        .await
        .expect("commit");
    assert_eq!(owner_of(store, inbound).await, Some(sid));
}

pub async fn dialog_of_another_tag_is_refused<S: CallStore>(store: &S) {
    let tag = fresh_tag();
    let sid = new_call_sid(&tag);
    let foreign = edge_call_id(&other_tag(&tag), "b", HOST);
    for ops in [
        vec![Op::IndexDialog {
            dialog_id: foreign.clone(),
        }],
        vec![
            Op::ScheduleTimer { due_ms: 5 },
            Op::ForgetDialog {
                dialog_id: format!("sy{}-x@host", other_tag(&tag)),
            },
        ],
        vec![Op::IndexDialog {
            dialog_id: String::new(),
        }],
        vec![Op::NextCseq {
            leg: String::new(),
            floor: 0,
        }],
        vec![Op::Claim {
            owner: String::new(),
            lease: HOUR,
        }],
    ] {
        let refused = store.create(&sid, b"x", HOUR, &ops).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidKey(_))),
            "{refused:?}"
        );
    }
    assert_eq!(store.load(&sid).await.expect("load"), None);

    store.create(&sid, b"x", HOUR, &[]).await.expect("create");
    let refused = store
        .commit(
            &sid,
            1,
            b"y",
            HOUR,
            &[
                Op::ScheduleTimer { due_ms: 5 },
                Op::IndexDialog {
                    dialog_id: foreign.clone(),
                },
            ],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidKey(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.load(&sid).await.expect("load"),
        Some((1, b"x".to_vec()))
    );
    assert!(!store.due_timers(10, 100).await.expect("due").contains(&sid));
    assert_eq!(owner_of(store, &foreign).await, None);
}

pub async fn cseq_is_atomic<S: CallStore>(store: Arc<S>) {
    let sid = new_call_sid(&fresh_tag());
    assert!(matches!(
        store.next_cseq(&sid, "a", 0).await,
        Err(StoreError::NotFound(_))
    ));
    store.create(&sid, b"x", HOUR, &[]).await.expect("create");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let sid = sid.clone();
            tokio::spawn(async move { store.next_cseq(&sid, "a", 0).await.expect("cseq") })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        assert!(numbers.insert(task.await.expect("task")), "duplicate CSeq");
    }
    assert_eq!(numbers, (1..=100).collect::<BTreeSet<u32>>());

    // Legs count separately; `floor` lifts a counter, never lowers it.
    assert_eq!(store.next_cseq(&sid, "b", 0).await.expect("cseq"), 1);
    assert_eq!(store.next_cseq(&sid, "b", 500).await.expect("cseq"), 501);
    assert_eq!(store.next_cseq(&sid, "b", 0).await.expect("cseq"), 502);
    assert_eq!(store.next_cseq(&sid, "b", 10).await.expect("cseq"), 503);
    assert_eq!(store.next_cseq(&sid, "c", 41).await.expect("cseq"), 42);
    assert_eq!(store.next_cseq(&sid, "a", 0).await.expect("cseq"), 101);
    assert!(matches!(
        store.next_cseq(&sid, "", 0).await,
        Err(StoreError::InvalidKey(_))
    ));
}

pub async fn lease<S: CallStore>(store: &S) {
    let sid = new_call_sid(&fresh_tag());
    let short = Duration::from_millis(300);
    // No call, no lease: it would outlive nothing.
    assert!(!store.claim(&sid, "pod-a", short).await.expect("claim"));
    store.create(&sid, b"x", HOUR, &[]).await.expect("create");
    assert!(store.claim(&sid, "pod-a", short).await.expect("claim"));
    assert!(!store.claim(&sid, "pod-b", short).await.expect("claim"));
    // Renewal by the holder.
    assert!(store.claim(&sid, "pod-a", short).await.expect("claim"));
    // Releasing someone else's lease does nothing.
    store.release(&sid, "pod-b").await.expect("release");
    assert!(!store.claim(&sid, "pod-b", short).await.expect("claim"));
    // pod-a dies: once its lease expires, pod-b takes over.
    let stolen = eventually(Duration::from_secs(3), || async {
        store.claim(&sid, "pod-b", HOUR).await.expect("claim")
    })
    .await;
    assert!(stolen, "the lease never expired");
    assert!(!store.claim(&sid, "pod-a", short).await.expect("claim"));
    // Released: free for anyone at once.
    store.release(&sid, "pod-b").await.expect("release");
    assert!(store.claim(&sid, "pod-a", short).await.expect("claim"));
}

pub async fn timers<S: CallStore>(store: &S) {
    // The clock is the caller's: due times are plain numbers here.
    let base = 1_700_000_000_000u64;
    let mut sids = Vec::new();
    for offset in [30_000, 10_000, 20_000] {
        let sid = new_call_sid(&fresh_tag());
        store
            .create(
                &sid,
                b"x",
                HOUR,
                &[Op::ScheduleTimer {
                    due_ms: base + offset,
                }],
            )
            .await
            .expect("create");
        sids.push(sid);
    }
    let (at30, at10, at20) = (&sids[0], &sids[1], &sids[2]);
    assert!(
        store
            .due_timers(base + 5_000, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        store.due_timers(base + 25_000, 10).await.expect("due"),
        vec![at10.clone(), at20.clone()]
    );
    // Still due until a commit deals with it: a pod that crashed mid-way loses nothing.
    assert_eq!(
        store.due_timers(base + 25_000, 1).await.expect("due"),
        vec![at10.clone()]
    );
    assert_eq!(
        store.due_timers(base + 40_000, 10).await.expect("due"),
        vec![at10.clone(), at20.clone(), at30.clone()]
    );

    // Cancel one; reschedule one later and one earlier.
    let c = store
        .commit(at10, 1, b"x", HOUR, &[Op::CancelTimer])
        .await
        .expect("commit");
    assert_eq!(
        c,
        Commit::Committed {
            version: 2,
            cseqs: vec![]
        }
    );
    store
        .commit(
            at20,
            1,
            b"x",
            HOUR,
            &[Op::ScheduleTimer {
                due_ms: base + 50_000,
            }],
        )
        .await
        .expect("commit");
    store
        .commit(
            at30,
            1,
            b"x",
            HOUR,
            &[Op::ScheduleTimer {
                due_ms: base + 1_000,
            }],
        )
        .await
        .expect("commit");
    assert_eq!(
        store.due_timers(base + 25_000, 10).await.expect("due"),
        vec![at30.clone()]
    );
    assert_eq!(
        store.due_timers(base + 60_000, 10).await.expect("due"),
        vec![at30.clone(), at20.clone()]
    );
    // A cancelled timer can be scheduled again.
    store
        .commit(
            at10,
            2,
            b"x",
            HOUR,
            &[Op::ScheduleTimer {
                due_ms: base + 2_000,
            }],
        )
        .await
        .expect("commit");
    assert_eq!(
        store.due_timers(base + 60_000, 10).await.expect("due"),
        vec![at30.clone(), at10.clone(), at20.clone()]
    );
    assert!(
        store
            .due_timers(base + 60_000, 0)
            .await
            .expect("due")
            .is_empty()
    );
}

/// Creates a call with every kind of side key and a 1 s TTL; returns its sid and
/// dialog Call-ID.
pub async fn short_lived_call<S: CallStore>(store: &S) -> (String, String) {
    let tag = fresh_tag();
    let sid = new_call_sid(&tag);
    let dialog = edge_call_id(&tag, "a", HOST);
    store
        .create(
            &sid,
            b"x",
            HOUR,
            &[Op::IndexDialog {
                dialog_id: dialog.clone(),
            }],
        )
        .await
        .expect("create");
    store.next_cseq(&sid, "a", 0).await.expect("cseq");
    store.next_cseq(&sid, "b", 0).await.expect("cseq");
    assert!(store.claim(&sid, "pod-a", HOUR).await.expect("claim"));
    // Ended: the call flow commits it with a short TTL, which applies to the hash and to
    // the index entries the commit names (every commit names its call's legs).
    let keep = [Op::KeepDialog {
        dialog_id: dialog.clone(),
    }];
    let ended = store
        .commit(&sid, 1, b"ended", Duration::from_secs(1), &keep)
        .await
        .expect("commit");
    assert_eq!(
        ended,
        Commit::Committed {
            version: 2,
            cseqs: vec![]
        }
    );
    (sid, dialog)
}

pub async fn ttl_expires_everything<S: CallStore>(store: &S) {
    let (sid, dialog) = short_lived_call(store).await;
    assert!(store.load(&sid).await.expect("load").is_some());
    let gone = eventually(Duration::from_secs(3), || async {
        store.load(&sid).await.expect("load").is_none()
    })
    .await;
    assert!(gone, "the call outlived its TTL");
    assert_eq!(owner_of(store, &dialog).await, None);
    assert!(matches!(
        store.next_cseq(&sid, "a", 0).await,
        Err(StoreError::NotFound(_))
    ));
    // The sid can be used again from scratch (nothing of the old call is left).
    store.create(&sid, b"new", HOUR, &[]).await.expect("create");
    assert_eq!(store.next_cseq(&sid, "a", 0).await.expect("cseq"), 1);
    assert!(
        store
            .claim(&sid, "pod-b", HOUR)
            .await
            .expect("the lease expired too")
    );
}

/// A call found through its dialog comes with its version and data, in one step.
pub async fn find_call_returns_the_call<S: CallStore>(store: &S) {
    let tag = fresh_tag();
    let sid = new_call_sid(&tag);
    let dialog = edge_call_id(&tag, "a", HOST);
    assert_eq!(store.find_call(&dialog).await.expect("find"), None);
    let index = [Op::IndexDialog {
        dialog_id: dialog.clone(),
    }];
    store
        .create(&sid, b"one", HOUR, &index)
        .await
        .expect("create");
    store
        .commit(&sid, 1, b"two", HOUR, &[])
        .await
        .expect("commit");
    assert_eq!(
        store.find_call(&dialog).await.expect("find"),
        Some(FoundCall {
            sid: sid.clone(),
            version: 2,
            data: b"two".to_vec()
        })
    );
    assert!(matches!(
        store.find_call("").await,
        Err(StoreError::InvalidKey(_))
    ));
}

/// Leases and CSeqs ride along with a commit, so a transition costs one round trip.
pub async fn commit_carries_lease_and_cseq_ops<S: CallStore>(store: &S) {
    let sid = new_call_sid(&fresh_tag());
    store.create(&sid, b"x", HOUR, &[]).await.expect("create");
    let claim = |owner: &str| Op::Claim {
        owner: owner.into(),
        lease: HOUR,
    };
    let cseq = |leg: &str, floor| Op::NextCseq {
        leg: leg.into(),
        floor,
    };
    let c = store
        .commit(
            &sid,
            1,
            b"x",
            HOUR,
            &[claim("pod-a"), cseq("a", 0), cseq("b", 7)],
        )
        .await
        .expect("commit");
    assert_eq!(
        c,
        Commit::Committed {
            version: 2,
            cseqs: vec![1, 8]
        }
    );
    // The lease taken in the commit is pod-a's: pod-b's claim, standalone or in a
    // commit, does not take it (and does not stop that commit).
    assert!(!store.claim(&sid, "pod-b", HOUR).await.expect("claim"));
    let c = store
        .commit(&sid, 2, b"x", HOUR, &[claim("pod-b"), cseq("a", 0)])
        .await
        .expect("commit");
    assert_eq!(
        c,
        Commit::Committed {
            version: 3,
            cseqs: vec![2]
        }
    );
    assert!(!store.claim(&sid, "pod-b", HOUR).await.expect("claim"));
    // Standalone and in-commit counters are one counter.
    assert_eq!(store.next_cseq(&sid, "b", 0).await.expect("cseq"), 9);
    // Released in a commit (only by its holder): free for pod-b.
    let release = |owner: &str| Op::Release {
        owner: owner.into(),
    };
    store
        .commit(&sid, 3, b"x", HOUR, &[release("pod-b")])
        .await
        .expect("commit");
    assert!(!store.claim(&sid, "pod-b", HOUR).await.expect("claim"));
    store
        .commit(&sid, 4, b"x", HOUR, &[release("pod-a")])
        .await
        .expect("commit");
    assert!(store.claim(&sid, "pod-b", HOUR).await.expect("claim"));
    // A conflicting commit allocates nothing.
    let stale = store
        .commit(&sid, 1, b"x", HOUR, &[cseq("a", 0)])
        .await
        .expect("commit");
    assert!(matches!(stale, Commit::Conflict { .. }), "{stale:?}");
    assert_eq!(store.next_cseq(&sid, "a", 0).await.expect("cseq"), 3);
}
