//! Two edge processes on one Redis: any of them carries on any call, and a call whose
//! edge died is ended or cleaned up by the other.

use std::time::Duration;

use switchyard_tests::app_server::AppServer;
use switchyard_tests::routes::{number_route, program};
use switchyard_tests::sipp::{Sipp, assert_success};
use switchyard_tests::ua::Ua;
use switchyard_tests::{Edge, RedisServer};

const NUMBER_A: &str = "+15551230001";

struct Cluster {
    _redis: RedisServer,
    app: AppServer,
    edges: Vec<Edge>,
}

/// Redis with number A programmed (as the operator would), an app server, two edges.
fn cluster() -> Cluster {
    let redis = RedisServer::start();
    let app = AppServer::start();
    program(
        &redis.url(),
        &[number_route(NUMBER_A, &app.url("/voice"), None)],
    );
    let url = redis.url();
    let edges = (0..2)
        .map(|_| Edge::start(&["--redis-url", &url, "--timer-t1", "100ms"]))
        .collect();
    Cluster {
        _redis: redis,
        app,
        edges,
    }
}

#[test]
fn a_bye_reaching_the_other_edge_ends_the_call() {
    let cluster = cluster();
    let bob = Sipp::server("uas_answer.xml");
    cluster.app.rcml(
        "/voice",
        &format!(
            "<Response><Dial><Sip>sip:bob@{}</Sip></Dial></Response>",
            bob.addr
        ),
    );
    let (one, two) = (&cluster.edges[0], &cluster.edges[1]);
    let mut alice = Ua::new("alice");
    let answer = alice.invite(one.sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("a To tag on the 200");
    alice.ack(one.sip, NUMBER_A, &tag);
    assert_eq!(alice.bye(two.sip, NUMBER_A, &tag), Some(200));
    // Bob got the BYE (from the second edge) and answered it.
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn calls_up_on_a_killed_edge_can_still_be_ended_through_the_other() {
    let mut cluster = cluster();
    let bob = Sipp::server("uas_answer.xml");
    cluster.app.rcml(
        "/voice",
        &format!(
            "<Response><Dial><Sip>sip:bob@{}</Sip></Dial></Response>",
            bob.addr
        ),
    );
    let mut alice = Ua::new("alice");
    let answer = alice.invite(cluster.edges[0].sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("a To tag on the 200");
    alice.ack(cluster.edges[0].sip, NUMBER_A, &tag);

    cluster.edges[0].kill();
    let bye = alice
        .bye_answer(cluster.edges[1].sip, NUMBER_A, &tag)
        .expect("an answer to BYE");
    assert_eq!(bye.code, 200, "{}", bye.text);
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn a_dial_timeout_pending_on_a_killed_edge_still_fires() {
    let mut cluster = cluster();
    let bob = Sipp::server("uas_ring_cancel_orphan.xml");
    cluster.app.rcml(
        "/voice",
        &format!(
            "<Response><Dial timeout=\"2\"><Sip>sip:bob@{}</Sip></Dial></Response>",
            bob.addr
        ),
    );
    let first = cluster.edges[0].sip;
    let caller = std::thread::spawn(move || {
        let mut alice = Ua::new("alice");
        alice.invite(first, NUMBER_A)
    });
    // Kill the first edge once it is dialling Bob.
    assert!(
        cluster
            .app
            .wait_for("/voice", Duration::from_secs(5))
            .is_some()
    );
    std::thread::sleep(Duration::from_millis(300));
    cluster.edges[0].kill();

    let answer = caller
        .join()
        .unwrap_or_else(|_| panic!("the caller thread"));
    assert_eq!(answer.code, 480, "{}", answer.text);
    assert!(
        answer.text.contains("Reason: SIP;cause=480"),
        "{}",
        answer.text
    );
    // Bob was cancelled by the surviving edge.
    assert_success(&bob.finish(Duration::from_secs(10)));
    assert!(cluster.edges[1].logs().contains("adopting a call"));
}
