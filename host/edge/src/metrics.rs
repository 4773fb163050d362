//! The edge's Prometheus metrics, one registry per server (no globals, so tests can run many).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RequestLabels, Histogram>,
    pub writer_batch: Histogram,
    pub guest_faults: Counter,
    pub failed_batches: Counter,
    pub outbox_backlog: Gauge,
    pub events_delivered: Counter,
    pub grants_received: Counter,
    pub forward_seconds: Histogram,
    pub forward_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cart");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        let writer_batch = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let guest_faults = Counter::default();
        let failed_batches = Counter::default();
        let outbox_backlog = Gauge::default();
        let events_delivered = Counter::default();
        let grants_received = Counter::default();
        let forward_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let forward_failures = Counter::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_seconds",
            "Time to answer an HTTP request",
            request_seconds.clone(),
        );
        registry.register(
            "writer_batch_jobs",
            "Jobs per group commit",
            writer_batch.clone(),
        );
        registry.register(
            "guest_faults",
            "Rules calls that trapped, ran out of time or memory, or decided the impossible",
            guest_faults.clone(),
        );
        registry.register(
            "writer_failed_batches",
            "Group commits that failed as a whole (nothing of them kept)",
            failed_batches.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox events not yet applied centrally",
            outbox_backlog.clone(),
        );
        registry.register(
            "outbox_delivered",
            "Outbox events applied centrally",
            events_delivered.clone(),
        );
        registry.register(
            "stock_granted_units",
            "Units central granted this edge",
            grants_received.clone(),
        );
        registry.register(
            "forwarded_seconds",
            "Time the owning edge took to answer a request forwarded to it",
            forward_seconds.clone(),
        );
        registry.register(
            "forward_failures",
            "Requests for another edge's cart that its owner did not answer (503)",
            forward_failures.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            writer_batch,
            guest_faults,
            failed_batches,
            outbox_backlog,
            events_delivered,
            grants_received,
            forward_seconds,
            forward_failures,
        }
    }
}

impl Metrics {
    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
