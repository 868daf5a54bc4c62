//! Switchyard on a real three-master Redis Cluster: calls and the seed transfer spread
//! over the masters, and masters killed with calls up and during a transfer. Each
//! failover test prints what it cost (run with `--nocapture` to see it): calls on the
//! killed master, how long the failover took, new calls refused meanwhile, calls lost.

mod deployments;

use std::time::{Duration, Instant};

use deployments::{
    Deployment, NUMBER_B, hang_up_all, held_calls, new_calls_until_answered, seed_transfer,
};
use switchyard_tests::RedisCluster;
use switchyard_tests::sipp::{Sipp, assert_success};

/// Call records per master.
fn call_keys(cluster: &RedisCluster) -> std::collections::BTreeMap<u16, usize> {
    cluster.keys_by_master("sy:v2:call:*")
}

/// The call buckets (tags) `master` serves.
fn buckets_of(cluster: &RedisCluster, master: u16) -> Vec<String> {
    switchyard_edge::store::all_tags()
        .filter(|tag| cluster.master_of(&format!("{{{tag}}}")) == Some(master))
        .collect()
}

#[test]
fn calls_and_the_seed_transfer_run_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let deployment = Deployment::start(&cluster.url(), 2);
    let bob = Sipp::server_with("uas_answer.xml", &["-m", "12"]);
    deployment.dial_bob(&bob.addr);

    // Twelve calls, each set up through one edge and ended through the other.
    let mut calls = held_calls(&deployment, 12);
    for (n, call) in calls.iter_mut().enumerate() {
        let other = deployment.edges[(n + 1) % 2].sip;
        assert_eq!(call.hang_up(other), Some(200), "call {n}");
    }
    assert_success(&bob.finish(Duration::from_secs(15)));
    // The calls' buckets are spread over the masters: the records (kept a minute after
    // the call ends) are on more than one of them.
    let spread = call_keys(&cluster);
    assert!(
        spread.values().filter(|n| **n > 0).count() >= 2,
        "calls on one master only: {spread:?}"
    );
    assert_eq!(spread.values().sum::<usize>(), 12, "{spread:?}");

    // The seed scenario, with routes in the cluster and RCML from the app server.
    let (bob, carol) = seed_transfer(&deployment, "uas_target.xml");
    assert_success(&deployment.alice("uac_transferee.xml"));
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert_success(&carol.finish(Duration::from_secs(15)));
    let refer = deployment
        .app
        .wait_for("/refer", Duration::from_secs(1))
        .expect("the refer application was fetched");
    assert_eq!(
        refer.params.get("ReferTarget").map(String::as_str),
        Some(NUMBER_B)
    );
    for edge in &deployment.edges {
        let logs = edge.logs();
        assert!(!logs.contains("CROSSSLOT"), "{logs}");
        assert!(
            !edge
                .http_get("/metrics")
                .is_some_and(|(_, m)| m.contains("store_errors_total{")),
            "store errors on a healthy cluster"
        );
    }
}

#[test]
fn a_master_killed_with_calls_up_fails_over_and_the_calls_carry_on() {
    let mut cluster = RedisCluster::start(3, 1);
    let deployment = Deployment::start(&cluster.url(), 2);
    // Bob answers the 12 calls held, the first new call answered after the kill and 4
    // more (refused calls never reach him).
    let bob = Sipp::server_with("uas_answer.xml", &["-m", "17"]);
    deployment.dial_bob(&bob.addr);
    let mut calls = held_calls(&deployment, 12);

    // Kill the master holding the most calls, once its replica has them.
    let spread = call_keys(&cluster);
    let (&victim, &on_victim) = spread
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("masters with calls");
    let victims_buckets = buckets_of(&cluster, victim);
    let affected = calls
        .iter()
        .filter(|c| victims_buckets.contains(&c.tag()))
        .count();
    assert_eq!(affected, on_victim);
    cluster.sync_replicas_of(victim);
    cluster.kill(victim);
    let killed = Instant::now();

    // New calls in the dead master's buckets are refused (503) until its replica takes
    // over; then they are answered again, by the same edges.
    let new_calls = new_calls_until_answered(
        &deployment,
        |tag| victims_buckets.iter().any(|b| b == tag),
        killed,
        Duration::from_secs(30),
    );
    let probe = format!("{{{}}}", victims_buckets[0]);
    let (promoted, _) = cluster.wait_for_failover(&probe, Duration::from_secs(30));
    let failed_over = killed.elapsed();

    // Every call in progress can still be ended, through either edge.
    let ended = hang_up_all(&deployment, &mut calls);
    deployment.new_calls_work(4);
    eprintln!(
        "cluster failover with calls up: {on_victim} of {} calls on the killed master \
         :{victim}; replica :{promoted} serving its slots {failed_over:.1?} after the kill; \
         new calls in its buckets refused meanwhile: {} (503), the first answered \
         {:.1?} after the kill; calls in progress ended afterwards: {ended} of {} \
         (lost: {})",
        calls.len(),
        new_calls.refused.len(),
        new_calls.first_answered,
        calls.len(),
        calls.len() - ended,
    );
    assert_eq!(ended, calls.len(), "calls lost in the failover");
    assert_success(&bob.finish(Duration::from_secs(15)));
}

#[test]
fn a_master_killed_during_a_transfer_fails_over_and_the_transfer_completes() {
    let mut cluster = RedisCluster::start(3, 1);
    let deployment = Deployment::start(&cluster.url(), 1);
    // Carol rings for 6 s; the master of the call's bucket is killed meanwhile.
    let (bob, carol) = seed_transfer(&deployment, "uas_target_slow.xml");
    let edge = deployment.edges[0].sip;
    let alice = std::thread::spawn(move || deployments::alice_at(edge, "uac_transferee.xml"));
    deployment
        .app
        .wait_for("/carol", Duration::from_secs(15))
        .expect("the transfer dials the target");
    // The master holding Alice's call: the record with the transfer in it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let victim = loop {
        if let [master] = cluster
            .masters_holding("sy:v2:call:*", "d", "\"transfer\"")
            .as_slice()
        {
            break *master;
        }
        assert!(Instant::now() < deadline, "no transfer in progress");
        std::thread::sleep(Duration::from_millis(50));
    };
    let probe = format!("{{{}}}", buckets_of(&cluster, victim)[0]);
    cluster.sync_replicas_of(victim);
    cluster.kill(victim);
    let killed = Instant::now();
    let (promoted, _) = cluster.wait_for_failover(&probe, Duration::from_secs(30));
    eprintln!(
        "cluster failover during a transfer: master :{victim} killed while the target \
         rang; replica :{promoted} serving its slots {:.1?} after the kill",
        killed.elapsed()
    );
    let alice = alice.join().unwrap_or_else(|_| panic!("Alice's thread"));
    assert_success(&alice);
    assert_success(&bob.finish(Duration::from_secs(20)));
    assert_success(&carol.finish(Duration::from_secs(20)));
    assert_eq!(
        deployment.edges[0]
            .metric("switchyard_edge_transfers_total{reason=\"connected\",result=\"succeeded\"}"),
        1.0
    );
}

#[test]
fn routes_change_after_the_routing_table_s_master_fails_over() {
    let mut cluster = RedisCluster::start(3, 1);
    let deployment = Deployment::start(&cluster.url(), 1);
    let routes_master = cluster
        .master_of("{routes}")
        .expect("a master serves the routing table");
    cluster.sync_replicas_of(routes_master);
    cluster.kill(routes_master);
    let (promoted, took) = cluster.wait_for_failover("{routes}", Duration::from_secs(30));
    eprintln!(
        "routing table master :{routes_master} killed; :{promoted} took over {took:.1?} later"
    );

    // The operator writes a new number after the failover; the edge, whose subscription
    // may have been on the dead node, serves it all the same.
    deployment.program_numbers(&["+15551230009"]);
    deployment
        .app
        .rcml("/voice", "<Response><Reject reason=\"busy\"/></Response>");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !deployment
        .refused_call("+15551230009", 486)
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the edge never served the number written after the failover:\n{}",
            deployment.edges[0].logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_store_follows_a_master_failover() {
    use switchyard_edge::store::{CallStore, RedisCallStore, new_call_sid};
    use switchyard_routing::{RedisAuth, RedisTarget};
    let mut cluster = RedisCluster::start(3, 1);
    let target = RedisTarget::parse(&cluster.url(), &RedisAuth::default()).expect("URL");
    let store =
        std::sync::Arc::new(RedisCallStore::new(target, Duration::from_secs(1)).expect("store"));
    // The edge polls every bucket's timers twice a second meanwhile.
    let poller = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let _ = store.due_timers(0, 64).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let victim = cluster.masters()[0];
    let tag = buckets_of(&cluster, victim)[0].clone();
    let sid = new_call_sid(&tag);
    store
        .create(&sid, b"x", Duration::from_secs(600), &[])
        .await
        .expect("create");
    cluster.sync_replicas_of(victim);
    cluster.kill(victim);
    let killed = Instant::now();
    let mut failures = Vec::new();
    loop {
        match store.load(&sid).await {
            Ok(found) => {
                assert_eq!(found.map(|(v, _)| v), Some(1), "the call survived");
                break;
            }
            Err(error) => failures.push(format!("{:.1?}: {error}", killed.elapsed())),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the store never recovered: {failures:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "store back {:.1?} after the kill, {} failed operations",
        killed.elapsed(),
        failures.len()
    );
    poller.abort();
}
