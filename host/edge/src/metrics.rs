//! The edge's Prometheus metrics, one registry per server (no globals, so tests can run many).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Requests this edge forwarded to the carts' owners since it started.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Forwarded {
    /// Answered by the owner (whatever the answer).
    pub answered: u64,
    /// The owner could not be reached: answered `503` here.
    pub failed: u64,
    /// Mean time the owners took to answer, in milliseconds (0 when none was forwarded).
    pub mean_ms: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    version: String,
}

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
    pub writer_sync: Histogram,
    pub guest_faults: Counter,
    pub failed_batches: Counter,
    pub outbox_backlog: Gauge,
    pub events_delivered: Counter,
    pub central_restores: Counter,
    pub carts_forgotten: Counter,
    pub receipts_forgotten: Counter,
    pub grants_received: Counter,
    forward_seconds: Histogram,
    pub forward_failures: Counter,
    /// Forwards answered and their total time, for `/admin/status` (the histogram keeps its
    /// sum and count to itself).
    forward_answers: AtomicU64,
    forward_micros: AtomicU64,
    /// Cart updates answered here, second by second (for the dashboard and scalers).
    pub cart_updates: crate::recent::Recent,
    // What a scaler reads (see `render`).
    pub writer_busy: Counter<f64, AtomicU64>,
    pub writer_queue: Gauge,
    recent_updates: Gauge<f64, AtomicU64>,
    recent_p99: Gauge<f64, AtomicU64>,
    pub draining: Gauge,
    /// 1 for the version of the cart module the edge runs now.
    module: Family<ModuleLabels, Gauge>,
}

/// Seconds over which the scaling gauges are worked out.
pub const SCALING_WINDOW_SECS: usize = 10;

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cart");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        let writer_batch = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let writer_sync = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let guest_faults = Counter::default();
        let failed_batches = Counter::default();
        let outbox_backlog = Gauge::default();
        let events_delivered = Counter::default();
        let central_restores = Counter::default();
        let carts_forgotten = Counter::default();
        let receipts_forgotten = Counter::default();
        let grants_received = Counter::default();
        let forward_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let forward_failures = Counter::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            request_seconds.clone(),
        );
        registry.register(
            "writer_batch_jobs",
            "Jobs per group commit",
            writer_batch.clone(),
        );
        registry.register(
            "writer_sync_seconds",
            "Time each sync of the WAL took, which answers every batch committed before it",
            writer_sync.clone(),
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
            "outbox_backlog_events",
            "Outbox events not yet delivered (applied centrally, or stored in the queue)",
            outbox_backlog.clone(),
        );
        registry.register(
            "outbox_delivered_events",
            "Outbox events applied centrally",
            events_delivered.clone(),
        );
        registry.register(
            "central_restores",
            "Times central was found restored from a backup and this edge sent it every grant \
             it holds again (and delivered again the events it lost)",
            central_restores.clone(),
        );
        registry.register(
            "retention_deleted_carts",
            "Carts of finished sales deleted past --retain-days, with their lines and orders",
            carts_forgotten.clone(),
        );
        registry.register(
            "retention_deleted_central_receipts",
            "Central's receipts of applied events deleted past --retain-days: this edge's, and \
             those of edges gone that long",
            receipts_forgotten.clone(),
        );
        registry.register(
            "stock_granted_units",
            "Units central granted this edge",
            grants_received.clone(),
        );
        registry.register(
            "forward_duration_seconds",
            "Time the owning edge took to answer a request forwarded to it",
            forward_seconds.clone(),
        );
        registry.register(
            "forward_failures",
            "Requests for another edge's cart that its owner did not answer (503)",
            forward_failures.clone(),
        );
        // The scaling signal: how busy the one writer is, how much waits for it, how fast
        // shoppers are answered now, and whether the edge is leaving.
        let writer_busy = Counter::<f64, AtomicU64>::default();
        let writer_queue = Gauge::default();
        let recent_updates = Gauge::<f64, AtomicU64>::default();
        let recent_p99 = Gauge::<f64, AtomicU64>::default();
        let draining = Gauge::default();
        registry.register(
            "writer_busy_seconds",
            "Time the writer spent running and committing batches (the disk's sync is the \
             flusher's, not in it): its rate is the writer's utilisation (1 = never idle)",
            writer_busy.clone(),
        );
        registry.register(
            "writer_queue_jobs",
            "Jobs waiting for the writer now",
            writer_queue.clone(),
        );
        registry.register(
            "recent_cart_updates_per_second",
            "Cart updates answered here per second, over the last 10 whole seconds",
            recent_updates.clone(),
        );
        registry.register(
            "recent_cart_update_p99_seconds",
            "The highest 99th percentile time to answer a cart update of any of the last 10 \
             whole seconds",
            recent_p99.clone(),
        );
        registry.register(
            "draining",
            "1 while the edge is draining (leaving the fleet), else 0",
            draining.clone(),
        );
        // Which build and which rules each edge runs: a fleet mid-rollout shows both versions.
        registry.register(
            "build",
            "The cart-host build this edge runs",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let module = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "module",
            "1 for the version of the cart module this edge runs now",
            module.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            writer_batch,
            writer_sync,
            guest_faults,
            failed_batches,
            outbox_backlog,
            events_delivered,
            central_restores,
            carts_forgotten,
            receipts_forgotten,
            grants_received,
            forward_seconds,
            forward_failures,
            forward_answers: AtomicU64::new(0),
            forward_micros: AtomicU64::new(0),
            cart_updates: crate::recent::Recent::default(),
            writer_busy,
            writer_queue,
            recent_updates,
            recent_p99,
            draining,
            module,
        }
    }
}

impl Metrics {
    /// Counts how the rules calls' instances are made (see [`crate::wasm`]).
    pub fn register_instances(&mut self, counters: &crate::wasm::InstanceCounters) {
        self.registry.register(
            "guest_instances_made_ahead",
            "Fresh instances rules calls ran in that were made ahead, off the writer",
            counters.ahead.clone(),
        );
        self.registry.register(
            "guest_instances_made_by_call",
            "Fresh instances rules calls made themselves, none being ready",
            counters.by_call.clone(),
        );
    }

    /// A forwarded request the owner answered in `took`.
    pub fn forwarded_in(&self, took: Duration) {
        self.forward_seconds.observe(took.as_secs_f64());
        self.forward_answers.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.forward_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Requests forwarded to the carts' owners so far, for `/admin/status`.
    pub fn forwarded(&self) -> Forwarded {
        let answered = self.forward_answers.load(Ordering::Relaxed);
        let micros = self.forward_micros.load(Ordering::Relaxed);
        Forwarded {
            answered,
            failed: self.forward_failures.get(),
            mean_ms: if answered == 0 {
                0.0
            } else {
                micros as f64 / 1_000.0 / answered as f64
            },
        }
    }

    /// The registry in OpenMetrics text format, the recent figures worked out now, with
    /// `module_version` the cart module the edge runs.
    pub fn render(&self, module_version: &str) -> String {
        self.module.clear();
        self.module
            .get_or_create(&ModuleLabels {
                version: module_version.to_owned(),
            })
            .set(1);
        let seconds = self.cart_updates.seconds();
        let n = seconds.updates.len().min(SCALING_WINDOW_SECS);
        let from = seconds.updates.len() - n;
        let updates: u64 = seconds.updates[from..].iter().sum();
        let p99_ms = seconds.p99_ms[from..].iter().copied().fold(0.0, f64::max);
        self.recent_updates
            .set(updates as f64 / SCALING_WINDOW_SECS as f64);
        self.recent_p99.set(p99_ms / 1_000.0);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The media type of Prometheus's classic text format.
pub const CLASSIC_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The media type of OpenMetrics's text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A scrape's answer, its content type and body, from the registry's OpenMetrics text: in
/// OpenMetrics when the scraper's `Accept` asks for it (Prometheus does, with the classic format
/// as its fallback), else in the classic format (`curl`, `promtool check metrics`).
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS_TEXT, openmetrics)
    } else {
        (CLASSIC_TEXT, classic_text(&openmetrics))
    }
}

/// OpenMetrics text as Prometheus's classic text format: a counter's `HELP` and `TYPE` name
/// its `_total` series, an info metric is a gauge named `_info`, and there is no `UNIT` and no
/// `# EOF`. Samples are the same in both.
pub fn classic_text(openmetrics: &str) -> String {
    // HELP comes before TYPE: the kinds first.
    let kinds: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    let renamed = |name: &str| match kinds.get(name) {
        Some(&"counter") => format!("{name}_total"),
        Some(&"info") => format!("{name}_info"),
        _ => name.to_owned(),
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            let rest = if prefix == "# TYPE " && rest == "info" {
                "gauge"
            } else {
                rest
            };
            Some(format!("{prefix}{} {rest}", renamed(name)))
        });
        out.push_str(described.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_series() {
        let open = "# HELP cart_http_requests HTTP requests answered.\n\
                    # TYPE cart_http_requests counter\n\
                    cart_http_requests_total{route=\"x\",status=\"200\"} 3\n\
                    # HELP cart_build The build.\n\
                    # TYPE cart_build info\n\
                    cart_build_info{version=\"0.1.0\"} 1\n\
                    # HELP cart_draining 1 while draining.\n\
                    # TYPE cart_draining gauge\n\
                    cart_draining 0\n\
                    # EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP cart_http_requests_total HTTP requests answered.\n\
             # TYPE cart_http_requests_total counter\n\
             cart_http_requests_total{route=\"x\",status=\"200\"} 3\n\
             # HELP cart_build_info The build.\n\
             # TYPE cart_build_info gauge\n\
             cart_build_info{version=\"0.1.0\"} 1\n\
             # HELP cart_draining 1 while draining.\n\
             # TYPE cart_draining gauge\n\
             cart_draining 0\n"
        );
    }
}
