//! Leader election with a `coordination.k8s.io/v1` Lease, so that several replicas can
//! run and only one writes the routing table.
//!
//! The algorithm is client-go's: a replica takes the Lease when it is free (absent,
//! released, or not renewed for `leaseDurationSeconds` as measured on this replica's own
//! clock since it last saw the Lease change, which avoids trusting other clocks), the
//! holder renews it every retry period, and every write is a compare-and-swap on the
//! Lease's `resourceVersion`, so two replicas can never both win one round.
//!
//! A leader steps down when another replica holds the Lease, or when it could not renew
//! for the renew deadline (2/3 of the lease duration), which is before anyone else may
//! take over. On shutdown it releases the Lease so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::FIELD_MANAGER;

/// Where the Lease is and how it is held.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's name, written as `holderIdentity`.
    pub identity: String,
    /// How long the Lease is valid without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often the Lease is tried (standby) or renewed (leader).
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Derives the renew deadline (2/3) and the retry period (1/7) from the lease
    /// duration: 15 s gives 10 s and about 2 s, client-go's defaults.
    pub fn new(name: &str, namespace: &str, identity: &str, lease_duration: Duration) -> Self {
        LeaseSettings {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 7,
        }
    }
}

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("lease {name}: {source}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lease {name}: no answer from the API server within {timeout:?}")]
    Timeout { name: String, timeout: Duration },
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease as last seen, and when (on this replica's clock) it last changed.
    observed: Option<(LeaseSpec, Instant)>,
}

fn is_conflict(error: &kube::Error) -> bool {
    // 409: someone else created or updated the Lease first.
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        }
    }

    fn observe(&mut self, spec: &LeaseSpec) {
        if self.observed.as_ref().map(|(seen, _)| seen) != Some(spec) {
            self.observed = Some((spec.clone(), Instant::now()));
        }
    }

    /// Whether the holder of the Lease as last observed has let it lapse.
    fn observed_expired(&self) -> bool {
        match &self.observed {
            None => true,
            Some((spec, since)) => {
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs)
                    .unwrap_or(self.settings.lease_duration);
                since.elapsed() >= duration
            }
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn kube_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Kube {
            name: self.settings.name.clone(),
            source,
        }
    }

    /// One round: takes the Lease if it is free, renews it if it is ours. Returns whether
    /// this replica holds the Lease after the round.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let timeout = self.settings.renew_deadline;
        match tokio::time::timeout(timeout, self.round()).await {
            Ok(result) => result,
            Err(_) => Err(LeaseError::Timeout {
                name: self.settings.name.clone(),
                timeout,
            }),
        }
    }

    async fn round(&mut self) -> Result<bool, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let name = self.settings.name.clone();
        let identity = self.settings.identity.clone();
        let existing = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.kube_error(e))?;

        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&Self::post_params(), &lease).await {
                Ok(created) => {
                    self.observe(&created.spec.unwrap_or_default());
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.kube_error(e)),
            };
        };

        let current = lease.spec.clone().unwrap_or_default();
        self.observe(&current);
        let holder = current.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(identity.as_str());
        if !mine && holder.is_some() && !self.observed_expired() {
            return Ok(false);
        }

        let mut spec = current.clone();
        if !mine {
            spec.holder_identity = Some(identity);
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(current.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.lease_seconds());
        lease.spec = Some(spec);
        // `replace` sends metadata.resourceVersion: the API server refuses it (409) if the
        // Lease changed since we read it.
        match self.api.replace(&name, &Self::post_params(), &lease).await {
            Ok(updated) => {
                self.observe(&updated.spec.unwrap_or_default());
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.kube_error(e)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby need not wait for it to
    /// expire. Returns whether it was released.
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        let name = self.settings.name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.kube_error(e))?
        else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self.api.replace(&name, &Self::post_params(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.kube_error(e)),
        }
    }

    /// Runs the election until `stop` turns true, publishing on `leading` whether this
    /// replica leads; then steps down and releases the Lease.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let lease = format!("{}/{}", self.settings.namespace, self.settings.name);
        let identity = self.settings.identity.clone();
        let mut last_renewal: Option<Instant> = None;
        loop {
            let was_leading = *leading.borrow();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    if !was_leading {
                        info!(%lease, %identity, "acquired the lease: leading");
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if was_leading {
                        let holder = self
                            .observed
                            .as_ref()
                            .and_then(|(s, _)| s.holder_identity.clone())
                            .unwrap_or_default();
                        warn!(%lease, %identity, %holder, "lost the lease: standing by");
                        leading.send_replace(false);
                    }
                }
                Err(error) => {
                    warn!(%lease, %identity, %error, "lease round failed");
                    let overdue =
                        last_renewal.is_none_or(|t| t.elapsed() >= self.settings.renew_deadline);
                    if was_leading && overdue {
                        warn!(%lease, %identity, "could not renew the lease in time: standing by");
                        leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.retry_period) => {}
                () = crate::stopped(&mut stop) => break,
            }
        }
        leading.send_replace(false);
        match self.release().await {
            Ok(true) => info!(%lease, %identity, "released the lease"),
            Ok(false) => {}
            Err(error) => warn!(%lease, %identity, %error, "could not release the lease"),
        }
    }
}
