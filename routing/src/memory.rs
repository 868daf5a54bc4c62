//! The in-memory backend: the edge's standalone mode (routes loaded from PhoneNumber
//! manifests, no Kubernetes, no Redis) and a reference for the Redis backend's behaviour.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::route::{Owner, Route, RouteKey};
use crate::store::{RouteLookup, RouteWriter, StoreError};
use crate::table::RouteTable;

#[derive(Default)]
struct State {
    routes: HashMap<RouteKey, Route>,
    snapshot: Arc<RouteTable>,
}

impl State {
    fn rebuild(&mut self) {
        self.snapshot = Arc::new(RouteTable::new(self.routes.values().cloned()));
    }
}

/// A routing table held in this process.
#[derive(Default)]
pub struct MemoryRoutes {
    state: RwLock<State>,
}

impl MemoryRoutes {
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut state = State {
            routes: routes.into_iter().map(|r| (r.key.clone(), r)).collect(),
            snapshot: Arc::default(),
        };
        state.rebuild();
        MemoryRoutes {
            state: RwLock::new(state),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (every
        // mutation rebuilds the snapshot last), so a poisoned lock is safe to reuse.
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl RouteLookup for MemoryRoutes {
    fn snapshot(&self) -> Arc<RouteTable> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot
            .clone()
    }
}

impl RouteWriter for MemoryRoutes {
    async fn upsert(&self, route: &Route) -> Result<(), StoreError> {
        let mut state = self.write();
        state
            .routes
            .retain(|key, r| r.owner != route.owner || *key == route.key);
        state.routes.insert(route.key.clone(), route.clone());
        state.rebuild();
        Ok(())
    }

    async fn remove(&self, owner: &Owner) -> Result<bool, StoreError> {
        let mut state = self.write();
        let before = state.routes.len();
        state.routes.retain(|_, r| r.owner != *owner);
        let removed = state.routes.len() != before;
        if removed {
            state.rebuild();
        }
        Ok(removed)
    }

    async fn replace_all(&self, routes: &[Route]) -> Result<(), StoreError> {
        let mut state = self.write();
        state.routes = routes.iter().map(|r| (r.key.clone(), r.clone())).collect();
        state.rebuild();
        Ok(())
    }
}
