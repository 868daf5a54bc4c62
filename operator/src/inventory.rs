//! The operator's view of every PhoneNumber it watches, and the way one reconcile asks
//! for others.
//!
//! With `--namespace` repeated, each namespace has its own watch (and watch cache); two
//! resources in different namespaces can still claim one number, so conflict decisions
//! look at all caches at once: that is the [`Inventory`]. [`Triggers`] queue a reconcile
//! of another resource (the next claimant of a number its owner released) on the
//! controller that watches it.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store, store::WriterDropped};
use switchyard_routing::PhoneNumber;
use tokio::sync::mpsc;

/// Every watch cache of the operator, read as one.
#[derive(Clone)]
pub struct Inventory {
    stores: Vec<Store<PhoneNumber>>,
}

impl Inventory {
    pub fn new(stores: Vec<Store<PhoneNumber>>) -> Self {
        Inventory { stores }
    }

    /// Every PhoneNumber in every cache.
    pub fn state(&self) -> Vec<Arc<PhoneNumber>> {
        self.stores.iter().flat_map(|s| s.state()).collect()
    }

    /// Waits until every cache has completed its first list. Decisions made before would
    /// miss resources and could hand a number to the wrong one.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        for store in &self.stores {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Senders into each controller's `reconcile_on` stream, by the namespace it watches
/// (`None`: all namespaces).
#[derive(Clone, Default)]
pub struct Triggers {
    scopes: Vec<(
        Option<String>,
        mpsc::UnboundedSender<ObjectRef<PhoneNumber>>,
    )>,
}

impl Triggers {
    pub fn new(
        scopes: Vec<(
            Option<String>,
            mpsc::UnboundedSender<ObjectRef<PhoneNumber>>,
        )>,
    ) -> Self {
        Triggers { scopes }
    }

    /// One scope covering all namespaces, and its receiving end.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ObjectRef<PhoneNumber>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Triggers::new(vec![(None, tx)]), rx)
    }

    /// Queues a reconcile of `pn` on the controller that watches its namespace.
    pub fn reconcile(&self, pn: &PhoneNumber) {
        let namespace = pn.namespace();
        let target = self
            .scopes
            .iter()
            .find(|(scope, _)| scope.is_none() || *scope == namespace);
        if let Some((_, tx)) = target {
            // A closed channel means that controller is stopping: nothing to do.
            let _ = tx.send(ObjectRef::from_obj(pn));
        }
    }
}
