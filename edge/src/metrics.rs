//! The edge's Prometheus metrics, in one registry served on `/metrics`.
//!
//! Names follow Prometheus conventions (`_total`, `_seconds`, base units); the set is
//! documented in `docs/metrics.md`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub sip_requests: IntCounterVec,
    pub sip_responses: IntCounterVec,
    pub messages_dropped: IntCounterVec,
    pub transaction_timeouts: IntCounterVec,
    pub tcp_connections: IntGauge,
    /// RCML fetches (successful or not), by purpose (voice, refer, dial_action, ...).
    pub rcml_fetch_duration: HistogramVec,
    /// RCML fetches that gave no runnable document, by purpose and kind of failure.
    pub rcml_errors: IntCounterVec,
    pub store_errors: IntCounterVec,
    /// Call-store operations by operation, failed ones included: Redis's latency as the
    /// edge sees it, the first thing to watch before adding shards (docs/scaling.md).
    pub store_duration: HistogramVec,
    pub transfers: IntCounterVec,
    pub transfers_active: IntGauge,
    pub transfer_duration: prometheus::Histogram,
    pub calls: IntCounterVec,
    /// Calls answered minus calls ended, as seen by this process: the sum over all edge
    /// processes is the number of calls up (a call may start on one and end on another).
    pub calls_active: IntGauge,
    /// Digest authentication outcomes, by method and result (challenged, stale, refused,
    /// authenticated, trusted).
    pub auth: IntCounterVec,
    /// Requests answered 503 by a rate limit, by scope (source, call) and method.
    pub rate_limited: IntCounterVec,
    /// Source addresses the per-source limiter tracks now (bounded by
    /// --rate-limit-sources).
    pub rate_limit_sources: IntGauge,
    /// In-dialog requests refused 481 because their From tag is not the dialog's.
    pub dialog_mismatches: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(counter.clone()))
        .unwrap_or_else(|e| panic!("metric {name} is registered once: {e}"));
    counter
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(histogram.clone()))
        .unwrap_or_else(|e| panic!("metric {name} is registered once: {e}"));
    histogram
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge =
        IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(gauge.clone()))
        .unwrap_or_else(|e| panic!("metric {name} is registered once: {e}"));
    gauge
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let tcp_connections = gauge(
            &registry,
            "switchyard_edge_tcp_connections",
            "Open SIP TCP connections",
        );
        Metrics {
            sip_requests: counter(
                &registry,
                "switchyard_edge_sip_requests_total",
                "SIP requests received, by method (retransmissions included)",
                &["method"],
            ),
            sip_responses: counter(
                &registry,
                "switchyard_edge_sip_responses_total",
                "SIP responses sent, by request method and status class (1xx..6xx)",
                &["method", "class"],
            ),
            messages_dropped: counter(
                &registry,
                "switchyard_edge_sip_messages_dropped_total",
                "SIP messages dropped without a response, by reason",
                &["reason"],
            ),
            transaction_timeouts: counter(
                &registry,
                "switchyard_edge_sip_transaction_timeouts_total",
                "SIP transactions that timed out, by kind and timer",
                &["kind", "timer"],
            ),
            tcp_connections,
            // From a local file (sub-millisecond) to an app server at the fetch timeout.
            rcml_fetch_duration: histogram(
                &registry,
                "switchyard_edge_rcml_fetch_duration_seconds",
                "Time to fetch and parse an RCML document, by purpose",
                &["purpose"],
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            rcml_errors: counter(
                &registry,
                "switchyard_edge_rcml_errors_total",
                "RCML fetches that failed, by purpose and kind (fetch, status, timeout, parse, ...)",
                &["purpose", "kind"],
            ),
            store_errors: counter(
                &registry,
                "switchyard_edge_store_errors_total",
                "Call-store operations that failed (Redis unavailable, timed out or answering errors), by operation",
                &["op"],
            ),
            // A healthy Redis answers in well under a millisecond; the store's timeout
            // (--redis-timeout) is 1 s by default.
            store_duration: histogram(
                &registry,
                "switchyard_edge_store_duration_seconds",
                "Time of call-store operations (one Redis round trip each), by operation",
                &["op"],
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ],
            ),
            transfers: counter(
                &registry,
                "switchyard_edge_transfers_total",
                "Blind transfers by result (succeeded, failed, rejected) and reason",
                &["result", "reason"],
            ),
            transfers_active: gauge(
                &registry,
                "switchyard_edge_transfers_active",
                "Transfers this process is running",
            ),
            transfer_duration: {
                let histogram = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "switchyard_edge_transfer_duration_seconds",
                        "Time from an accepted REFER to the transfer target answering",
                    )
                    .buckets(vec![
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
                    ]),
                )
                .unwrap_or_else(|e| panic!("metric is well-formed: {e}"));
                registry
                    .register(Box::new(histogram.clone()))
                    .unwrap_or_else(|e| panic!("metric is registered once: {e}"));
                histogram
            },
            calls: counter(
                &registry,
                "switchyard_edge_calls_total",
                "Calls by outcome (answered, completed, no_route, rejected, not_connected, ...)",
                &["outcome"],
            ),
            calls_active: gauge(
                &registry,
                "switchyard_edge_calls_active",
                "Calls answered minus calls ended by this process (sum over processes: calls up)",
            ),
            auth: counter(
                &registry,
                "switchyard_edge_auth_total",
                "Digest authentication of requests, by method and result (challenged, stale, refused, authenticated, trusted)",
                &["method", "result"],
            ),
            rate_limited: counter(
                &registry,
                "switchyard_edge_rate_limited_total",
                "Requests answered 503 by a rate limit, by scope (source: per source address in this process; call: per call) and method",
                &["scope", "method"],
            ),
            rate_limit_sources: gauge(
                &registry,
                "switchyard_edge_rate_limit_sources",
                "Source addresses tracked by this process's per-source rate limiter",
            ),
            dialog_mismatches: counter(
                &registry,
                "switchyard_edge_dialog_mismatches_total",
                "In-dialog requests answered 481 because their From tag is not the dialog's remote tag, by method",
                &["method"],
            ),
            registry,
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
            return format!("# failed to encode metrics: {e}\n");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Counts a response sent for `method`, labelled by class ("2xx").
    pub fn response_sent(&self, method: &str, code: u16) {
        let class = format!("{}xx", code / 100);
        self.sip_responses
            .with_label_values(&[method, class.as_str()])
            .inc();
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
