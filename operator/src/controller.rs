//! The reconcile pipeline for one PhoneNumber: validate, decide, apply, update status.
//!
//! ```text
//! reconcile(pn)
//!   finalizer missing      -> add `switchyard.dev/route-cleanup`, wait for the update
//!   being deleted          -> cleanup: remove the route it owns, hand the key over, release
//!   otherwise              -> apply:
//!       1. validate + decide  (ownership::decide against every watched resource)
//!       2. write Redis        owner: upsert its route; otherwise: remove any route it held
//!       3. status             server-side apply of observedGeneration + Ready condition
//!       4. on a state change  a Kubernetes Event, and a reconcile of the other claimants
//! ```
//!
//! Redis writes are guarded by the table lock (shared), so a full sync (exclusive) never
//! overwrites a write made after its snapshot of the watch cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use switchyard_routing::{PhoneNumber, PhoneNumberStatus, RedisRoutes, RouteWriter, StoreError};
use thiserror::Error;
use tokio::sync::{RwLock, mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::inventory::{Inventory, Triggers};
use crate::metrics::{Metrics, ReconcileResult};
use crate::ownership::{self, Outcome, owner_of};
use crate::{FIELD_MANAGER, FINALIZER};

/// The condition type the operator owns.
pub const READY: &str = "Ready";

/// Condition reasons (see `docs/operator.md`).
pub mod reason {
    pub const PROGRAMMED: &str = "Programmed";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CONFLICT: &str = "Conflict";
    pub const REDIS_UNAVAILABLE: &str = "RedisUnavailable";
    /// Event reason only: the route was removed because the resource is being deleted.
    pub const ROUTE_REMOVED: &str = "RouteRemoved";
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[source] StoreError),
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("the watch cache is gone (the operator is stopping)")]
    CacheGone,
    #[error("the resource has no namespace")]
    NoNamespace,
}

/// Everything a reconcile needs; tests build one over a mock API server.
pub struct Context {
    pub client: Client,
    pub routes: RedisRoutes,
    pub inventory: Inventory,
    pub triggers: Triggers,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Shared by reconcile writes, exclusive for a full sync.
    pub table_lock: RwLock<()>,
    failures: Mutex<HashMap<ObjectRef<PhoneNumber>, u32>>,
    /// Set when a resource changed state: the route and conflict gauges need a recount.
    gauges_stale: AtomicBool,
}

impl Context {
    pub fn new(
        client: Client,
        routes: RedisRoutes,
        inventory: Inventory,
        triggers: Triggers,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            routes,
            inventory,
            triggers,
            metrics,
            table_lock: RwLock::new(()),
            failures: Mutex::new(HashMap::new()),
            gauges_stale: AtomicBool::new(true),
        }
    }

    /// Whether the gauges need a recount since the last call.
    pub fn take_gauges_stale(&self) -> bool {
        self.gauges_stale.swap(false, Ordering::Relaxed)
    }

    fn failed(&self, key: ObjectRef<PhoneNumber>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn succeeded(&self, key: &ObjectRef<PhoneNumber>) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Retry delay after `attempt` consecutive failures: 500 ms doubling up to 60 s.
pub fn backoff(attempt: u32) -> Duration {
    let millis = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(millis.min(60_000))
}

/// The Ready condition a resource should show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Ready {
    pub fn from_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Owns(route) => Ready {
                ok: true,
                reason: reason::PROGRAMMED,
                message: format!("{} is programmed in the routing table", route.key),
            },
            Outcome::Conflict { key, holder } => Ready {
                ok: false,
                reason: reason::CONFLICT,
                message: format!(
                    "{key} is owned by PhoneNumber {holder}, which takes precedence (older, or first by namespace/name); this one takes over when that one is deleted or changed"
                ),
            },
            Outcome::Invalid(errors) => Ready {
                ok: false,
                reason: reason::INVALID_SPEC,
                message: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        }
    }

    pub fn redis_unavailable(error: &StoreError) -> Self {
        Ready {
            ok: false,
            reason: reason::REDIS_UNAVAILABLE,
            message: format!("the routing table could not be written: {error}; retrying"),
        }
    }

    fn result(&self) -> ReconcileResult {
        match self.reason {
            reason::PROGRAMMED => ReconcileResult::Programmed,
            reason::CONFLICT => ReconcileResult::Conflict,
            reason::INVALID_SPEC => ReconcileResult::InvalidSpec,
            reason::REDIS_UNAVAILABLE => ReconcileResult::RedisUnavailable,
            _ => ReconcileResult::Error,
        }
    }
}

/// The resource's current Ready condition, if any.
pub fn ready_condition(pn: &PhoneNumber) -> Option<&Condition> {
    pn.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
}

/// Whether the status already says `ready` for the current generation.
pub fn status_is_current(pn: &PhoneNumber, ready: &Ready) -> bool {
    let observed = pn.status.as_ref().and_then(|s| s.observed_generation);
    let same_condition = ready_condition(pn).is_some_and(|c| {
        c.status == status_word(ready.ok)
            && c.reason == ready.reason
            && c.message == ready.message
            && c.observed_generation == pn.metadata.generation
    });
    observed == pn.metadata.generation && same_condition
}

fn status_word(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// The status to apply: the Ready condition keeps its `lastTransitionTime` unless its
/// status flips.
pub fn desired_status(pn: &PhoneNumber, ready: &Ready, now: Timestamp) -> PhoneNumberStatus {
    let word = status_word(ready.ok);
    let last_transition_time = ready_condition(pn)
        .filter(|c| c.status == word)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PhoneNumberStatus {
        observed_generation: pn.metadata.generation,
        conditions: vec![Condition {
            type_: READY.into(),
            status: word.into(),
            reason: ready.reason.into(),
            message: ready.message.clone(),
            observed_generation: pn.metadata.generation,
            last_transition_time,
        }],
    }
}

/// Reconciles one PhoneNumber (the controller calls this; tests call it directly).
pub async fn reconcile(pn: Arc<PhoneNumber>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", resource = %owner_of(&pn));
    async move {
        ctx.inventory
            .wait_until_ready()
            .await
            .map_err(|_| Error::CacheGone)?;
        let started = Instant::now();
        let namespace = pn.namespace().ok_or(Error::NoNamespace)?;
        let api: Api<PhoneNumber> = Api::namespaced(ctx.client.clone(), &namespace);
        let key = ObjectRef::from_obj(&*pn);
        let result = finalizer::finalizer(&api, FINALIZER, pn, |event| async {
            match event {
                Finalizer::Apply(pn) => apply(&pn, &api, &ctx).await,
                Finalizer::Cleanup(pn) => cleanup(&pn, &api, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        let elapsed = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => ctx.succeeded(&key),
            Err(error) => {
                let result = match error {
                    Error::Finalizer(inner) => match inner.as_ref() {
                        finalizer::Error::ApplyFailed(Error::Redis(_))
                        | finalizer::Error::CleanupFailed(Error::Redis(_)) => {
                            ReconcileResult::RedisUnavailable
                        }
                        _ => ReconcileResult::Error,
                    },
                    _ => ReconcileResult::Error,
                };
                ctx.metrics.reconciled(result, elapsed);
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Validate, decide, write, report.
async fn apply(pn: &PhoneNumber, api: &Api<PhoneNumber>, ctx: &Context) -> Result<Action, Error> {
    let started = Instant::now();
    let owner = owner_of(pn);

    // 1. Validate and decide, against every resource the operator watches.
    let guard = ctx.table_lock.read().await;
    let all = ctx.inventory.state();
    let outcome = ownership::decide(pn, &all);

    // 2. Write the routing table: the owner writes its route; anyone else makes sure it
    //    holds no route (its number may have changed, or an older resource appeared).
    //    `remove` never removes a route another owner holds.
    let written = match &outcome {
        Outcome::Owns(route) => ctx.routes.upsert(route).await,
        Outcome::Conflict { .. } | Outcome::Invalid(_) => ctx.routes.remove(&owner).await.map(drop),
    };
    drop(guard);
    let ready = match &written {
        Ok(()) => Ready::from_outcome(&outcome),
        Err(error) => Ready::redis_unavailable(error),
    };

    // 3. Status, 4. events and the other claimants, when something changed.
    let changed = update_status(pn, api, &ready).await?;
    if changed {
        ctx.gauges_stale.store(true, Ordering::Relaxed);
        announce(pn, &ready, ctx).await;
        trigger_claimants(pn, &outcome, &all, ctx);
    }
    match written {
        Ok(()) => {
            debug!(reason = ready.reason, "reconciled");
            ctx.metrics
                .reconciled(ready.result(), started.elapsed().as_secs_f64());
            Ok(Action::await_change())
        }
        Err(error) => {
            warn!(%error, "routing table write failed; will retry");
            Err(Error::Redis(error))
        }
    }
}

/// The resource is being deleted: remove its route, then let the next claimant take over.
async fn cleanup(pn: &PhoneNumber, api: &Api<PhoneNumber>, ctx: &Context) -> Result<Action, Error> {
    let started = Instant::now();
    let owner = owner_of(pn);
    let guard = ctx.table_lock.read().await;
    let removed = ctx.routes.remove(&owner).await;
    drop(guard);
    let removed = match removed {
        Ok(removed) => removed,
        Err(error) => {
            warn!(%error, "could not remove the route of a deleted resource; will retry");
            let ready = Ready::redis_unavailable(&error);
            if update_status(pn, api, &ready).await? {
                announce(pn, &ready, ctx).await;
            }
            return Err(Error::Redis(error));
        }
    };
    if removed {
        info!("route removed");
        publish(
            pn,
            ctx,
            EventType::Normal,
            reason::ROUTE_REMOVED,
            "the route was removed from the routing table",
        )
        .await;
    }
    ctx.gauges_stale.store(true, Ordering::Relaxed);
    let all = ctx.inventory.state();
    let outcome = ownership::decide(pn, &all);
    trigger_claimants(pn, &outcome, &all, ctx);
    ctx.metrics
        .reconciled(ReconcileResult::Deleted, started.elapsed().as_secs_f64());
    Ok(Action::await_change())
}

/// Applies the status if it differs from what the resource shows; returns whether the
/// Ready condition changed (reason or message), which is a state change worth an Event.
async fn update_status(
    pn: &PhoneNumber,
    api: &Api<PhoneNumber>,
    ready: &Ready,
) -> Result<bool, Error> {
    if status_is_current(pn, ready) {
        return Ok(false);
    }
    let state_changed =
        ready_condition(pn).is_none_or(|c| c.reason != ready.reason || c.message != ready.message);
    let status = desired_status(pn, ready, Timestamp::now());
    let patch = json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "PhoneNumber",
        "status": status,
    });
    api.patch_status(
        &pn.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    if state_changed {
        info!(ready = ready.ok, reason = ready.reason, detail = %ready.message, "status changed");
    }
    Ok(state_changed)
}

async fn announce(pn: &PhoneNumber, ready: &Ready, ctx: &Context) {
    let kind = if ready.ok {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish(pn, ctx, kind, ready.reason, &ready.message).await;
}

async fn publish(pn: &PhoneNumber, ctx: &Context, kind: EventType, reason: &str, note: &str) {
    let event = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &pn.object_ref(&())).await {
        // Events are for people; failing to record one must not fail the reconcile.
        warn!(%error, reason, "could not publish an event");
    }
}

/// After a change to `pn`, others may need to change too: whoever also claims its key
/// (an older one appeared, or it took over), and every resource waiting in Conflict
/// (the key `pn` held before may be free now).
fn trigger_claimants(pn: &PhoneNumber, outcome: &Outcome, all: &[Arc<PhoneNumber>], ctx: &Context) {
    let me = owner_of(pn);
    let key = match outcome {
        Outcome::Owns(route) => Some(&route.key),
        Outcome::Conflict { key, .. } => Some(key),
        Outcome::Invalid(_) => None,
    };
    let waiting =
        |other: &PhoneNumber| ready_condition(other).is_some_and(|c| c.reason == reason::CONFLICT);
    for other in all {
        if owner_of(other) == me {
            continue;
        }
        let same_key = key.is_some_and(|key| ownership::claims(other, key));
        if same_key || waiting(other) {
            debug!(other = %owner_of(other), "queueing a reconcile of another claimant");
            ctx.triggers.reconcile(other);
        }
    }
}

/// Requeue after a failure, with a per-resource exponential backoff.
pub fn error_policy(pn: Arc<PhoneNumber>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.failed(ObjectRef::from_obj(&*pn));
    let delay = backoff(attempt);
    warn!(resource = %owner_of(&pn), %error, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What the leader runs: one controller per watched scope, and the resync loop.
pub struct LeaderWork {
    pub client: Client,
    pub routes: RedisRoutes,
    pub metrics: Arc<Metrics>,
    pub namespaces: Vec<String>,
    pub resync_interval: Duration,
    pub identity: String,
}

impl LeaderWork {
    /// Runs until `stop` turns true; `synced` is called once every watch cache is ready.
    pub async fn run(self, stop: watch::Receiver<bool>, synced: impl FnOnce() + Send) {
        let scopes: Vec<(Option<String>, Api<PhoneNumber>)> = if self.namespaces.is_empty() {
            vec![(None, Api::all(self.client.clone()))]
        } else {
            self.namespaces
                .iter()
                .map(|ns| (Some(ns.clone()), Api::namespaced(self.client.clone(), ns)))
                .collect()
        };
        let mut controllers = Vec::new();
        let mut stores = Vec::new();
        let mut senders = Vec::new();
        for (scope, api) in scopes {
            let controller = Controller::new(api, watcher::Config::default());
            stores.push(controller.store());
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push((scope.clone(), tx));
            controllers.push((scope, controller, rx));
        }
        let ctx = Arc::new(Context::new(
            self.client,
            self.routes,
            Inventory::new(stores),
            Triggers::new(senders),
            self.metrics,
            Some(self.identity),
        ));

        let runs = controllers.into_iter().map(|(scope, controller, rx)| {
            let stop = stop.clone();
            let triggered = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|obj| (obj, rx))
            });
            let scope = scope.unwrap_or_else(|| "all namespaces".into());
            controller
                .reconcile_on(triggered)
                .graceful_shutdown_on(async move {
                    let mut stop = stop;
                    crate::stopped(&mut stop).await;
                })
                .run(reconcile, error_policy, ctx.clone())
                .for_each(move |result| {
                    match result {
                        // The watch failed (CRD missing, RBAC, API unreachable): kube
                        // retries with backoff; say so, since nothing is reconciled.
                        Err(ControllerError::QueueError(error)) => {
                            warn!(scope = %scope, %error, "watching PhoneNumbers failed; retrying");
                        }
                        // Reconcile failures are logged by error_policy.
                        Err(error) => debug!(scope = %scope, %error, "controller"),
                        Ok(_) => {}
                    }
                    std::future::ready(())
                })
        });
        let ready = {
            let ctx = ctx.clone();
            async move {
                if ctx.inventory.wait_until_ready().await.is_ok() {
                    info!("watch caches synced");
                    synced();
                }
            }
        };
        let resync = crate::resync::run(ctx.clone(), self.resync_interval, stop.clone());
        futures_util::join!(futures_util::future::join_all(runs), resync, ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::tests::spec;
    use switchyard_routing::validate::validate_spec;

    fn resource(generation: i64) -> PhoneNumber {
        let mut pn = PhoneNumber::new("a", spec(Some("+1555"), None));
        pn.metadata.namespace = Some("t".into());
        pn.metadata.generation = Some(generation);
        pn
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn ready_reasons_follow_the_outcome() {
        let pn = resource(1);
        let owns = ownership::decide(&pn, &[]);
        let ready = Ready::from_outcome(&owns);
        assert!(ready.ok);
        assert_eq!(ready.reason, "Programmed");
        assert!(ready.message.contains("number +1555"), "{}", ready.message);

        let mut bad = spec(None, Some("1555("));
        bad.voice_url = "nope".into();
        let errors = validate_spec(&bad).unwrap_err();
        let ready = Ready::from_outcome(&Outcome::Invalid(errors));
        assert!(!ready.ok);
        assert_eq!(ready.reason, "InvalidSpec");
        assert!(
            ready.message.contains("spec.pattern: "),
            "{}",
            ready.message
        );
        assert!(
            ready.message.contains("spec.voiceUrl: "),
            "{}",
            ready.message
        );
    }

    #[test]
    fn status_keeps_the_transition_time_unless_the_status_flips() {
        let mut pn = resource(1);
        let programmed = Ready::from_outcome(&ownership::decide(&pn, &[]));
        let t1 = Timestamp::from_second(1_000).unwrap();
        let t2 = Timestamp::from_second(2_000).unwrap();
        pn.status = Some(desired_status(&pn, &programmed, t1));
        assert!(status_is_current(&pn, &programmed));

        pn.metadata.generation = Some(2);
        assert!(
            !status_is_current(&pn, &programmed),
            "a new generation needs a new status"
        );
        let again = desired_status(&pn, &programmed, t2);
        assert_eq!(again.conditions[0].last_transition_time, Time(t1));
        assert_eq!(again.observed_generation, Some(2));

        let down = Ready::redis_unavailable(&StoreError::Redis(redis::RedisError::from((
            redis::ErrorKind::Io,
            "refused",
        ))));
        let flipped = desired_status(&pn, &down, t2);
        assert_eq!(flipped.conditions[0].last_transition_time, Time(t2));
        assert_eq!(flipped.conditions[0].status, "False");
        assert_eq!(flipped.conditions[0].reason, "RedisUnavailable");
    }
}
