//! Opt-in end-to-end test against a real Kubernetes cluster:
//!
//! ```sh
//! SWITCHYARD_E2E_KUBECONFIG=~/.kube/config cargo test -p switchyard-operator --test e2e_cluster
//! ```
//!
//! It installs the PhoneNumber CRD (server-side apply, needs rights on CRDs), creates a
//! scratch namespace, runs the leader work in-process against a local redis-server, and
//! checks create, conflict, take-over and delete; then deletes the namespace. Without the
//! variable it passes without doing anything (there is no cluster on CI machines).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use switchyard_operator::controller::{LeaderWork, ready_condition};
use switchyard_operator::metrics::Metrics;
use switchyard_routing::{HttpMethod, PhoneNumber, PhoneNumberSpec, RedisRoutes};
use switchyard_tests::RedisServer;
use tokio::sync::watch;

fn spec(number: &str) -> PhoneNumberSpec {
    PhoneNumberSpec {
        phone_number: Some(number.into()),
        pattern: None,
        priority: None,
        friendly_name: None,
        voice_url: "http://apps.example/voice.xml".into(),
        voice_method: HttpMethod::Post,
        voice_fallback_url: None,
        voice_fallback_method: HttpMethod::Post,
        refer_url: None,
        refer_method: HttpMethod::Post,
        status_callback: None,
        refer_target_allow: Vec::new(),
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 60 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn reason(api: &Api<PhoneNumber>, name: &str) -> Option<String> {
    let pn = api.get_opt(name).await.ok()??;
    ready_condition(&pn).map(|c| c.reason.clone())
}

async fn owner(routes: &RedisRoutes, field: &str) -> Option<String> {
    let (_, routes) = routes.load().await.ok()?;
    routes
        .into_iter()
        .find(|r| r.key.field() == field)
        .map(|r| r.owner.0)
}

#[tokio::test]
async fn against_a_real_cluster() {
    let Some(path) = std::env::var_os("SWITCHYARD_E2E_KUBECONFIG") else {
        eprintln!("SWITCHYARD_E2E_KUBECONFIG not set: skipping the real-cluster test");
        return;
    };
    let kubeconfig = Kubeconfig::read_from(path).expect("a readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let client = Client::try_from(config).expect("a client");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "phonenumbers.switchyard.dev",
        &PatchParams::apply("switchyard-e2e").force(),
        &Patch::Apply(PhoneNumber::crd()),
    )
    .await
    .expect("the CRD applied");
    eventually("the CRD is established", || async {
        crds.get_opt("phonenumbers.switchyard.dev")
            .await
            .ok()
            .flatten()
            .and_then(|crd| crd.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;

    let ns = format!("switchyard-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("a scratch namespace");

    let redis = RedisServer::start();
    let routes = RedisRoutes::open(&redis.url()).unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let work = LeaderWork {
        client: client.clone(),
        routes: routes.clone(),
        metrics: Arc::new(Metrics::new()),
        namespaces: vec![ns.clone()],
        resync_interval: Duration::from_secs(60),
        identity: "e2e".into(),
    };
    let task = tokio::spawn(work.run(stop_rx, || {}));

    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    pns.create(
        &PostParams::default(),
        &PhoneNumber::new("first", spec("+15550000001")),
    )
    .await
    .unwrap();
    eventually("first is programmed", || async {
        reason(&pns, "first").await.as_deref() == Some("Programmed")
            && owner(&routes, "n:+15550000001").await == Some(format!("{ns}/first"))
    })
    .await;
    // Creation timestamps have one-second resolution: make the second one younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pns.create(
        &PostParams::default(),
        &PhoneNumber::new("second", spec("+15550000001")),
    )
    .await
    .unwrap();
    eventually("second reports the conflict", || async {
        reason(&pns, "second").await.as_deref() == Some("Conflict")
    })
    .await;

    pns.delete("first", &DeleteParams::default()).await.unwrap();
    eventually("second takes over, first is gone", || async {
        pns.get_opt("first").await.ok().flatten().is_none()
            && reason(&pns, "second").await.as_deref() == Some("Programmed")
            && owner(&routes, "n:+15550000001").await == Some(format!("{ns}/second"))
    })
    .await;

    pns.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the route is removed", || async {
        owner(&routes, "n:+15550000001").await.is_none()
    })
    .await;

    stop_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
