//! The `switchyard-operator` binary: its flags, its errors, and two replicas running
//! against the fake API server over HTTP (kubeconfig) and a real redis-server, handing
//! the Lease over on SIGTERM.

mod common;

use std::time::Duration;

use common::process::{Replica, holder, kubeconfig, operator, owner, programmed, scratch};
use common::{FakeApi, number};
use switchyard_routing::RedisRoutes;
use switchyard_tests::RedisServer;

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let out = operator().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--redis-url <URL>",
        "[env: SWITCHYARD_REDIS_URL=]",
        "--redis-password <PASSWORD>",
        "[env: SWITCHYARD_REDIS_PASSWORD]",
        "--redis-sentinel-password <PASSWORD>",
        "[env: SWITCHYARD_REDIS_SENTINEL_PASSWORD]",
        "redis+cluster://",
        "redis+sentinel://",
        "--namespace <NAMESPACE>",
        "[env: SWITCHYARD_NAMESPACES=]",
        "--resync-interval <DURATION>",
        "[default: 60s]",
        "--metrics-listen <ADDR>",
        "[default: 0.0.0.0:9090]",
        "--lease-name <NAME>",
        "[default: switchyard-operator]",
        "--lease-namespace <NAMESPACE>",
        "[env: POD_NAMESPACE=]",
        "--identity <NAME>",
        "[env: POD_NAME=]",
        "--lease-duration <DURATION>",
        "[default: 15s]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag:?}:\n{help}");
    }
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_flag() {
    let cases: [(&[&str], &str); 4] = [
        (&[], "--redis-url"),
        (&["--redis-url", "http://example/"], "--redis-url"),
        (
            &[
                "--redis-url",
                "redis://127.0.0.1/",
                "--resync-interval",
                "often",
            ],
            "--resync-interval",
        ),
        (
            &[
                "--redis-url",
                "redis://127.0.0.1/",
                "--metrics-listen",
                "nowhere",
            ],
            "--metrics-listen",
        ),
    ];
    for (args, flag) in cases {
        let out = operator().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn without_a_kubernetes_configuration_it_exits_with_a_message() {
    let home = scratch("no-kube");
    let out = operator()
        .args(["--redis-url", "redis://127.0.0.1:1/"])
        .args(["--metrics-listen", "127.0.0.1:0", "--identity", "t"])
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Kubernetes client configuration"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn a_metrics_address_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = operator()
        .args(["--redis-url", "redis://127.0.0.1:1/", "--identity", "t"])
        .args(["--metrics-listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_hand_over_on_sigterm() {
    let (addr, api) = FakeApi::start_http().await;
    let redis = RedisServer::start();
    let routes = RedisRoutes::open(&redis.url()).unwrap();
    let dir = scratch("replicas");
    let kubeconfig = kubeconfig(&dir, addr);
    api.create("telephony", "number-a", 100, number("+15551230001"));
    let within = Duration::from_secs(20);

    let mut a = Replica::start("pod-a", &dir, &kubeconfig, &redis.url());
    api.wait_until(within, "pod-a leads and programs number-a", || async {
        holder(&api).as_deref() == Some("pod-a")
            && programmed(&api, "number-a")
            && owner(&routes, "n:+15551230001").await.as_deref() == Some("telephony/number-a")
            && a.is_leader().await == Some(true)
    })
    .await;
    assert!(a.get("/readyz").await.unwrap().starts_with("HTTP/1.1 200"));
    assert!(a.get("/healthz").await.unwrap().starts_with("HTTP/1.1 200"));

    let mut b = Replica::start("pod-b", &dir, &kubeconfig, &redis.url());
    api.wait_until(within, "pod-b up as a standby", || async {
        b.is_leader().await == Some(false)
    })
    .await;
    assert!(b.get("/readyz").await.unwrap().starts_with("HTTP/1.1 200"));
    assert_eq!(holder(&api).as_deref(), Some("pod-a"));

    // SIGTERM to the leader: it exits cleanly and releases the Lease; pod-b takes over
    // well before the 3 s lease would have expired, and programs what changes next.
    let status = a.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", a.log());
    assert!(a.log().contains("released the lease"), "{}", a.log());
    api.wait_until(within, "pod-b leads", || async {
        holder(&api).as_deref() == Some("pod-b") && b.is_leader().await == Some(true)
    })
    .await;
    api.create("telephony", "number-b", 200, number("+15551230002"));
    api.wait_until(within, "pod-b programs number-b", || async {
        programmed(&api, "number-b")
            && owner(&routes, "n:+15551230002").await.as_deref() == Some("telephony/number-b")
    })
    .await;

    let status = b.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", b.log());
    assert_eq!(holder(&api), None, "released on shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_stops_writing_and_takes_it_back_when_it_lapses() {
    let (addr, api) = FakeApi::start_http().await;
    let redis = RedisServer::start();
    let routes = RedisRoutes::open(&redis.url()).unwrap();
    let dir = scratch("lost-lease");
    let kubeconfig = kubeconfig(&dir, addr);
    api.create("telephony", "number-a", 100, number("+15551230001"));
    let within = Duration::from_secs(20);

    let mut a = Replica::start("pod-a", &dir, &kubeconfig, &redis.url());
    api.wait_until(within, "pod-a leads and programs number-a", || async {
        programmed(&api, "number-a") && a.is_leader().await == Some(true)
    })
    .await;

    // Another replica takes the Lease: pod-a notices on its next renewal and stops.
    api.steal_lease("switchyard-system", "switchyard-operator", "pod-x");
    api.wait_until(within, "pod-a stands by", || async {
        a.is_leader().await == Some(false)
    })
    .await;
    assert!(a.log().contains("lost the lease"), "{}", a.log());

    // While pod-x holds the Lease, pod-a writes nothing. pod-x never renews, so after
    // the 3 s lease duration pod-a takes the Lease back and programs what it missed.
    api.create("telephony", "number-b", 200, number("+15551230002"));
    let stolen = tokio::time::Instant::now();
    let checks_while_stolen = std::sync::atomic::AtomicUsize::new(0);
    api.wait_until(within, "pod-a takes the lapsed Lease back", || async {
        if holder(&api).as_deref() == Some("pod-x") {
            assert!(
                !programmed(&api, "number-b") && owner(&routes, "n:+15551230002").await.is_none(),
                "pod-a wrote while another replica held the Lease"
            );
            checks_while_stolen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        holder(&api).as_deref() == Some("pod-a")
    })
    .await;
    assert!(checks_while_stolen.into_inner() > 0);
    assert!(
        stolen.elapsed() >= Duration::from_secs(2),
        "pod-a waited for the stolen Lease to lapse ({:?})",
        stolen.elapsed()
    );
    api.wait_until(within, "pod-a programs what it missed", || async {
        programmed(&api, "number-b") && owner(&routes, "n:+15551230002").await.is_some()
    })
    .await;
    let status = a.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", a.log());
    let _ = std::fs::remove_dir_all(dir);
}
