//! The whole leader side as `main` runs it (kube's Controller with its watch, the
//! reconcile triggers, the resync loop) against the fake API server, which serves list
//! and watch, and a real redis-server.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeApi, number, pattern};
use switchyard_operator::controller::{LeaderWork, ready_condition};
use switchyard_operator::metrics::Metrics;
use switchyard_routing::RedisRoutes;
use switchyard_tests::RedisServer;
use tokio::sync::{oneshot, watch};

const WITHIN: Duration = Duration::from_secs(10);

async fn table(routes: &RedisRoutes) -> Option<BTreeMap<String, String>> {
    let (version, routes) = routes.load().await.ok()?;
    version?;
    Some(
        routes
            .into_iter()
            .map(|r| (r.key.field(), r.owner.0))
            .collect(),
    )
}

fn reason(api: &FakeApi, ns: &str, name: &str) -> Option<String> {
    api.get(ns, name)
        .and_then(|pn| ready_condition(&pn).map(|c| c.reason.clone()))
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(
    client: kube::Client,
    routes: RedisRoutes,
    namespaces: Vec<String>,
    metrics: Arc<Metrics>,
) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let (synced_tx, synced_rx) = oneshot::channel();
    let work = LeaderWork {
        client,
        routes,
        metrics,
        namespaces,
        resync_interval: Duration::from_secs(3600),
        identity: "test-replica".into(),
    };
    let task = tokio::spawn(work.run(stop_rx, move || {
        let _ = synced_tx.send(());
    }));
    tokio::time::timeout(WITHIN, synced_rx)
        .await
        .expect("watch caches synced")
        .expect("synced reported");
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("the leader work stops when told")
            .unwrap();
    }
}

#[tokio::test]
async fn the_controller_programs_resolves_conflicts_hands_over_and_rebuilds() {
    let (client, api) = FakeApi::start();
    let redis = RedisServer::start();
    let routes = RedisRoutes::open(&redis.url()).unwrap();
    api.create("telephony", "old", 100, number("+15551230001"));
    api.create("telephony", "new", 200, number("+15551230001"));
    api.create("telephony", "bad", 300, pattern("1555("));
    api.create("lab", "pattern", 300, pattern("1666.*"));
    let metrics = Arc::new(Metrics::new());
    let running = start(client, routes.clone(), vec![], metrics.clone()).await;

    let expected: BTreeMap<String, String> = [
        ("n:+15551230001", "telephony/old"),
        ("p:1666.*", "lab/pattern"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    api.wait_until(WITHIN, "routes and statuses programmed", || async {
        reason(&api, "telephony", "old").as_deref() == Some("Programmed")
            && reason(&api, "telephony", "new").as_deref() == Some("Conflict")
            && reason(&api, "telephony", "bad").as_deref() == Some("InvalidSpec")
            && reason(&api, "lab", "pattern").as_deref() == Some("Programmed")
            && table(&routes).await.as_ref() == Some(&expected)
    })
    .await;
    // The gauges follow within a second of the change.
    api.wait_until(WITHIN, "gauges counted", || async {
        let text = metrics.render();
        text.contains("\nswitchyard_operator_conflicts 1\n")
            && text.contains("\nswitchyard_operator_invalid_specs 1\n")
            && text.contains("\nswitchyard_operator_routes{kind=\"number\"} 1\n")
            && text.contains("\nswitchyard_operator_routes{kind=\"pattern\"} 1\n")
    })
    .await;

    // The owner is deleted: its route goes, the waiting one takes over by itself.
    api.delete("telephony", "old");
    api.wait_until(WITHIN, "take-over after the owner's deletion", || async {
        api.get("telephony", "old").is_none()
            && reason(&api, "telephony", "new").as_deref() == Some("Programmed")
            && table(&routes)
                .await
                .and_then(|t| t.get("n:+15551230001").cloned())
                == Some("telephony/new".into())
    })
    .await;

    // Redis restarted empty: the table comes back from the watch cache within 5 s.
    let mut con = redis.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    let flushed = tokio::time::Instant::now();
    api.wait_until(Duration::from_secs(5), "table rebuilt", || async {
        table(&routes).await.is_some_and(|t| t.len() == 2)
    })
    .await;
    assert!(flushed.elapsed() < Duration::from_secs(5));

    running.stop().await;
}

#[tokio::test]
async fn configured_namespaces_are_watched_and_decided_together() {
    let (client, api) = FakeApi::start();
    let redis = RedisServer::start();
    let routes = RedisRoutes::open(&redis.url()).unwrap();
    // One number claimed from two watched namespaces; a third namespace is not watched.
    api.create("beta", "newer", 200, number("+15551230001"));
    api.create("alpha", "older", 100, number("+15551230001"));
    api.create("ignored", "elsewhere", 50, number("+15559990000"));
    let namespaces = vec!["alpha".to_string(), "beta".to_string()];
    let running = start(client, routes.clone(), namespaces, Arc::new(Metrics::new())).await;

    api.wait_until(WITHIN, "cross-namespace conflict decided", || async {
        reason(&api, "alpha", "older").as_deref() == Some("Programmed")
            && reason(&api, "beta", "newer").as_deref() == Some("Conflict")
            && table(&routes).await.is_some_and(|t| {
                t.len() == 1 && t.get("n:+15551230001").map(String::as_str) == Some("alpha/older")
            })
    })
    .await;
    assert_eq!(
        reason(&api, "ignored", "elsewhere"),
        None,
        "not watched, not touched"
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| !r.path.contains("/namespaces/ignored/")),
        "no request about the unwatched namespace"
    );

    // The owner in one namespace goes away; the claimant in the other takes over.
    api.delete("alpha", "older");
    api.wait_until(WITHIN, "take-over across namespaces", || async {
        reason(&api, "beta", "newer").as_deref() == Some("Programmed")
            && table(&routes)
                .await
                .and_then(|t| t.get("n:+15551230001").cloned())
                == Some("beta/newer".into())
    })
    .await;

    running.stop().await;
}
