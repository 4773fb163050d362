//! The flash-sale load generator (`cart-host load`, and the benchmarks'): open-loop arrivals at
//! a set rate, so a slow answer delays nothing behind it and shows in the latency (no
//! coordinated omission); HDR latency histograms, throughput, errors by code, sell-through, and
//! a JSON report (which `cart-bench plot` draws).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use cart_edge::http_client::HttpClient;

/// What each arrival does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// One durable cart update (`PUT .../items/{sku}`) per arrival, over a pool of open carts.
    Updates,
    /// A shopper per arrival: a cart, a hold, sometimes a raise, about half check out.
    Sale,
    /// A plain `GET` of each edge URL as given (for comparing with other servers).
    Get,
}

/// How the arrival rate moves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Curve {
    /// The set rate throughout.
    Flat,
    /// Noon: a steep climb to the set rate in the first tenth, a plateau, then a long tail.
    Noon,
}

impl Curve {
    /// The share of the peak rate at `x` (0..1 of the run).
    fn shape(self, x: f64) -> f64 {
        match self {
            Self::Flat => 1.0,
            Self::Noon if x < NOON_PEAK.start => 0.05 + 0.95 * x / NOON_PEAK.start,
            Self::Noon if x < NOON_PEAK.end => 1.0,
            Self::Noon => 0.15 + 0.85 * (-(x - NOON_PEAK.end) * 5.0).exp(),
        }
    }

    /// Where the rate is at its peak (a share of the run).
    fn peak(self) -> std::ops::Range<f64> {
        match self {
            Self::Flat => 0.0..1.0,
            Self::Noon => NOON_PEAK,
        }
    }
}

/// Noon's plateau: from a tenth of the run to three tenths.
const NOON_PEAK: std::ops::Range<f64> = 0.1..0.3;

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub edges: Vec<String>,
    pub scenario: Scenario,
    /// Arrivals per second at the peak.
    pub rate: f64,
    pub duration: Duration,
    pub curve: Curve,
    /// `updates`: how many carts the updates are spread over.
    pub carts: usize,
    /// `updates`: send every update through this edge rather than the cart's own, so that
    /// (in a fleet) each one is forwarded to the cart's edge.
    pub via: Option<String>,
    /// The SKU to update (`updates`) or the SKUs shoppers pick from (`sale`); default: all.
    pub skus: Vec<String>,
    /// Arrivals still waiting for an answer beyond this are counted as `client_overload`.
    pub max_in_flight: usize,
    /// Read every edge's `/admin/status` at the end for sell-through.
    pub admin_token: Option<String>,
    /// Say how the run goes, once a second, on standard error.
    pub progress: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            edges: Vec::new(),
            scenario: Scenario::Updates,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            curve: Curve::Flat,
            carts: 2000,
            via: None,
            skus: Vec::new(),
            max_in_flight: 50_000,
            admin_token: None,
            progress: false,
        }
    }
}

/// Latencies in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub completed: u64,
    pub latency_ms: Latency,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadReport {
    pub scenario: Scenario,
    pub curve: Curve,
    pub target_rate: f64,
    pub duration_s: f64,
    pub edges: Vec<String>,
    /// Requests scheduled (arrivals, and for `sale` the shoppers' follow-up requests).
    pub sent: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Answered requests per second, over the scheduled duration.
    pub throughput: f64,
    /// Of 2xx answers only.
    pub latency_ms: Latency,
    /// Every non-2xx answer by its error code (or HTTP status), and transport failures.
    pub errors: BTreeMap<String, u64>,
    /// `sale`: units ordered, and the share of the sale's stock that is.
    pub units_ordered: u64,
    pub sell_through: Option<f64>,
    pub timeline: Vec<Second>,
}

impl LoadReport {
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The worst p99 of the seconds in which arrivals were at their peak rate.
    pub fn peak_p99_ms(&self) -> f64 {
        let peak = self.curve.peak();
        self.timeline
            .iter()
            .filter(|s| peak.contains(&((s.t as f64 + 0.5) / self.duration_s)))
            .map(|s| s.latency_ms.p99)
            .fold(0.0, f64::max)
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "{:?} at {:.0}/s ({:?}) for {:.1}s: {} sent, {} ok, {:.0}/s",
            self.scenario,
            self.target_rate,
            self.curve,
            self.duration_s,
            self.sent,
            self.ok,
            self.throughput
        )?;
        writeln!(
            f,
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        if !self.errors.is_empty() {
            writeln!(f, "errors: {:?}", self.errors)?;
        }
        if let Some(s) = self.sell_through {
            writeln!(
                f,
                "sell-through: {} units, {:.1}% of stock",
                self.units_ordered,
                s * 100.0
            )?;
        }
        Ok(())
    }
}

/// Latencies as they arrive: the whole run, and second by second (by scheduled time).
struct Recorder {
    total: Histogram<u64>,
    seconds: Vec<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    fn new(seconds: usize) -> Self {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
        Self {
            total: h(),
            seconds: (0..seconds).map(|_| h()).collect(),
            errors: BTreeMap::new(),
        }
    }
}

struct Shared {
    client: HttpClient,
    config: LoadConfig,
    started: Instant,
    recorder: Mutex<Recorder>,
    in_flight: AtomicUsize,
    sent: AtomicU64,
    ok: AtomicU64,
    units_ordered: AtomicU64,
    /// `updates`: the carts, as (edge, path, token).
    carts: Vec<(String, String, String)>,
    skus: Vec<String>,
}

impl Shared {
    fn record_ok(&self, intended: Instant) {
        let us = u64::try_from(intended.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let second = intended.saturating_duration_since(self.started).as_secs() as usize;
        let mut r = self
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = r.total.record(us.min(120_000_000));
        if let Some(h) = r.seconds.get_mut(second) {
            let _ = h.record(us.min(120_000_000));
        }
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn record_error(&self, code: String) {
        let mut r = self
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *r.errors.entry(code).or_default() += 1;
    }

    /// Sends one request scheduled at `intended`; records it; returns the body when 2xx.
    async fn request(
        &self,
        intended: Instant,
        method: Method,
        url: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: String,
    ) -> Option<Value> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        headers.extend_from_slice(extra);
        match self.client.send(method, url, &headers, body).await {
            Ok(r) if r.status.is_success() => {
                self.record_ok(intended);
                Some(serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            }
            Ok(r) => {
                let code = serde_json::from_slice::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("http_{}", r.status.as_u16()));
                self.record_error(code);
                None
            }
            Err(_) => {
                self.record_error("transport".into());
                None
            }
        }
    }
}

/// Runs the load and measures it.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!config.edges.is_empty(), "name at least one --edge");
    anyhow::ensure!(config.rate > 0.0, "--rate must be positive");
    let client = HttpClient::new(Duration::from_secs(30));
    let skus = match (&config.scenario, config.skus.is_empty()) {
        (Scenario::Get, _) | (_, false) => config.skus.clone(),
        _ => list_skus(&client, &config.edges[0]).await?,
    };
    let carts = if config.scenario == Scenario::Updates {
        open_carts(
            &client,
            &config.edges,
            config.carts,
            skus.first().map(String::as_str),
        )
        .await?
    } else {
        Vec::new()
    };
    let seconds = config.duration.as_secs() as usize + 1;
    let shared = Arc::new(Shared {
        client,
        started: Instant::now(),
        recorder: Mutex::new(Recorder::new(seconds)),
        in_flight: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        units_ordered: AtomicU64::new(0),
        carts,
        skus,
        config: config.clone(),
    });
    let mut progress = Progress::new(config.progress, config.duration);

    // Open loop: arrivals are due on the curve whatever the answers do.
    let started = shared.started;
    let mut due = 0.0f64;
    let mut issued = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let tick = Duration::from_millis(1);
    let mut last = started;
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(started);
        if elapsed >= config.duration {
            break;
        }
        let x = elapsed.as_secs_f64() / config.duration.as_secs_f64();
        due += config.rate * config.curve.shape(x) * now.duration_since(last).as_secs_f64();
        last = now;
        while (issued as f64) < due {
            if shared.in_flight.load(Ordering::Relaxed) >= config.max_in_flight {
                shared.record_error("client_overload".into());
            } else {
                shared.in_flight.fetch_add(1, Ordering::Relaxed);
                let (shared, n) = (Arc::clone(&shared), issued);
                tasks.spawn(async move {
                    arrival(&shared, n, now).await;
                    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            issued += 1;
        }
        while tasks.try_join_next().is_some() {}
        progress.show(elapsed, &shared);
        tokio::time::sleep(tick).await;
    }
    progress.finish("waiting for the last answers");
    while tasks.join_next().await.is_some() {}
    progress.finish("done");

    let sell_through = match (&config.admin_token, config.scenario) {
        (Some(token), Scenario::Sale) => {
            Some(sell_through(&shared.client, &config.edges, token).await?)
        }
        _ => None,
    };
    let recorder = shared
        .recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ok = shared.ok.load(Ordering::Relaxed);
    Ok(LoadReport {
        scenario: config.scenario,
        curve: config.curve,
        target_rate: config.rate,
        duration_s: config.duration.as_secs_f64(),
        edges: config.edges.clone(),
        sent: shared.sent.load(Ordering::Relaxed),
        ok,
        throughput: ok as f64 / config.duration.as_secs_f64(),
        latency_ms: Latency::of(&recorder.total),
        errors: recorder.errors.clone(),
        units_ordered: shared.units_ordered.load(Ordering::Relaxed),
        sell_through,
        timeline: recorder
            .seconds
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(t, h)| Second {
                t: t as u64,
                completed: h.len(),
                latency_ms: Latency::of(h),
            })
            .collect(),
    })
}

/// What arrival `n`, due at `intended`, does.
async fn arrival(shared: &Shared, n: u64, intended: Instant) {
    let edges = &shared.config.edges;
    let edge = &edges[(n as usize) % edges.len()];
    match shared.config.scenario {
        Scenario::Get => {
            shared
                .request(intended, Method::GET, edge, None, &[], String::new())
                .await;
        }
        Scenario::Updates => {
            let (edge, path, token) = &shared.carts[(n as usize) % shared.carts.len()];
            // Raise and lower in turn: 1, 2, 3, 1, 2, 3...
            let round = n as usize / shared.carts.len();
            let body = format!(r#"{{"quantity": {}}}"#, 1 + round % 3);
            let url = format!("{}{path}", shared.config.via.as_deref().unwrap_or(edge));
            shared
                .request(intended, Method::PUT, &url, Some(token), &[], body)
                .await;
        }
        Scenario::Sale => shopper(shared, edge, n, intended).await,
    }
}

/// A flash-sale shopper: a cart, a hold, sometimes a raise, about half check out. Only the
/// first request is open-loop; a shopper's next step waits for the answer to the last.
async fn shopper(shared: &Shared, edge: &str, n: u64, intended: Instant) {
    let body = json!({"customer_id": format!("shopper-{n}")}).to_string();
    let Some(cart) = shared
        .request(
            intended,
            Method::POST,
            &format!("{edge}/v1/carts"),
            None,
            &[],
            body,
        )
        .await
    else {
        return;
    };
    let (Some(id), Some(token)) = (cart["cart_id"].as_str(), cart["cart_token"].as_str()) else {
        return;
    };
    let sku = &shared.skus[(n as usize * 7919) % shared.skus.len()];
    let item = format!("{edge}/v1/carts/{id}/items/{sku}");
    let mut held = shared
        .request(
            Instant::now(),
            Method::PUT,
            &item,
            Some(token),
            &[],
            r#"{"quantity": 1}"#.into(),
        )
        .await
        .is_some();
    if held && n.is_multiple_of(3) {
        let raised = r#"{"quantity": 2}"#.to_owned();
        held = shared
            .request(Instant::now(), Method::PUT, &item, Some(token), &[], raised)
            .await
            .is_some();
    }
    if held && n.is_multiple_of(2) {
        let key = format!("k-{n}");
        let url = format!("{edge}/v1/carts/{id}/checkout");
        let extra = [("idempotency-key", key.as_str())];
        if let Some(order) = shared
            .request(
                Instant::now(),
                Method::POST,
                &url,
                Some(token),
                &extra,
                "{}".into(),
            )
            .await
        {
            let units: u64 = order["lines"].as_array().map_or(0, |ls| {
                ls.iter().filter_map(|l| l["quantity"].as_u64()).sum()
            });
            shared.units_ordered.fetch_add(units, Ordering::Relaxed);
        }
    }
}

async fn list_skus(client: &HttpClient, edge: &str) -> anyhow::Result<Vec<String>> {
    let r = client.get(&format!("{edge}/v1/skus"), None).await?;
    let skus: Vec<String> = r.json()?["skus"]
        .as_array()
        .context("no skus in /v1/skus")?
        .iter()
        .filter_map(|s| s["sku"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(!skus.is_empty(), "{edge} sells nothing");
    Ok(skus)
}

/// Opens `n` carts spread over the edges for updates of `sku` (none: the first SKU the first
/// edge lists); returns (edge, item path, token) for each.
pub async fn open_carts(
    client: &HttpClient,
    edges: &[String],
    n: usize,
    sku: Option<&str>,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let sku = match sku {
        Some(sku) => sku.to_owned(),
        None => list_skus(client, &edges[0]).await?.remove(0),
    };
    let mut carts = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (client, edge, sku) = (client.clone(), edges[i % edges.len()].clone(), sku.clone());
            set.spawn(async move {
                let body = json!({"customer_id": format!("bench-{i}")}).to_string();
                let headers = [("content-type", "application/json")];
                let r = client
                    .send(Method::POST, &format!("{edge}/v1/carts"), &headers, body)
                    .await?;
                anyhow::ensure!(
                    r.status == StatusCode::CREATED,
                    "creating a cart: {}",
                    r.status
                );
                let cart = r.json()?;
                let id = cart["cart_id"].as_str().context("cart_id")?;
                let token = cart["cart_token"]
                    .as_str()
                    .context("cart_token")?
                    .to_owned();
                anyhow::Ok((edge, format!("/v1/carts/{id}/items/{sku}"), token))
            });
        }
        while let Some(cart) = set.join_next().await {
            carts.push(cart??);
        }
    }
    Ok(carts)
}

/// Units sold across the edges over the sale's stock.
async fn sell_through(client: &HttpClient, edges: &[String], token: &str) -> anyhow::Result<f64> {
    let mut sold = 0u64;
    let mut total = 0u64;
    for e in edges {
        let status = cart_edge::wire::fetch(client, e, Some(token)).await?;
        sold += status.skus.values().map(|s| u64::from(s.sold)).sum::<u64>();
        total = status.stock_total.values().sum();
    }
    Ok(if total == 0 {
        0.0
    } else {
        sold as f64 / total as f64
    })
}

/// A line on standard error, rewritten once a second: how far the run is and what it got.
struct Progress {
    show: bool,
    duration: Duration,
    shown_at: Option<Instant>,
}

impl Progress {
    fn new(show: bool, duration: Duration) -> Self {
        Self {
            show,
            duration,
            shown_at: None,
        }
    }

    fn show(&mut self, elapsed: Duration, shared: &Shared) {
        if !self.show
            || self
                .shown_at
                .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.shown_at = Some(Instant::now());
        eprint!(
            "\r{:>4.0} s of {:.0}: {} sent, {} ok, {} in flight   ",
            elapsed.as_secs_f64(),
            self.duration.as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            shared.ok.load(Ordering::Relaxed),
            shared.in_flight.load(Ordering::Relaxed)
        );
    }

    fn finish(&self, what: &str) {
        if self.show {
            eprint!("\r{what:<72}\r");
        }
    }
}

/// Writes the report as JSON.
pub fn write_json(report: &LoadReport, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}
