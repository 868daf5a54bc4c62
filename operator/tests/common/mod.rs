//! Shared set-up for the operator's integration tests: a fake Kubernetes API (see
//! `fake_api.rs`) and a real `redis-server`.

#![allow(dead_code)]

pub mod fake_api;
pub mod process;

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use switchyard_operator::controller::{self, Context, Error, ready_condition};
use switchyard_operator::inventory::{Inventory, Triggers};
use switchyard_operator::metrics::Metrics;
use switchyard_routing::{HttpMethod, PhoneNumber, PhoneNumberSpec, RedisRoutes};
use switchyard_tests::RedisServer;
use tokio::sync::mpsc;

pub use fake_api::FakeApi;

pub fn number(n: &str) -> PhoneNumberSpec {
    spec(Some(n), None)
}

pub fn pattern(p: &str) -> PhoneNumberSpec {
    spec(None, Some(p))
}

fn spec(number: Option<&str>, pattern: Option<&str>) -> PhoneNumberSpec {
    PhoneNumberSpec {
        phone_number: number.map(str::to_string),
        pattern: pattern.map(str::to_string),
        priority: None,
        friendly_name: None,
        voice_url: "http://apps.example/dial-bob.xml".into(),
        voice_method: HttpMethod::Post,
        voice_fallback_url: None,
        voice_fallback_method: HttpMethod::Post,
        refer_url: Some("http://apps.example/refer.xml".into()),
        refer_method: HttpMethod::Post,
        status_callback: None,
        refer_target_allow: Vec::new(),
    }
}

pub struct Harness {
    pub api: FakeApi,
    pub redis: RedisServer,
    pub routes: RedisRoutes,
    pub ctx: Arc<Context>,
    pub metrics: Arc<Metrics>,
    pub triggered: mpsc::UnboundedReceiver<ObjectRef<PhoneNumber>>,
}

/// What the Ready condition says: (status, reason, message).
pub type ReadyView = (String, String, String);

impl Harness {
    pub fn new() -> Self {
        let (client, api) = FakeApi::start();
        let redis = RedisServer::start();
        let routes = RedisRoutes::open(&redis.url()).expect("a redis URL");
        let (triggers, triggered) = Triggers::channel();
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            client,
            routes.clone(),
            Inventory::new(vec![api.store()]),
            triggers,
            metrics.clone(),
            Some("test-replica".into()),
        ));
        Harness {
            api,
            redis,
            routes,
            ctx,
            metrics,
            triggered,
        }
    }

    /// One reconcile of the resource as the API holds it now.
    pub async fn reconcile(&self, namespace: &str, name: &str) -> Result<Action, Error> {
        let pn = self
            .api
            .get(namespace, name)
            .unwrap_or_else(|| panic!("{namespace}/{name} exists"));
        controller::reconcile(Arc::new(pn), self.ctx.clone()).await
    }

    /// Reconciles as the controller would after the watch events a reconcile causes:
    /// once to add the finalizer (if missing), once more to program.
    pub async fn settle(&self, namespace: &str, name: &str) -> Result<Action, Error> {
        let has_finalizer = self
            .api
            .get(namespace, name)
            .is_some_and(|pn| pn.metadata.finalizers.is_some_and(|f| !f.is_empty()));
        if !has_finalizer {
            self.reconcile(namespace, name).await?;
        }
        self.reconcile(namespace, name).await
    }

    /// The routing table in Redis: entries field -> owner.
    pub async fn table(&self) -> BTreeMap<String, String> {
        let (_, routes) = self.routes.load().await.expect("redis answers");
        routes
            .into_iter()
            .map(|r| (r.key.field(), r.owner.0))
            .collect()
    }

    pub fn ready(&self, namespace: &str, name: &str) -> Option<ReadyView> {
        let pn = self.api.get(namespace, name)?;
        ready_condition(&pn).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    /// Event reasons posted about `name`, in order.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/events"))
            .filter(|r| r.body["regarding"]["name"] == name)
            .map(|r| r.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Drains the queued reconcile triggers, as names.
    pub fn drain_triggers(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(obj) = self.triggered.try_recv() {
            names.push(format!(
                "{}/{}",
                obj.namespace.unwrap_or_default(),
                obj.name
            ));
        }
        names
    }
}
