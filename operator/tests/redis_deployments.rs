//! The operator binary on a real Redis Cluster and a real Sentinel deployment: it
//! programs PhoneNumbers, and goes on programming them after the master holding the
//! routing table fails over, with no restart.

mod common;

use std::time::{Duration, Instant};

use common::process::{Replica, kubeconfig, owner, programmed, scratch};
use common::{FakeApi, number};
use switchyard_routing::RedisRoutes;
use switchyard_tests::routes::table;
use switchyard_tests::{RedisCluster, RedisSentinel};

/// Runs one operator on `url`, checks it programs number A, lets `fail_over` take the
/// routing table's master away (returning once a replica serves it), then checks number
/// B, created after the failover, is programmed too.
async fn programs_across_a_failover(name: &str, url: &str, fail_over: impl FnOnce()) {
    let (addr, api) = FakeApi::start_http().await;
    let routes: RedisRoutes = table(url);
    let dir = scratch(name);
    let kubeconfig = kubeconfig(&dir, addr);
    let within = Duration::from_secs(30);
    api.create("telephony", "number-a", 100, number("+15551230001"));
    let mut replica = Replica::start("pod-a", &dir, &kubeconfig, url);
    api.wait_until(within, "number-a programmed", || async {
        programmed(&api, "number-a")
            && owner(&routes, "n:+15551230001").await.as_deref() == Some("telephony/number-a")
    })
    .await;

    let killed = Instant::now();
    tokio::task::block_in_place(fail_over);
    api.create("telephony", "number-b", 200, number("+15551230002"));
    api.wait_until(within, "number-b programmed after the failover", || async {
        programmed(&api, "number-b")
            && owner(&routes, "n:+15551230002").await.as_deref() == Some("telephony/number-b")
    })
    .await;
    eprintln!(
        "{name}: routing table master failed over; a PhoneNumber created then was programmed \
         {:.1?} after the kill",
        killed.elapsed()
    );
    // Both routes are in the table the replica took over.
    assert_eq!(
        owner(&routes, "n:+15551230001").await.as_deref(),
        Some("telephony/number-a")
    );
    let status = replica.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", replica.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_programs_a_redis_cluster_across_a_failover() {
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 1));
    let url = cluster.url();
    programs_across_a_failover("cluster", &url, || {
        let master = cluster
            .master_of("{routes}")
            .expect("a master for {routes}");
        cluster.sync_replicas_of(master);
        cluster.kill(master);
        cluster.wait_for_failover("{routes}", Duration::from_secs(30));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_programs_a_sentinel_master_across_a_failover() {
    let mut sentinel = tokio::task::block_in_place(RedisSentinel::start);
    let url = sentinel.url();
    programs_across_a_failover("sentinel", &url, || {
        sentinel.sync_replica();
        let old = sentinel.kill_master();
        sentinel.wait_for_failover(old, Duration::from_secs(30));
    })
    .await;
}
