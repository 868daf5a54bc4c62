//! The Lease module against a fake API server that checks resourceVersions the way the
//! real one does: acquire, renew, lose, release and hand-over, and the run loop.
//! Time is paused (tokio's clock), so lease expiry is exact and the tests are fast.

mod common;

use std::time::Duration;

use common::FakeApi;
use switchyard_operator::leader::{LeaderElector, LeaseSettings};
use tokio::sync::watch;

const NS: &str = "switchyard-system";
const LEASE: &str = "switchyard-operator";

fn elector(client: &kube::Client, identity: &str) -> LeaderElector {
    LeaderElector::new(
        client.clone(),
        LeaseSettings::new(LEASE, NS, identity, Duration::from_secs(15)),
    )
}

fn holder(api: &FakeApi) -> Option<String> {
    api.lease(NS, LEASE)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

fn transitions(api: &FakeApi) -> i64 {
    api.lease(NS, LEASE)
        .and_then(|l| l["spec"]["leaseTransitions"].as_i64())
        .unwrap_or(-1)
}

#[tokio::test(start_paused = true)]
async fn the_first_replica_acquires_and_the_second_stands_by() {
    let (client, api) = FakeApi::start();
    let mut a = elector(&client, "pod-a");
    let mut b = elector(&client, "pod-b");

    assert!(a.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api), Some("pod-a".into()));
    assert_eq!(
        api.lease(NS, LEASE).unwrap()["spec"]["leaseDurationSeconds"],
        15
    );
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api), Some("pod-a".into()));
    assert_eq!(transitions(&api), 0);
}

#[tokio::test(start_paused = true)]
async fn the_leader_renews_and_keeps_the_lease_past_its_duration() {
    let (client, api) = FakeApi::start();
    let mut a = elector(&client, "pod-a");
    let mut b = elector(&client, "pod-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    let version =
        |api: &FakeApi| api.lease(NS, LEASE).unwrap()["metadata"]["resourceVersion"].clone();

    // Renewing every few seconds, for longer than the lease duration.
    for _ in 0..10 {
        let before = version(&api);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert_ne!(version(&api), before, "each renewal writes the Lease");
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "a renewed lease is never taken"
        );
    }
    assert_eq!(holder(&api), Some("pod-a".into()));
    assert_eq!(transitions(&api), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lease_not_renewed_for_its_duration_is_taken_over_and_the_old_leader_knows() {
    let (client, api) = FakeApi::start();
    let mut a = elector(&client, "pod-a");
    let mut b = elector(&client, "pod-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());

    // a stops renewing; b waits a full lease duration from when it saw the last change.
    tokio::time::advance(Duration::from_secs(14)).await;
    assert!(!b.try_acquire_or_renew().await.unwrap(), "not expired yet");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "expired: taken over"
    );
    assert_eq!(holder(&api), Some("pod-b".into()));
    assert_eq!(transitions(&api), 1);

    // The old leader finds out on its next round.
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api), Some("pod-b".into()));
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_handed_over_at_once() {
    let (client, api) = FakeApi::start();
    let mut a = elector(&client, "pod-a");
    let mut b = elector(&client, "pod-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());

    assert!(!b.release().await.unwrap(), "only the holder can release");
    assert!(a.release().await.unwrap());
    assert_eq!(holder(&api), None);
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "no waiting for expiry"
    );
    assert_eq!(holder(&api), Some("pod-b".into()));
}

#[tokio::test(start_paused = true)]
async fn a_write_that_loses_the_race_is_not_leadership() {
    let (client, api) = FakeApi::start();
    let mut a = elector(&client, "pod-a");
    let mut b = elector(&client, "pod-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::advance(Duration::from_secs(16)).await;

    // b reads an expired Lease, but pod-a renews it before b writes: the API server
    // answers b's write with 409, which must read as "not leader", not as an error.
    api.race_after_next_lease_read("pod-a");
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api), Some("pod-a".into()));
    assert_eq!(transitions(&api), 0);

    // Two replicas creating the Lease at once: the second create gets 409.
    let (client, api) = FakeApi::start();
    let mut c = elector(&client, "pod-c");
    api.race_after_next_lease_read("pod-z");
    assert!(!c.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api), Some("pod-z".into()));
    let creates = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/leases"))
        .count();
    assert_eq!(creates, 1, "c tried to create the Lease and lost");
}

async fn wait_until(rx: &mut watch::Receiver<bool>, value: bool, within: Duration) {
    tokio::time::timeout(within, rx.wait_for(|v| *v == value))
        .await
        .unwrap_or_else(|_| panic!("not {value} within {within:?}"))
        .expect("the elector is running");
}

#[tokio::test(start_paused = true)]
async fn run_loops_hand_over_when_the_leader_stops() {
    let (client, api) = FakeApi::start();
    let (a_tx, mut a_rx) = watch::channel(false);
    let (b_tx, mut b_rx) = watch::channel(false);
    let (a_stop_tx, a_stop) = watch::channel(false);
    let (b_stop_tx, b_stop) = watch::channel(false);
    let a_task = tokio::spawn(elector(&client, "pod-a").run(a_tx, a_stop));
    wait_until(&mut a_rx, true, Duration::from_secs(5)).await;
    let b_task = tokio::spawn(elector(&client, "pod-b").run(b_tx, b_stop));

    // b stands by while a renews, for several lease durations.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(*a_rx.borrow());
    assert!(
        !b_rx.has_changed().unwrap(),
        "b never claimed leadership while a held the lease"
    );

    // a stops (SIGTERM): it releases the lease and b takes over within a retry period.
    a_stop_tx.send(true).unwrap();
    a_task.await.unwrap();
    assert!(!*a_rx.borrow());
    assert_eq!(holder(&api), None);
    wait_until(&mut b_rx, true, Duration::from_secs(3)).await;
    assert_eq!(holder(&api), Some("pod-b".into()));

    b_stop_tx.send(true).unwrap();
    b_task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_anyone_may_take_over() {
    let (client, api) = FakeApi::start();
    let (a_tx, mut a_rx) = watch::channel(false);
    let (a_stop_tx, a_stop) = watch::channel(false);
    let a_task = tokio::spawn(elector(&client, "pod-a").run(a_tx, a_stop));
    wait_until(&mut a_rx, true, Duration::from_secs(5)).await;

    // The API server stops answering the leader's renewals.
    api.fail("/leases/", 500);
    let started = tokio::time::Instant::now();
    wait_until(&mut a_rx, false, Duration::from_secs(15)).await;
    let stepped_down = started.elapsed();
    assert!(
        stepped_down < Duration::from_secs(15),
        "stepped down after {stepped_down:?}, not before the lease could expire"
    );

    // Once the API answers again it leads again.
    api.clear_failures();
    wait_until(&mut a_rx, true, Duration::from_secs(5)).await;
    a_stop_tx.send(true).unwrap();
    a_task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stopped_leader_that_lost_the_lease_does_not_release_the_new_holders() {
    let (client, api) = FakeApi::start();
    let mut a = elector(&client, "pod-a");
    let mut b = elector(&client, "pod-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::advance(Duration::from_secs(16)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    assert!(!a.release().await.unwrap());
    assert_eq!(holder(&api), Some("pod-b".into()));
}
