//! Drift repair: the routing table is compared with what the watch cache declares and
//! rebuilt when they differ.
//!
//! - At start (once the caches are synced) and every `--resync-interval`: a full sync.
//! - Every second: the table's generation and epoch keys are checked. When they are gone
//!   (Redis restarted empty, or someone deleted them), the table is rebuilt at once, so
//!   edges get their routes back within seconds, without a restart. The epoch matters:
//!   a reconcile that writes one route after Redis lost its data recreates the generation
//!   counter, but only a full sync writes an epoch.
//! - While Redis is down, each check fails quietly (logged once); per-resource reconciles
//!   retry with backoff and report `RedisUnavailable`.
//!
//! After a full sync, resources whose status disagrees with the outcome (for example
//! still `RedisUnavailable`, or `Conflict` while they now own their key) get a reconcile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use switchyard_routing::{Owner, PhoneNumber, Route, RouteWriter, StoreError, TableVersion};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::controller::{Context, ready_condition, reason};
use crate::ownership::{self, Resolution, owner_of};

/// How often the generation key is checked.
pub const TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a full sync found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Redis already held exactly the declared table.
    InSync,
    /// The table differed (or was absent) and was replaced.
    Repaired,
}

/// Whether the table in Redis is not one a full sync wrote: no generation key (Redis
/// lost its data), or no epoch (Redis lost its data and a single-route write has since
/// recreated the generation counter, leaving a partial table that looks present).
pub fn table_missing(version: Option<&TableVersion>) -> bool {
    version.is_none_or(|v| v.epoch.is_empty())
}

/// Routes compared as a set: order in Redis is not meaningful.
fn same_table(current: &[Route], desired: &[Route]) -> bool {
    let sorted = |routes: &[Route]| {
        let mut routes = routes.to_vec();
        routes.sort_by_key(|r| (r.key.field(), r.owner.clone()));
        routes
    };
    current.len() == desired.len() && sorted(current) == sorted(desired)
}

/// Compares the table with the watch cache and replaces it if they differ.
pub async fn full_sync(ctx: &Context) -> Result<SyncOutcome, StoreError> {
    let (all, resolution, outcome) = {
        let _exclusive = ctx.table_lock.write().await;
        let all = ctx.inventory.state();
        let resolution = ownership::resolve(&all);
        let (version, current) = ctx.routes.load().await?;
        let outcome =
            if !table_missing(version.as_ref()) && same_table(&current, &resolution.routes) {
                SyncOutcome::InSync
            } else {
                ctx.routes.replace_all(&resolution.routes).await?;
                SyncOutcome::Repaired
            };
        (all, resolution, outcome)
    };
    ctx.metrics.observe_resolution(&resolution);
    let programmed: BTreeSet<&Owner> = resolution.routes.iter().map(|r| &r.owner).collect();
    for pn in &all {
        if status_disagrees(pn, &resolution, &programmed) {
            ctx.triggers.reconcile(pn);
        }
    }
    Ok(outcome)
}

/// Whether `pn`'s Ready reason differs from what the resolution says it should be.
fn status_disagrees(
    pn: &PhoneNumber,
    resolution: &Resolution,
    programmed: &BTreeSet<&Owner>,
) -> bool {
    if pn.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let owner = owner_of(pn);
    let expected = if resolution.conflicts.contains_key(&owner) {
        reason::CONFLICT
    } else if resolution.invalid.contains(&owner) {
        reason::INVALID_SPEC
    } else if programmed.contains(&owner) {
        reason::PROGRAMMED
    } else {
        // Owns its key but has no finalizer yet: its own reconcile is on the way.
        return false;
    };
    let observed = pn.status.as_ref().and_then(|s| s.observed_generation);
    ready_condition(pn).is_none_or(|c| c.reason != expected) || observed != pn.metadata.generation
}

async fn logged_full_sync(ctx: &Context, trigger: &str) {
    match full_sync(ctx).await {
        Ok(SyncOutcome::InSync) => ctx.metrics.full_sync(trigger, "in_sync"),
        Ok(SyncOutcome::Repaired) => {
            info!(trigger, "routing table rebuilt from the watch cache");
            ctx.metrics.full_sync(trigger, "repaired");
        }
        Err(error) => {
            warn!(trigger, %error, "full sync failed; will retry");
            ctx.metrics.full_sync(trigger, "failed");
        }
    }
}

/// Runs until `stop` turns true.
pub async fn run(ctx: Arc<Context>, every: Duration, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        ready = ctx.inventory.wait_until_ready() => if ready.is_err() { return },
        () = crate::stopped(&mut stop) => return,
    }
    logged_full_sync(&ctx, "startup").await;
    let mut periodic = tokio::time::interval_at(Instant::now() + every, every);
    periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(TABLE_CHECK_INTERVAL);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut redis_up = true;
    loop {
        tokio::select! {
            _ = periodic.tick() => logged_full_sync(&ctx, "periodic").await,
            _ = check.tick() => {
                if ctx.take_gauges_stale() {
                    ctx.metrics.observe_resolution(&ownership::resolve(&ctx.inventory.state()));
                }
                match ctx.routes.version().await {
                    Ok(version) if table_missing(version.as_ref()) => {
                        redis_up = true;
                        warn!("routing table absent from Redis (restarted empty?); rebuilding");
                        logged_full_sync(&ctx, "table_absent").await;
                    }
                    Ok(_) => {
                        if !redis_up {
                            info!("Redis is reachable again");
                            redis_up = true;
                            logged_full_sync(&ctx, "redis_back").await;
                        }
                    }
                    Err(error) => {
                        if redis_up {
                            warn!(%error, "Redis is unreachable; retrying every second");
                            redis_up = false;
                        }
                    }
                }
            }
            () = crate::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FINALIZER;
    use crate::controller::{Ready, desired_status};
    use crate::ownership::{self, tests::spec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pn(name: &str, created: i64, number: &str) -> PhoneNumber {
        let mut pn = PhoneNumber::new(name, spec(Some(number), None));
        pn.metadata.namespace = Some("t".into());
        pn.metadata.generation = Some(1);
        pn.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        pn.metadata.finalizers = Some(vec![FINALIZER.into()]);
        pn
    }

    fn with_status(mut pn: PhoneNumber, all: &[Arc<PhoneNumber>]) -> PhoneNumber {
        let ready = Ready::from_outcome(&ownership::decide(&pn, all));
        pn.status = Some(desired_status(
            &pn,
            &ready,
            Timestamp::from_second(1).unwrap(),
        ));
        pn
    }

    #[test]
    fn tables_compare_as_sets() {
        let a = pn("a", 1, "1");
        let b = pn("b", 1, "2");
        let routes = ownership::resolve(&[Arc::new(a), Arc::new(b)]).routes;
        let mut reversed = routes.clone();
        reversed.reverse();
        assert!(same_table(&routes, &reversed));
        assert!(!same_table(&routes, &routes[..1]));
    }

    #[test]
    fn a_missing_epoch_means_a_missing_table() {
        assert!(table_missing(None));
        let partial = TableVersion {
            epoch: String::new(),
            generation: 1,
        };
        assert!(table_missing(Some(&partial)));
        let synced = TableVersion {
            epoch: "0123".into(),
            generation: 7,
        };
        assert!(!table_missing(Some(&synced)));
    }

    #[test]
    fn statuses_that_disagree_with_the_resolution_are_found() {
        let owner = Arc::new(pn("owner", 1, "+1555"));
        let waiting = Arc::new(pn("waiting", 2, "+1555"));
        let all = vec![owner.clone(), waiting.clone()];
        let resolution = ownership::resolve(&all);
        let programmed: BTreeSet<&Owner> = resolution.routes.iter().map(|r| &r.owner).collect();

        // Statuses decided against everything: nothing to redo.
        let owner_ok = with_status((*owner).clone(), &all);
        let waiting_ok = with_status((*waiting).clone(), &all);
        assert!(!status_disagrees(&owner_ok, &resolution, &programmed));
        assert!(!status_disagrees(&waiting_ok, &resolution, &programmed));

        // The waiting one still says Programmed (decided before the owner was seen), the
        // owner has no status yet: both need a reconcile.
        let waiting_stale = with_status((*waiting).clone(), std::slice::from_ref(&waiting));
        assert!(status_disagrees(&waiting_stale, &resolution, &programmed));
        assert!(status_disagrees(&owner, &resolution, &programmed));

        // A new generation not yet observed needs one too.
        let mut edited = owner_ok.clone();
        edited.metadata.generation = Some(2);
        assert!(status_disagrees(&edited, &resolution, &programmed));
    }
}
