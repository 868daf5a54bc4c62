//! The Redis routing table against a real `redis-server`: the contract the operator writes
//! and every edge reads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use switchyard_routing::redis_table::{CHANGES_CHANNEL, GENERATION_KEY};
use switchyard_routing::{
    AppUrl, CacheOptions, CachedRoutes, HttpMethod, MemoryRoutes, Owner, RedisRoutes, Route,
    RouteKey, RouteLookup, RouteWriter, TableVersion,
};
use switchyard_tests::RedisServer;
use tokio::sync::watch;

fn route(key: RouteKey, owner: &str, app: &str) -> Route {
    Route {
        key,
        owner: Owner(owner.into()),
        priority: 0,
        friendly_name: None,
        voice: AppUrl {
            url: format!("http://apps.example/{app}.xml"),
            method: HttpMethod::Post,
        },
        voice_fallback: None,
        refer: Some(AppUrl {
            url: "http://apps.example/refer.xml".into(),
            method: HttpMethod::Get,
        }),
        status_callback: None,
        refer_target_allow: Vec::new(),
    }
}

fn number(n: &str, owner: &str) -> Route {
    route(RouteKey::Number(n.into()), owner, owner)
}

fn pattern(p: &str, owner: &str, priority: i32) -> Route {
    Route {
        priority,
        ..route(RouteKey::Pattern(p.into()), owner, owner)
    }
}

fn fast_cache() -> CacheOptions {
    CacheOptions {
        poll_interval: Duration::from_millis(200),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    }
}

/// Waits (bounded) until the cache holds a version satisfying `ready`.
async fn wait_for(
    versions: &mut watch::Receiver<Option<TableVersion>>,
    ready: impl Fn(&TableVersion) -> bool,
) -> TableVersion {
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        versions.wait_for(|v| v.as_ref().is_some_and(&ready)),
    )
    .await;
    match waited {
        Ok(Ok(version)) => version.clone().unwrap_or_default(),
        _ => panic!("the route cache did not reach the expected version in 10 s"),
    }
}

fn sorted(mut routes: Vec<Route>) -> Vec<Route> {
    routes.sort_by(|a, b| a.key.cmp(&b.key));
    routes
}

#[tokio::test]
async fn routes_round_trip_through_redis() {
    let redis = RedisServer::start();
    let store = RedisRoutes::open(&redis.url()).unwrap();
    assert_eq!(
        store.version().await.unwrap(),
        None,
        "a fresh Redis has no table"
    );

    let a = number("+15551230001", "telephony/number-a");
    let b = pattern("1555.*", "telephony/pattern-b", 3);
    store.upsert(&a).await.unwrap();
    store.upsert(&b).await.unwrap();

    let (version, routes) = store.load().await.unwrap();
    assert_eq!(version.map(|v| v.generation), Some(2));
    assert_eq!(sorted(routes), sorted(vec![a.clone(), b.clone()]));

    assert!(store.remove(&b.owner).await.unwrap());
    assert!(
        !store.remove(&b.owner).await.unwrap(),
        "removing twice removes nothing"
    );
    let (_, routes) = store.load().await.unwrap();
    assert_eq!(routes, vec![a]);
}

/// The ownership rules, run against both backends: they must agree.
async fn ownership_rules<W: RouteWriter>(store: &W, read: impl AsyncFn() -> Vec<Route>) {
    let a = number("100", "ns/a");
    store.upsert(&a).await.unwrap();

    // The resource's number changed: its old route goes in the same step.
    let a_moved = number("101", "ns/a");
    store.upsert(&a_moved).await.unwrap();
    assert_eq!(read().await, vec![a_moved.clone()]);

    // Another resource took over number 101 (the operator decided it may): when the old
    // owner is deleted, the route the new owner holds stays.
    let b = number("101", "ns/b");
    store.upsert(&b).await.unwrap();
    assert!(!store.remove(&Owner("ns/a".into())).await.unwrap());
    assert_eq!(read().await, vec![b.clone()]);

    // Replacing the table leaves exactly the new set.
    let c = pattern("2.*", "ns/c", 0);
    store.replace_all(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(read().await, vec![c]);
    store.replace_all(&[]).await.unwrap();
    assert_eq!(read().await, vec![]);
}

#[tokio::test]
async fn ownership_rules_hold_in_redis_and_in_memory() {
    let redis = RedisServer::start();
    let store = RedisRoutes::open(&redis.url()).unwrap();
    ownership_rules(&store, async || sorted(store.load().await.unwrap().1)).await;

    let memory = MemoryRoutes::default();
    ownership_rules(&memory, async || {
        sorted(
            memory
                .snapshot()
                .routes()
                .iter()
                .map(|r| (**r).clone())
                .collect(),
        )
    })
    .await;
}

#[tokio::test]
async fn cached_lookup_follows_the_order_numbers_then_patterns() {
    let redis = RedisServer::start();
    let store = RedisRoutes::open(&redis.url()).unwrap();
    store
        .replace_all(&[
            number("+15551230001", "ns/exact-plus"),
            number("15551230002", "ns/exact-bare"),
            pattern("1555.*", "ns/long", 0),
            pattern("1.*", "ns/short", 0),
            pattern("1666.*", "ns/urgent", 10),
            pattern("1.{3}6.*", "ns/low", -1),
        ])
        .await
        .unwrap();

    let (cache, task) = CachedRoutes::follow(store.clone(), fast_cache());
    wait_for(&mut cache.versions(), |_| true).await;
    let owner = |n: &str| cache.lookup(n).map(|r| r.owner.0.clone());
    assert_eq!(owner("15551230001").as_deref(), Some("ns/exact-plus"));
    assert_eq!(owner("+15551230002").as_deref(), Some("ns/exact-bare"));
    assert_eq!(owner("15551230003").as_deref(), Some("ns/long"));
    assert_eq!(owner("16661230003").as_deref(), Some("ns/urgent"));
    assert_eq!(owner("17776").as_deref(), Some("ns/short"));
    assert_eq!(owner("2000"), None);
    task.abort();
}

#[tokio::test]
async fn a_change_notification_reaches_subscribers() {
    let redis = RedisServer::start();
    let store = RedisRoutes::open(&redis.url()).unwrap();
    store.replace_all(&[number("100", "ns/a")]).await.unwrap();

    // A raw subscriber sees the announced version...
    let mut pubsub = store.target().subscriber(0).await.unwrap();
    pubsub.subscribe(CHANGES_CHANNEL).await.unwrap();

    // ...and an edge's cache picks up the change without polling (poll far away).
    let options = CacheOptions {
        poll_interval: Duration::from_secs(3600),
        ..fast_cache()
    };
    let (cache, task) = CachedRoutes::follow(store.clone(), options);
    let mut versions = cache.versions();
    let first = wait_for(&mut versions, |_| true).await;
    assert!(cache.lookup("200").is_none());

    store.upsert(&number("200", "ns/b")).await.unwrap();
    let announced: String =
        tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .expect("a change notification within 5 s")
            .expect("the subscription is open")
            .get_payload()
            .unwrap();
    assert_eq!(
        announced,
        format!("{}:{}", first.epoch, first.generation + 1)
    );

    let second = wait_for(&mut versions, |v| v.generation > first.generation).await;
    assert_eq!(second.epoch, first.epoch);
    assert_eq!(
        cache.lookup("200").map(|r| r.owner.0.clone()).as_deref(),
        Some("ns/b")
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_is_atomic_for_concurrent_readers() {
    let redis = RedisServer::start();
    let store = RedisRoutes::open(&redis.url()).unwrap();
    // Two tables, large enough that the staging copy takes several batches to write.
    let table = |tag: &str, count: usize| -> Vec<Route> {
        (0..count)
            .map(|i| {
                route(
                    RouteKey::Number(format!("{i}")),
                    &format!("ns/{tag}-{i}"),
                    tag,
                )
            })
            .collect()
    };
    let blue = table("blue", 1_500);
    let green = table("green", 1_200);
    store.replace_all(&blue).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut loads = 0usize;
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let (_, routes) = store.load().await.unwrap();
                let apps: BTreeSet<String> = routes.iter().map(|r| r.voice.url.clone()).collect();
                assert_eq!(apps.len(), 1, "a reader saw a mixed table: {apps:?}");
                let expected = if apps.iter().any(|a| a.contains("blue")) {
                    1_500
                } else {
                    1_200
                };
                assert_eq!(routes.len(), expected, "a reader saw a partial table");
                seen.extend(apps);
                loads += 1;
            }
            (loads, seen)
        })
    };
    for round in 0..10 {
        let next = if round % 2 == 0 { &green } else { &blue };
        store.replace_all(next).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (loads, seen) = reader.await.unwrap();
    assert!(loads > 0);
    assert_eq!(
        seen.len(),
        2,
        "the reader should have seen both tables over 10 syncs"
    );
    assert_eq!(store.load().await.unwrap().1.len(), 1_500);

    // No staging copy outlives its sync.
    let mut con = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sy:v1:*staging*")
        .query(&mut con)
        .unwrap();
    assert!(keys.is_empty(), "leftover staging keys: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_by_themselves_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let store = RedisRoutes::open(&redis.url()).unwrap();
    store.replace_all(&[number("100", "ns/a")]).await.unwrap();
    let (cache, task) = CachedRoutes::follow(store.clone(), fast_cache());
    let mut versions = cache.versions();
    let before = wait_for(&mut versions, |_| true).await;

    redis.kill();
    let failed = tokio::time::timeout(
        Duration::from_secs(10),
        store.upsert(&number("200", "ns/b")),
    )
    .await
    .expect("a write with Redis down fails within its timeout instead of hanging");
    assert!(failed.is_err(), "a write with Redis down must fail");
    // Meanwhile lookups keep answering from the last snapshot.
    assert!(cache.lookup("100").is_some());

    redis.restart();
    // Redis came back empty: the table is absent until a writer rebuilds it, and the edge
    // keeps serving its last snapshot.
    let version = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(v) = store.version().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the same client works again after Redis restarts");
    assert_eq!(version, None);
    assert!(cache.lookup("100").is_some());

    store.replace_all(&[number("300", "ns/c")]).await.unwrap();
    let after = wait_for(&mut versions, |v| v.epoch != before.epoch).await;
    assert_ne!(after, before);
    assert!(
        cache.lookup("300").is_some(),
        "the cache reloaded after reconnecting"
    );
    assert!(cache.lookup("100").is_none());

    let mut con = redis.connection();
    let generation: u64 = redis::cmd("GET")
        .arg(GENERATION_KEY)
        .query(&mut con)
        .unwrap();
    assert_eq!(generation, after.generation);
    task.abort();
}
