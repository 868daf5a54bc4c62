//! Switchyard on a real Sentinel deployment (one master, one replica, three sentinels):
//! the master killed with calls up. The test prints what the failover cost (run with
//! `--nocapture`): how long the sentinels took, new calls refused meanwhile, calls lost.

mod deployments;

use std::time::{Duration, Instant};

use deployments::{Deployment, hang_up_all, held_calls, new_calls_until_answered, seed_transfer};
use switchyard_tests::RedisSentinel;
use switchyard_tests::sipp::{Sipp, assert_success};

#[test]
fn the_master_killed_with_calls_up_fails_over_and_the_calls_carry_on() {
    let mut sentinel = RedisSentinel::start();
    let deployment = Deployment::start(&sentinel.url(), 2);
    // Bob answers the 8 calls held, the first new call answered after the kill, and 3
    // more.
    let bob = Sipp::server_with("uas_answer.xml", &["-m", "12"]);
    deployment.dial_bob(&bob.addr);
    let mut calls = held_calls(&deployment, 8);

    sentinel.sync_replica();
    let old = sentinel.kill_master();
    let killed = Instant::now();
    // Every call is on the one master: any new call waits for the failover.
    let new_calls =
        new_calls_until_answered(&deployment, |_| true, killed, Duration::from_secs(40));
    let (promoted, _) = sentinel.wait_for_failover(old, Duration::from_secs(40));
    let failed_over = killed.elapsed();

    let ended = hang_up_all(&deployment, &mut calls);
    deployment.new_calls_work(3);
    eprintln!(
        "sentinel failover with calls up: master :{old} killed; the sentinels named \
         :{promoted} {failed_over:.1?} later; new calls refused meanwhile: {} (503), the \
         first answered {:.1?} after the kill; calls in progress ended afterwards: \
         {ended} of {} (lost: {})",
        new_calls.refused.len(),
        new_calls.first_answered,
        calls.len(),
        calls.len() - ended,
    );
    assert_eq!(ended, calls.len(), "calls lost in the failover");
    assert_success(&bob.finish(Duration::from_secs(15)));

    // The seed transfer on the promoted master, through the same edges.
    let (bob, carol) = seed_transfer(&deployment, "uas_target.xml");
    assert_success(&deployment.alice("uac_transferee.xml"));
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert_success(&carol.finish(Duration::from_secs(15)));
}
