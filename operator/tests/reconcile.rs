//! Reconcile against a real redis-server and kube's client over a fake API server:
//! create, update, delete with finalizer, invalid regex, conflict and take-over, Redis
//! flushed then rebuilt, Redis down then back.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, number, pattern};
use redis::Commands;
use switchyard_operator::FINALIZER;
use switchyard_operator::metrics::ReconcileResult;
use switchyard_operator::resync::{self, SyncOutcome};

fn ready(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

fn status_reason(h: &Harness, ns: &str, name: &str) -> Option<(String, String)> {
    h.ready(ns, name).map(|(s, r, _)| (s, r))
}

#[tokio::test]
async fn create_adds_the_finalizer_writes_the_route_and_reports_programmed() {
    let h = Harness::new();
    h.api
        .create("telephony", "number-a", 100, number("+15551230001"));

    // First pass: the finalizer, by JSON patch, and nothing else.
    h.reconcile("telephony", "number-a").await.unwrap();
    let pn = h.api.get("telephony", "number-a").unwrap();
    assert_eq!(pn.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    assert!(
        h.table().await.is_empty(),
        "no route before the finalizer is in place"
    );

    // Second pass: the route and the status.
    h.reconcile("telephony", "number-a").await.unwrap();
    let table = h.table().await;
    assert_eq!(
        table.get("n:+15551230001").map(String::as_str),
        Some("telephony/number-a")
    );
    let (route_version, routes) = h.routes.load().await.unwrap();
    assert!(route_version.is_some());
    assert_eq!(
        routes[0].refer.as_ref().map(|a| a.url.as_str()),
        Some("http://apps.example/refer.xml")
    );

    let pn = h.api.get("telephony", "number-a").unwrap();
    let status = pn.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status_reason(&h, "telephony", "number-a"),
        Some(ready("True", "Programmed"))
    );

    // The status went by server-side apply on the status subresource, as our manager.
    let apply = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/phonenumbers/number-a/status"))
        .expect("a status request");
    assert_eq!(apply.method, "PATCH");
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert!(
        apply.query.contains("fieldManager=switchyard-operator"),
        "{}",
        apply.query
    );
    assert!(apply.query.contains("force=true"), "{}", apply.query);
    assert_eq!(apply.body["kind"], "PhoneNumber");

    assert_eq!(h.event_reasons("number-a"), ["Programmed"]);
    assert_eq!(h.metrics.reconciliations(ReconcileResult::Programmed), 1);

    // A third pass with nothing new changes nothing: no status write, no event.
    h.api.clear_requests();
    h.reconcile("telephony", "number-a").await.unwrap();
    assert!(
        h.api.requests().is_empty(),
        "unexpected requests: {:?}",
        h.api.requests()
    );
}

#[tokio::test]
async fn update_moves_the_route_and_observes_the_new_generation() {
    let h = Harness::new();
    h.api.create("t", "a", 100, number("+15551230001"));
    h.settle("t", "a").await.unwrap();

    h.api.update_spec("t", "a", number("+15551230002"));
    h.reconcile("t", "a").await.unwrap();

    let table = h.table().await;
    assert_eq!(table.len(), 1, "{table:?}");
    assert_eq!(table.get("n:+15551230002").map(String::as_str), Some("t/a"));
    let pn = h.api.get("t", "a").unwrap();
    assert_eq!(pn.status.unwrap().observed_generation, Some(2));
    let (_, reason, message) = h.ready("t", "a").unwrap();
    assert_eq!(reason, "Programmed");
    assert!(message.contains("+15551230002"), "{message}");
}

#[tokio::test]
async fn delete_removes_the_route_then_releases_the_resource() {
    let h = Harness::new();
    h.api.create("t", "a", 100, number("+15551230001"));
    h.api.create("t", "b", 100, pattern("1666.*"));
    h.settle("t", "a").await.unwrap();
    h.settle("t", "b").await.unwrap();
    assert_eq!(h.table().await.len(), 2);

    h.api.delete("t", "a");
    assert!(
        h.api.get("t", "a").is_some(),
        "the finalizer holds the resource"
    );
    h.reconcile("t", "a").await.unwrap();

    assert!(h.api.get("t", "a").is_none(), "released after cleanup");
    let table = h.table().await;
    assert_eq!(table.keys().collect::<Vec<_>>(), ["p:1666.*"]);
    assert_eq!(h.event_reasons("a"), ["Programmed", "RouteRemoved"]);
    assert_eq!(h.metrics.reconciliations(ReconcileResult::Deleted), 1);
}

#[tokio::test]
async fn a_regex_that_does_not_compile_is_reported_and_never_written() {
    let h = Harness::new();
    h.api.create("t", "bad", 100, pattern("1555("));
    h.settle("t", "bad").await.unwrap();

    assert!(h.table().await.is_empty());
    let (status, reason, message) = h.ready("t", "bad").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.starts_with("spec.pattern: "), "{message}");
    assert_eq!(h.event_reasons("bad"), ["InvalidSpec"]);
    let event = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.path.contains("/events"))
        .unwrap();
    assert_eq!(event.body["type"], "Warning");

    // A programmed pattern edited into an invalid one loses its route.
    h.api.create("t", "good", 200, pattern("1777.*"));
    h.settle("t", "good").await.unwrap();
    assert_eq!(h.table().await.len(), 1);
    h.api.update_spec("t", "good", pattern("1777.*["));
    h.reconcile("t", "good").await.unwrap();
    assert!(h.table().await.is_empty());
    assert_eq!(
        status_reason(&h, "t", "good"),
        Some(ready("False", "InvalidSpec"))
    );
}

#[tokio::test]
async fn the_older_resource_keeps_the_number_and_the_newer_takes_over_on_delete() {
    let mut h = Harness::new();
    h.api.create("alpha", "old", 100, number("+15551230001"));
    h.api.create("beta", "new", 200, number("+15551230001"));
    h.settle("alpha", "old").await.unwrap();
    h.settle("beta", "new").await.unwrap();

    assert_eq!(
        h.table().await.get("n:+15551230001").map(String::as_str),
        Some("alpha/old")
    );
    let (status, reason, message) = h.ready("beta", "new").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Conflict"));
    assert!(message.contains("alpha/old"), "{message}");
    assert_eq!(h.event_reasons("new"), ["Conflict"]);
    h.drain_triggers();

    // The owner goes away: its cleanup queues the waiting claimant...
    h.api.delete("alpha", "old");
    h.reconcile("alpha", "old").await.unwrap();
    assert!(h.api.get("alpha", "old").is_none());
    assert_eq!(h.drain_triggers(), ["beta/new"]);
    // ...whose reconcile takes the number over.
    h.reconcile("beta", "new").await.unwrap();
    assert_eq!(
        h.table().await.get("n:+15551230001").map(String::as_str),
        Some("beta/new")
    );
    assert_eq!(
        status_reason(&h, "beta", "new"),
        Some(ready("True", "Programmed"))
    );
    assert_eq!(h.event_reasons("new"), ["Conflict", "Programmed"]);
}

#[tokio::test]
async fn an_older_newcomer_takes_the_number_and_the_displaced_one_never_removes_it() {
    let mut h = Harness::new();
    // The newer resource is programmed first (the older one was not seen yet).
    h.api.create("t", "newer", 200, number("+15551230001"));
    h.settle("t", "newer").await.unwrap();
    assert_eq!(h.table().await["n:+15551230001"], "t/newer");
    h.drain_triggers();

    h.api.create("t", "older", 100, number("+15551230001"));
    h.settle("t", "older").await.unwrap();
    assert_eq!(h.table().await["n:+15551230001"], "t/older");
    // The displaced one is told to look again, and reports the conflict.
    assert!(h.drain_triggers().contains(&"t/newer".to_string()));
    h.reconcile("t", "newer").await.unwrap();
    assert_eq!(
        status_reason(&h, "t", "newer"),
        Some(ready("False", "Conflict"))
    );
    assert_eq!(h.table().await["n:+15551230001"], "t/older");

    // Deleting the loser must not take the owner's route with it.
    h.api.delete("t", "newer");
    h.reconcile("t", "newer").await.unwrap();
    assert!(h.api.get("t", "newer").is_none());
    assert_eq!(h.table().await["n:+15551230001"], "t/older");
}

#[tokio::test]
async fn a_flushed_table_is_rebuilt_from_the_watch_cache_within_five_seconds() {
    let h = Harness::new();
    h.api.create("t", "a", 100, number("+15551230001"));
    h.api.create("t", "b", 100, pattern("1666.*"));
    h.settle("t", "a").await.unwrap();
    h.settle("t", "b").await.unwrap();
    let before = h.table().await;
    assert_eq!(before.len(), 2);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let resync = tokio::spawn(resync::run(
        h.ctx.clone(),
        Duration::from_secs(3600),
        stop_rx,
    ));
    // The loop's first full sync (as at leader start) gives the table its epoch.
    let epoch = async {
        loop {
            if let Some(v) = h.routes.version().await.unwrap()
                && !v.epoch.is_empty()
            {
                return v.epoch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let epoch = tokio::time::timeout(Duration::from_secs(5), epoch)
        .await
        .expect("the startup full sync ran");

    let mut con = h.redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    let flushed = Instant::now();

    // Rebuilt means a new full sync: a new epoch, and every route back.
    let mut rebuilt = None;
    while flushed.elapsed() < Duration::from_secs(5) {
        if let Some(v) = h.routes.version().await.unwrap()
            && !v.epoch.is_empty()
        {
            rebuilt = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rebuilt = rebuilt.expect("table rebuilt within 5 s");
    assert_ne!(rebuilt.epoch, epoch);
    assert_eq!(h.table().await, before);

    stop_tx.send(true).unwrap();
    resync.await.unwrap();
}

#[tokio::test]
async fn a_flush_followed_by_one_route_write_is_still_detected_and_rebuilt() {
    let h = Harness::new();
    h.api.create("t", "a", 100, number("+15551230001"));
    h.api.create("t", "b", 100, pattern("1666.*"));
    h.settle("t", "a").await.unwrap();
    h.settle("t", "b").await.unwrap();
    // Written by single-route writes only, the table has no epoch yet: the first full
    // sync (the leader runs one at start) writes it whole; the next finds it in sync.
    assert!(resync::table_missing(
        h.routes.version().await.unwrap().as_ref()
    ));
    assert_eq!(
        resync::full_sync(&h.ctx).await.unwrap(),
        SyncOutcome::Repaired
    );
    assert_eq!(
        resync::full_sync(&h.ctx).await.unwrap(),
        SyncOutcome::InSync
    );
    assert!(!resync::table_missing(
        h.routes.version().await.unwrap().as_ref()
    ));

    // Redis loses its data, and a reconcile writes one route before the next check:
    // the generation counter is back, but the table is partial.
    let mut con = h.redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    h.reconcile("t", "a").await.unwrap();
    let version = h.routes.version().await.unwrap();
    assert!(
        version.is_some(),
        "the single write recreated the generation"
    );
    assert!(resync::table_missing(version.as_ref()));
    assert_eq!(h.table().await.len(), 1);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let resync = tokio::spawn(resync::run(
        h.ctx.clone(),
        Duration::from_secs(3600),
        stop_rx,
    ));
    let started = Instant::now();
    while h.table().await.len() != 2 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.table().await.len(), 2, "table not rebuilt within 5 s");
    assert!(!resync::table_missing(
        h.routes.version().await.unwrap().as_ref()
    ));
    stop_tx.send(true).unwrap();
    resync.await.unwrap();
}

#[tokio::test]
async fn a_full_sync_repairs_hand_made_drift_and_leaves_a_correct_table_alone() {
    let h = Harness::new();
    h.api.create("t", "a", 100, number("+15551230001"));
    h.settle("t", "a").await.unwrap();
    resync::full_sync(&h.ctx).await.unwrap();
    assert_eq!(
        resync::full_sync(&h.ctx).await.unwrap(),
        SyncOutcome::InSync
    );

    // Someone deletes the route by hand and adds a stray one.
    let mut con = h.redis.connection();
    let _: () = con
        .hdel("sy:v1:{routes}:entries", "n:+15551230001")
        .unwrap();
    let stray = r#"{"key":{"kind":"number","value":"999"},"owner":"t/gone","voice":{"url":"http://x/","method":"POST"}}"#;
    let _: () = con.hset("sy:v1:{routes}:entries", "n:999", stray).unwrap();

    assert_eq!(
        resync::full_sync(&h.ctx).await.unwrap(),
        SyncOutcome::Repaired
    );
    let table = h.table().await;
    assert_eq!(
        table.into_iter().collect::<Vec<_>>(),
        [("n:+15551230001".to_string(), "t/a".to_string())]
    );
    assert_eq!(
        resync::full_sync(&h.ctx).await.unwrap(),
        SyncOutcome::InSync
    );
}

#[tokio::test]
async fn redis_down_reports_redis_unavailable_and_recovers_when_it_is_back() {
    let mut h = Harness::new();
    h.api.create("t", "a", 100, number("+15551230001"));
    h.settle("t", "a").await.unwrap();
    h.drain_triggers();

    h.redis.kill();
    h.api.update_spec("t", "a", number("+15551230002"));
    let error = h.reconcile("t", "a").await.unwrap_err();
    assert!(error.to_string().contains("redis"), "{error}");
    let (status, reason, message) = h.ready("t", "a").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RedisUnavailable")
    );
    assert!(message.contains("retrying"), "{message}");
    assert_eq!(h.event_reasons("a"), ["Programmed", "RedisUnavailable"]);
    assert_eq!(
        h.metrics.reconciliations(ReconcileResult::RedisUnavailable),
        1
    );

    // The controller retries with a growing delay.
    let pn = std::sync::Arc::new(h.api.get("t", "a").unwrap());
    let first = switchyard_operator::controller::error_policy(pn.clone(), &error, h.ctx.clone());
    let second = switchyard_operator::controller::error_policy(pn, &error, h.ctx.clone());
    assert_ne!(first, second, "backoff grows between attempts");

    // Redis comes back empty: the resync loop rebuilds the table and asks the resource
    // that still reports RedisUnavailable to reconcile.
    h.redis.restart();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let resync = tokio::spawn(resync::run(
        h.ctx.clone(),
        Duration::from_secs(3600),
        stop_rx,
    ));
    let triggered = tokio::time::timeout(Duration::from_secs(10), h.triggered.recv())
        .await
        .expect("a reconcile is queued once Redis is back")
        .unwrap();
    assert_eq!(triggered.name, "a");
    assert_eq!(
        h.table().await.get("n:+15551230002").map(String::as_str),
        Some("t/a"),
        "the rebuilt table follows the current spec"
    );
    h.reconcile("t", "a").await.unwrap();
    assert_eq!(
        status_reason(&h, "t", "a"),
        Some(ready("True", "Programmed"))
    );

    stop_tx.send(true).unwrap();
    resync.await.unwrap();
}
