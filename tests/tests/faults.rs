//! Faults around calls in progress: Redis killed while calls are up (and back with its
//! data), and an edge SIGKILLed with calls up. Each test prints what the fault cost (run
//! with `--nocapture`): calls affected, requests refused meanwhile, calls lost.

mod deployments;

use std::time::{Duration, Instant};

use deployments::{Deployment, HeldCall, held_calls};
use switchyard_tests::RedisServer;
use switchyard_tests::sipp::{Sipp, assert_success, refused_scenario};

/// Every key of the call state, with its TTL in ms (-1: none).
fn call_state_ttls(redis: &RedisServer) -> Vec<(String, i64)> {
    let mut con = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sy:v2:*")
        .query(&mut con)
        .expect("KEYS");
    keys.into_iter()
        .filter(|k| !k.starts_with("sy:v2:timers:"))
        .map(|k| {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut con).expect("PTTL");
            (k, ttl)
        })
        .collect()
}

#[test]
fn redis_killed_with_calls_up_then_back_with_its_data() {
    // Redis with an append-only file synced on every write, so it comes back with what
    // it had, as a Redis with persistence (or a replica promoted) does.
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let deployment = Deployment::start(&redis.url(), 1);
    let edge = deployment.edges[0].sip;
    let bob = Sipp::server_with("uas_answer.xml", &["-m", "4"]);
    deployment.dial_bob(&bob.addr);
    let mut calls = held_calls(&deployment, 3);

    redis.kill();
    let killed = Instant::now();
    // A new call is refused with 503 and Retry-After (and a Reason).
    let refused = Sipp::client_file(&refused_scenario(503, true), edge)
        .arg("-s")
        .arg(deployments::NUMBER_A)
        .run();
    assert_success(&refused);
    // A BYE meanwhile cannot find its call: 500 with Retry-After, so the phone tries
    // again; the call is not declared gone (481) and stays up.
    let mut alice = calls.remove(0);
    let bye = alice.hang_up_answer(edge).expect("an answer to BYE");
    assert_eq!(bye.code, 500, "{}", bye.text);
    assert!(bye.header("Retry-After").is_some(), "{}", bye.text);

    redis.restart();
    let back = Instant::now();
    // The phone's BYE again, and the other calls: ended through the same edge process.
    let deadline = Instant::now() + Duration::from_secs(15);
    let retried = loop {
        match alice.hang_up(edge) {
            Some(200) => break killed.elapsed(),
            other => assert!(
                Instant::now() < deadline,
                "BYE after Redis came back: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut ended = 1;
    for call in &mut calls {
        if call.hang_up(edge) == Some(200) {
            ended += 1;
        }
    }
    // New calls work again, without a restart.
    let mut new = HeldCall::place(edge).expect("a new call after Redis came back");
    assert_eq!(new.hang_up(edge), Some(200));
    assert_success(&bob.finish(Duration::from_secs(15)));
    eprintln!(
        "Redis killed with 3 calls up: a new call got 503, a BYE got 500 with Retry-After; \
         Redis back after {:.1?}; the BYE retried {retried:.1?} after the kill ended its \
         call; calls ended: {ended} of 3 (lost: {}); new calls answered again {:.1?} after \
         Redis came back",
        back - killed,
        3 - ended,
        back.elapsed(),
    );
    assert_eq!(ended, 3, "calls lost");
    // Nothing outlives its TTL: every key of the calls expires, the ended ones within
    // about a minute.
    let ttls = call_state_ttls(&redis);
    assert!(!ttls.is_empty());
    for (key, ttl) in ttls {
        assert!(ttl > 0 && ttl <= 64_000, "{key} has TTL {ttl} ms");
    }
}

#[test]
fn an_edge_sigkilled_with_calls_up_leaves_them_to_the_other() {
    let redis = RedisServer::start();
    let mut deployment = Deployment::start(&redis.url(), 2);
    let bob = Sipp::server_with("uas_answer.xml", &["-m", "8"]);
    deployment.dial_bob(&bob.addr);
    // Eight calls, half set up through each edge.
    let mut calls = held_calls(&deployment, 8);
    deployment.edges[0].kill();
    let survivor = deployment.edges[1].sip;
    let mut ended = 0;
    for call in &mut calls {
        if call.hang_up(survivor) == Some(200) {
            ended += 1;
        }
    }
    eprintln!(
        "edge SIGKILLed with 8 calls up, 4 set up through it: {ended} of 8 ended through \
         the other edge (lost: {})",
        8 - ended
    );
    assert_eq!(ended, 8, "calls lost with their edge");
    // Bob got every BYE, the dead edge's calls' included.
    assert_success(&bob.finish(Duration::from_secs(15)));
}
