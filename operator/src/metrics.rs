//! Prometheus metrics, served as text on `/metrics` (see `docs/operator.md`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::ownership::Resolution;

/// The `result` label of `switchyard_operator_reconciliations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    Programmed,
    Conflict,
    InvalidSpec,
    Deleted,
    RedisUnavailable,
    Error,
}

impl ReconcileResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Programmed => "programmed",
            ReconcileResult::Conflict => "conflict",
            ReconcileResult::InvalidSpec => "invalid_spec",
            ReconcileResult::Deleted => "deleted",
            ReconcileResult::RedisUnavailable => "redis_unavailable",
            ReconcileResult::Error => "error",
        }
    }
}

/// Every metric the operator exports, in its own registry.
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    reconcile_duration: Histogram,
    routes: IntGaugeVec,
    conflicts: IntGauge,
    invalid: IntGauge,
    is_leader: IntGauge,
    full_syncs: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "switchyard_operator_reconciliations_total",
                "PhoneNumber reconciliations, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_operator_reconcile_duration_seconds",
                "Time spent reconciling one PhoneNumber",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        let routes = IntGaugeVec::new(
            Opts::new(
                "switchyard_operator_routes",
                "Routes the cluster declares (one per owned number or pattern), by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let conflicts = IntGauge::new(
            "switchyard_operator_conflicts",
            "PhoneNumbers that lose their number or pattern to an older one",
        )
        .expect("valid metric");
        let invalid = IntGauge::new(
            "switchyard_operator_invalid_specs",
            "PhoneNumbers whose spec cannot be programmed",
        )
        .expect("valid metric");
        let is_leader = IntGauge::new(
            "switchyard_operator_is_leader",
            "1 when this replica holds the Lease and writes the routing table",
        )
        .expect("valid metric");
        let full_syncs = IntCounterVec::new(
            Opts::new(
                "switchyard_operator_full_syncs_total",
                "Full comparisons of the routing table with the cluster, by trigger and result",
            ),
            &["trigger", "result"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_duration.clone()),
            Box::new(routes.clone()),
            Box::new(conflicts.clone()),
            Box::new(invalid.clone()),
            Box::new(is_leader.clone()),
            Box::new(full_syncs.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Show both kinds from the start, so dashboards see 0 rather than nothing.
        for kind in ["number", "pattern"] {
            routes.with_label_values(&[kind]).set(0);
        }
        Metrics {
            registry,
            reconciliations,
            reconcile_duration,
            routes,
            conflicts,
            invalid,
            is_leader,
            full_syncs,
        }
    }

    pub fn reconciled(&self, result: ReconcileResult, seconds: f64) {
        self.reconciliations
            .with_label_values(&[result.as_str()])
            .inc();
        self.reconcile_duration.observe(seconds);
    }

    pub fn reconciliations(&self, result: ReconcileResult) -> u64 {
        self.reconciliations
            .with_label_values(&[result.as_str()])
            .get()
    }

    /// Sets the route, conflict and invalid gauges from a resolution of the watch cache.
    pub fn observe_resolution(&self, resolution: &Resolution) {
        let patterns = resolution
            .routes
            .iter()
            .filter(|r| r.key.kind() == "pattern")
            .count();
        let numbers = resolution.routes.len() - patterns;
        self.routes
            .with_label_values(&["number"])
            .set(numbers as i64);
        self.routes
            .with_label_values(&["pattern"])
            .set(patterns as i64);
        self.conflicts.set(resolution.conflicts.len() as i64);
        self.invalid.set(resolution.invalid.len() as i64);
    }

    /// Sets the leader gauge. Stepping down also zeroes the gauges only a leader keeps,
    /// so a standby does not report a stale table.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
        if !leader {
            self.observe_resolution(&Resolution::default());
        }
    }

    pub fn full_sync(&self, trigger: &str, result: &str) {
        self.full_syncs.with_label_values(&[trigger, result]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_routing::{AppUrl, HttpMethod, Owner, Route, RouteKey};

    fn route(key: RouteKey) -> Route {
        Route {
            key,
            owner: Owner("t/a".into()),
            priority: 0,
            friendly_name: None,
            voice: AppUrl {
                url: "http://a/".into(),
                method: HttpMethod::Post,
            },
            voice_fallback: None,
            refer: None,
            status_callback: None,
            refer_target_allow: Vec::new(),
        }
    }

    #[test]
    fn renders_the_names_the_issue_asks_for() {
        let m = Metrics::new();
        m.reconciled(ReconcileResult::Programmed, 0.01);
        m.reconciled(ReconcileResult::Conflict, 0.01);
        m.set_leader(true);
        let mut resolution = Resolution {
            routes: vec![
                route(RouteKey::Number("1".into())),
                route(RouteKey::Number("2".into())),
                route(RouteKey::Pattern("3.*".into())),
            ],
            ..Resolution::default()
        };
        resolution
            .conflicts
            .insert(Owner("t/b".into()), Owner("t/a".into()));
        m.observe_resolution(&resolution);
        let leading = m.render();
        m.set_leader(false);
        let standby = m.render();
        assert!(
            standby.contains("\nswitchyard_operator_conflicts 0\n"),
            "{standby}"
        );
        assert!(
            standby.contains("\nswitchyard_operator_is_leader 0\n"),
            "{standby}"
        );
        let text = leading;
        for line in [
            "switchyard_operator_reconciliations_total{result=\"programmed\"} 1",
            "switchyard_operator_reconciliations_total{result=\"conflict\"} 1",
            "switchyard_operator_reconcile_duration_seconds_count 2",
            "switchyard_operator_routes{kind=\"number\"} 2",
            "switchyard_operator_routes{kind=\"pattern\"} 1",
            "switchyard_operator_conflicts 1",
            "switchyard_operator_is_leader 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
