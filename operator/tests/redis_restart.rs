//! Redis restarted empty under a running operator and edge: the operator rebuilds the
//! routing table from its watch cache within seconds, the edge keeps serving its last
//! snapshot meanwhile, and follows the rebuilt table (a number created afterwards is
//! answered), with neither process restarted.

mod common;

use std::time::{Duration, Instant};

use common::process::{Replica, kubeconfig, programmed, scratch};
use common::{FakeApi, number};
use switchyard_routing::RedisRoutes;
use switchyard_tests::app_server::AppServer;
use switchyard_tests::sipp::{Sipp, refused_scenario};
use switchyard_tests::ua::Ua;
use switchyard_tests::{Edge, RedisServer};

/// A call to `number` through `edge` that the application rejects busy (486).
fn rejected_busy(edge: &Edge, number: &str) -> bool {
    Sipp::client_file(&refused_scenario(486, false), edge.sip)
        .arg("-s")
        .arg(number)
        .run()
        .status
        .success()
}

fn with_voice_url(spec: &str, url: &str) -> switchyard_routing::PhoneNumberSpec {
    let mut spec = number(spec);
    spec.voice_url = url.to_owned();
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_is_rebuilt_and_the_edge_follows() {
    let (addr, api) = FakeApi::start_http().await;
    let mut redis = RedisServer::start();
    let routes = RedisRoutes::open(&redis.url()).expect("a Redis URL");
    let app = AppServer::start();
    app.rcml("/voice", "<Response><Reject reason=\"busy\"/></Response>");
    let dir = scratch("restart");
    let kubeconfig = kubeconfig(&dir, addr);
    let within = Duration::from_secs(20);
    api.create(
        "telephony",
        "number-a",
        100,
        with_voice_url("+15551230001", &app.url("/voice")),
    );
    let mut operator = Replica::start("pod-a", &dir, &kubeconfig, &redis.url());
    api.wait_until(within, "number-a programmed", || async {
        programmed(&api, "number-a")
    })
    .await;
    let edge = tokio::task::block_in_place(|| {
        let edge = Edge::start(&["--redis-url", &redis.url()]);
        assert!(rejected_busy(&edge, "+15551230001"));
        edge
    });

    tokio::task::block_in_place(|| {
        redis.kill();
        redis.restart();
    });
    let restarted = Instant::now();
    // The edge serves its last snapshot while the table is gone: calls to number A are
    // never 404 (unknown number); the first ones may meet the reconnect (503).
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + within;
        loop {
            let code = Ua::new("alice").invite(edge.sip, "+15551230001").code;
            assert_ne!(
                code, 404,
                "the edge forgot its routes while Redis was empty"
            );
            if code == 486 {
                break;
            }
            assert!(Instant::now() < deadline, "number A answered {code}");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // The operator notices the missing table and rebuilds it from its watch cache.
    api.wait_until(within, "the routing table rebuilt", || async {
        routes
            .load()
            .await
            .is_ok_and(|(version, table)| version.is_some() && table.len() == 1)
    })
    .await;
    let rebuilt = restarted.elapsed();
    assert!(
        rebuilt < Duration::from_secs(5),
        "rebuilt after {rebuilt:?}"
    );

    // A number created now reaches the edge through the rebuilt table.
    api.create(
        "telephony",
        "number-c",
        300,
        with_voice_url("+15551230003", &app.url("/voice")),
    );
    let deadline = Instant::now() + within;
    tokio::task::block_in_place(|| {
        while !rejected_busy(&edge, "+15551230003") {
            assert!(
                Instant::now() < deadline,
                "the edge never served a number created after the rebuild:\n{}",
                edge.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    eprintln!(
        "Redis restarted empty: routing table rebuilt {rebuilt:.1?} later; a number created \
         afterwards answered {:.1?} after the restart; neither process restarted",
        restarted.elapsed()
    );
    let log = operator.log();
    assert!(log.contains("routing table absent from Redis"), "{log}");
    assert!(
        log.contains("routing table rebuilt from the watch cache"),
        "{log}"
    );
    let status = operator.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", operator.log());
    let _ = std::fs::remove_dir_all(dir);
}
