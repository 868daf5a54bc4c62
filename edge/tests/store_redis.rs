//! The call store against a real redis-server spawned by each test, and the same
//! behaviour suite against the in-memory store.

mod store_suite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_edge::store::{
    AnyCallStore, CallStore, Commit, MemoryCallStore, Op, RedisCallStore, StoreError, edge_call_id,
    new_call_sid, tag_for_sip_call_id, tag_of_sid, timers_key,
};
use switchyard_tests::RedisServer;

use store_suite::{HOST, HOUR, eventually, fresh_tag};

fn redis_store(server: &RedisServer) -> RedisCallStore {
    let client = redis::Client::open(server.url()).expect("a valid URL");
    RedisCallStore::new(client, Duration::from_millis(500)).expect("a store")
}

macro_rules! run {
    (by_ref, $suite:path, $store:expr) => {{
        let store = $store;
        $suite(&store).await
    }};
    (shared, $suite:path, $store:expr) => {
        $suite(Arc::new($store)).await
    };
}

/// One test per suite function and backend: `memory::<name>` and `redis_backend::<name>`.
macro_rules! both_backends {
    ($($name:ident($kind:ident);)*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    run!($kind, store_suite::$name, MemoryCallStore::new());
                }
            )*
        }
        mod redis_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let server = RedisServer::start();
                    run!($kind, store_suite::$name, redis_store(&server));
                }
            )*
        }
    };
}

both_backends! {
    create_and_load(by_ref);
    create_twice_fails(by_ref);
    invalid_sids_are_refused(by_ref);
    commit_compare_and_set(by_ref);
    concurrent_commits_one_winner(shared);
    dialog_index(by_ref);
    dialog_of_another_tag_is_refused(by_ref);
    cseq_is_atomic(shared);
    lease(by_ref);
    timers(by_ref);
    ttl_expires_everything(by_ref);
    find_call_returns_the_call(by_ref);
    commit_carries_lease_and_cseq_ops(by_ref);
}

/// Every key in the server except the buckets' timer sets (shared by the calls of a
/// bucket).
fn call_keys_in(server: &RedisServer) -> Vec<String> {
    let mut con = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
    keys.into_iter()
        .filter(|k| !k.starts_with("sy:v2:timers:"))
        .collect()
}

#[tokio::test]
async fn ttl_removes_every_key_of_the_call() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    store_suite::short_lived_call(&store).await;
    let keys = call_keys_in(&server);
    // The hash (with its counters and lease inside) and the dialog index entry.
    assert_eq!(keys.len(), 2, "{keys:?}");
    {
        let mut con = server.connection();
        for key in &keys {
            let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).expect("PTTL");
            assert!(ttl > 0 && ttl <= 1_000, "{key} has TTL {ttl} ms");
        }
    }
    let gone = eventually(Duration::from_secs(3), || async {
        call_keys_in(&server).is_empty()
    })
    .await;
    assert!(gone, "keys left behind: {:?}", call_keys_in(&server));
}

/// A single-node Redis Cluster owning all 16384 slots: `CLUSTER KEYSLOT` needs cluster
/// mode (a plain server answers "cluster support disabled"), and in cluster mode Redis
/// itself refuses scripts whose keys span slots (CROSSSLOT).
struct ClusterNode {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl ClusterNode {
    fn start() -> Self {
        let port = switchyard_tests::redis_server::free_cluster_port();
        let dir =
            std::env::temp_dir().join(format!("switchyard-cluster-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes"])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let node = ClusterNode { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut con = loop {
            match node.client().get_connection() {
                Ok(con) => break con,
                Err(e) if Instant::now() > deadline => panic!("cluster node did not start: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut con)
            .expect("CLUSTER ADDSLOTSRANGE");
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut con)
                .expect("CLUSTER INFO");
            if info.contains("cluster_state:ok") {
                break node;
            }
            assert!(Instant::now() < deadline, "cluster never became ok: {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("a valid URL")
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn every_key_of_a_call_is_in_one_slot() {
    let node = ClusterNode::start();
    let store = RedisCallStore::new(node.client(), Duration::from_secs(1)).expect("store");
    // A foreign inbound Call-ID decides the tag; the edge's own legs embed it.
    let inbound = "3848276298220188511@atlanta.example.com";
    let tag = tag_for_sip_call_id(inbound);
    let sid = new_call_sid(&tag);
    let ops = [
        Op::IndexDialog {
            dialog_id: inbound.into(),
        },
        Op::IndexDialog {
            dialog_id: edge_call_id(&tag, "b", HOST),
        },
        Op::IndexDialog {
            // Braces in a Call-ID are legal SIP; the first {...} of the key wins.
            dialog_id: edge_call_id(&tag, "c", "{weird}.host"),
        },
        Op::ScheduleTimer { due_ms: 1 },
    ];
    store.create(&sid, b"x", HOUR, &ops).await.expect("create");
    store.next_cseq(&sid, "a", 0).await.expect("cseq");
    assert!(store.claim(&sid, "pod-a", HOUR).await.expect("claim"));
    let ops = [
        Op::NextCseq {
            leg: "b".into(),
            floor: 0,
        },
        Op::ScheduleTimer { due_ms: 2 },
    ];
    let committed = store
        .commit(&sid, 1, b"y", HOUR, &ops)
        .await
        .expect("commit");
    assert_eq!(
        committed,
        Commit::Committed {
            version: 2,
            cseqs: vec![1]
        }
    );
    assert_eq!(
        store.due_timers(10, 10).await.expect("due"),
        vec![sid.clone()]
    );

    let mut con = node.client().get_connection().expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
    // The hash, three dialog index keys and the bucket's timer set.
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(keys.contains(&timers_key(&tag)), "{keys:?}");
    let slot = |con: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(con)
            .expect("CLUSTER KEYSLOT")
    };
    let tag_slot = slot(&mut con, &tag);
    for key in &keys {
        assert_eq!(slot(&mut con, key), tag_slot, "{key}");
    }
}

/// Runs every operation once; returns the errors and the slowest operation's time.
async fn every_operation(store: &RedisCallStore, sid: &str) -> (Vec<StoreError>, Duration) {
    let mut errors = Vec::new();
    let mut slowest = Duration::ZERO;
    macro_rules! timed {
        ($e:expr) => {{
            let started = Instant::now();
            let result = $e.await;
            slowest = slowest.max(started.elapsed());
            if let Err(error) = result {
                errors.push(error);
            }
        }};
    }
    timed!(store.ping());
    timed!(store.load(sid));
    timed!(store.create(&new_call_sid(&fresh_tag()), b"x", HOUR, &[]));
    timed!(store.commit(sid, 1, b"y", HOUR, &[Op::ScheduleTimer { due_ms: 1 }]));
    timed!(store.find_call("x@y"));
    timed!(store.next_cseq(sid, "a", 0));
    timed!(store.claim(sid, "pod-a", HOUR));
    timed!(store.release(sid, "pod-a"));
    timed!(store.due_timers(10, 10));
    (errors, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_then_recovers() {
    let mut server = RedisServer::start();
    let store = redis_store(&server);
    let sid = new_call_sid(&fresh_tag());
    store.create(&sid, b"x", HOUR, &[]).await.expect("create");

    server.kill();
    let (errors, slowest) = every_operation(&store, &sid).await;
    assert_eq!(errors.len(), 9, "every operation fails: {errors:?}");
    for error in &errors {
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    }
    assert!(slowest < Duration::from_millis(2_500), "took {slowest:?}");

    // Back (empty, and without the scripts loaded): the same store object carries on.
    server.restart();
    let back = eventually(Duration::from_secs(10), || async {
        store.ping().await.is_ok()
    })
    .await;
    assert!(back, "the store did not reconnect");
    let sid = new_call_sid(&fresh_tag());
    store
        .create(&sid, b"again", HOUR, &[Op::ScheduleTimer { due_ms: 5 }])
        .await
        .expect("create after restart");
    assert_eq!(store.next_cseq(&sid, "a", 0).await.expect("cseq"), 1);
    assert!(store.claim(&sid, "pod-a", HOUR).await.expect("claim"));
    let (errors, _) = every_operation(&store, &sid).await;
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    // Nobody listens on this port: the lazy store starts anyway and reports Unavailable.
    let port = switchyard_tests::free_port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("URL");
    let store: AnyCallStore = RedisCallStore::new(client, Duration::from_millis(500))
        .expect("store")
        .into();
    let started = Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(2_500));
}

#[tokio::test]
async fn failures_are_counted() {
    let mut server = RedisServer::start();
    let store = redis_store(&server);
    server.kill();
    let errors = || {
        switchyard_edge::metrics::METRICS
            .store_errors
            .with_label_values(&["load"])
            .get()
    };
    let before = errors();
    assert!(store.load(&new_call_sid(&fresh_tag())).await.is_err());
    assert!(errors() > before);
    assert!(
        switchyard_edge::metrics::METRICS
            .render()
            .contains("switchyard_edge_store_errors_total{op=\"load\"}")
    );
}

#[tokio::test]
async fn timers_of_vanished_calls_are_dropped() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let tag = fresh_tag();
    let (kept, expiring) = (new_call_sid(&tag), new_call_sid(&tag));
    let timer = [Op::ScheduleTimer { due_ms: 100 }];
    store
        .create(&kept, b"x", HOUR, &timer)
        .await
        .expect("create");
    store
        .create(&expiring, b"x", Duration::from_millis(200), &timer)
        .await
        .expect("create");
    let members = || -> Vec<String> {
        let mut con = server.connection();
        redis::cmd("ZRANGE")
            .arg(timers_key(&tag))
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .expect("ZRANGE")
    };
    // A call that expired without cancelling its timer (its pod died, say), and members
    // that are not calls at all, are dropped by the poll that finds them due.
    let mut con = server.connection();
    let _: i64 = redis::cmd("ZADD")
        .arg(timers_key(&tag))
        .arg(1)
        .arg("garbage")
        .query(&mut con)
        .expect("ZADD");
    let gone = eventually(Duration::from_secs(3), || async {
        store.load(&expiring).await.expect("load").is_none()
    })
    .await;
    assert!(gone, "the call outlived its TTL");
    assert_eq!(members().len(), 3);
    assert_eq!(
        store.due_timers(600, 10).await.expect("due"),
        vec![kept.clone()]
    );
    assert_eq!(members(), vec![kept]);
}

/// Commands the server ran since the last reset, by name (`INFO commandstats`).
fn commands_run(con: &mut redis::Connection) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = stats.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect()
}

#[tokio::test]
async fn a_commit_is_one_script_whatever_its_ops() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let tag = fresh_tag();
    let sid = new_call_sid(&tag);
    // Warm up: the scripts are loaded on first use.
    store.create(&sid, b"x", HOUR, &[]).await.expect("create");
    store
        .commit(&sid, 1, b"x", HOUR, &[])
        .await
        .expect("commit");

    let mut con = server.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .expect("RESETSTAT");
    let ops = [
        Op::IndexDialog {
            dialog_id: edge_call_id(&tag, "b", HOST),
        },
        Op::ScheduleTimer { due_ms: 42 },
        Op::Claim {
            owner: "pod-a".into(),
            lease: HOUR,
        },
        Op::NextCseq {
            leg: "a".into(),
            floor: 0,
        },
    ];
    let committed = store
        .commit(&sid, 2, b"y", HOUR, &ops)
        .await
        .expect("commit");
    assert_eq!(
        committed,
        Commit::Committed {
            version: 3,
            cseqs: vec![1]
        }
    );
    let ran = commands_run(&mut con);
    // commandstats also counts the commands the script runs (its ZADD, HSETs, TIME...);
    // what the client sent is one EVALSHA: the compare happens inside it, nothing is
    // read before the write, and the timer, lease and CSeq are applied by the script.
    assert_eq!(ran.get("evalsha"), Some(&1), "{ran:?}");
    assert_eq!(ran.get("zadd"), Some(&1), "{ran:?}");
    for absent in ["hmget", "eval", "script|load", "multi", "ping"] {
        assert!(!ran.contains_key(absent), "{absent}: {ran:?}");
    }
}

/// The store operations of a basic call, as the call flow makes them: set-up (create,
/// the Dial with its timer and lease, the answer), then a BYE (find the call, end it
/// with the CSeq of the BYE to send): five round trips, one script each.
#[tokio::test]
async fn a_basic_call_costs_five_scripts() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let inbound = "a84b4c76e66710@pc33.atlanta.test tag-a";
    let tag = tag_for_sip_call_id(inbound);
    let sid = new_call_sid(&tag);
    let outbound = switchyard_edge::store::dialog_id(&edge_call_id(&tag, "b1", HOST), "tag-b");
    // Warm up the scripts (loaded once per server).
    let warm = new_call_sid(&tag);
    store.create(&warm, b"w", HOUR, &[]).await.expect("create");
    let _ = store.find_call(inbound).await.expect("find");

    let mut con = server.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut con)
        .expect("RESETSTAT");
    let index = |id: &str| Op::IndexDialog {
        dialog_id: id.into(),
    };
    store
        .create(&sid, b"setup", HOUR, &[index(inbound)])
        .await
        .expect("create");
    let dialling = [
        index(&outbound),
        Op::ScheduleTimer { due_ms: 1 },
        Op::Claim {
            owner: "pod-a".into(),
            lease: HOUR,
        },
    ];
    store
        .commit(&sid, 1, b"dialling", HOUR, &dialling)
        .await
        .expect("commit");
    let answered = [
        Op::CancelTimer,
        Op::Release {
            owner: "pod-a".into(),
        },
    ];
    store
        .commit(&sid, 2, b"answered", HOUR, &answered)
        .await
        .expect("commit");
    let found = store
        .find_call(inbound)
        .await
        .expect("find")
        .expect("the call");
    assert_eq!(
        (found.version, found.data.as_slice()),
        (3, &b"answered"[..])
    );
    let ending = [
        Op::ForgetDialog {
            dialog_id: inbound.into(),
        },
        Op::ForgetDialog {
            dialog_id: outbound.clone(),
        },
        Op::CancelTimer,
        Op::NextCseq {
            leg: "b1".into(),
            floor: 1,
        },
    ];
    let ended = store
        .commit(&sid, found.version, b"ended", HOUR, &ending)
        .await
        .expect("commit");
    assert_eq!(
        ended,
        Commit::Committed {
            version: 4,
            cseqs: vec![2]
        }
    );
    let ran = commands_run(&mut con);
    // (The HMGET counted is the find script's own.)
    assert_eq!(ran.get("evalsha"), Some(&5), "{ran:?}");
    assert_eq!(ran.get("hmget"), Some(&1), "{ran:?}");
    for absent in ["eval", "script|load", "ping", "multi"] {
        assert!(!ran.contains_key(absent), "{absent}: {ran:?}");
    }
    assert_eq!(tag_of_sid(&sid), Some(tag.as_str()));
}

fn signal(node: &ClusterNode, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(node.child.id().to_string())
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill -{signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_times_out_then_recovers() {
    // A Redis that accepts bytes but never answers (stopped, swapping, partitioned after
    // the handshake) is what only a timeout catches.
    let node = ClusterNode::start();
    let store = RedisCallStore::new(node.client(), Duration::from_millis(500)).expect("store");
    let sid = new_call_sid(&fresh_tag());
    store.create(&sid, b"x", HOUR, &[]).await.expect("create");

    signal(&node, "STOP");
    let started = Instant::now();
    let load = store.load(&sid).await;
    let load_took = started.elapsed();
    let started = Instant::now();
    let commit = store.commit(&sid, 1, b"y", HOUR, &[]).await;
    let commit_took = started.elapsed();
    signal(&node, "CONT");
    assert!(matches!(load, Err(StoreError::Unavailable(_))), "{load:?}");
    assert!(
        matches!(commit, Err(StoreError::Unavailable(_))),
        "{commit:?}"
    );
    for took in [load_took, commit_took] {
        assert!(took >= Duration::from_millis(400), "answered in {took:?}?");
        assert!(took < Duration::from_millis(2_500), "took {took:?}");
    }

    // The commit sent while Redis was stopped may still run once it resumes: the
    // caller reloads to find out, as the docs say.
    let back = eventually(Duration::from_secs(10), || async {
        store.load(&sid).await.is_ok()
    })
    .await;
    assert!(back, "the store did not recover");
    let (version, _) = store.load(&sid).await.expect("load").expect("the call");
    assert!(version == 1 || version == 2, "{version}");
}
