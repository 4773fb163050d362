//! What watching the rush costs: cart updates at a fixed rate on one edge of a two-edge fleet,
//! with no dashboard open, then with [`DASHBOARDS`] dashboards polling `/admin/fleet` once a
//! second each, as the page does.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{BenchConfig, TOKEN, measure, two_edges};
use cart_edge::http_client::HttpClient;
use cart_load::{LoadConfig, LoadReport, Scenario};

/// Operators watching at once.
pub const DASHBOARDS: usize = 10;
/// The cart updates' rate: a busy edge, well below its limit (about 5,000/s on two cores), where
/// latency is steady and a cost shows in it rather than in the noise of saturation.
const RATE: f64 = 2_000.0;

pub struct Watching {
    pub quiet: LoadReport,
    pub watched: LoadReport,
    /// `/admin/fleet` as the dashboards saw it.
    pub polls: usize,
    pub poll_p50_ms: f64,
    pub poll_p99_ms: f64,
    pub poll_failures: usize,
    pub view_bytes: usize,
}

pub async fn compare(cfg: &BenchConfig) -> anyhow::Result<Watching> {
    let (one, _two) = two_edges(cfg, "watching").await?;
    let base = LoadConfig {
        edges: vec![one.url.clone()],
        scenario: Scenario::Updates,
        rate: RATE,
        duration: Duration::from_secs_f64(cfg.step_secs),
        ..LoadConfig::default()
    };
    cart_load::run(LoadConfig {
        duration: Duration::from_secs(3),
        ..base.clone()
    })
    .await?;
    let quiet = measure(cfg, "watching-quiet", base.clone()).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..DASHBOARDS)
        .map(|i| {
            let (url, stop) = (format!("{}/admin/fleet", one.url), Arc::clone(&stop));
            tokio::spawn(async move { poll(&url, i, &stop).await })
        })
        .collect();
    let watched = measure(cfg, "watching-dashboards", base).await?;
    stop.store(true, Ordering::Relaxed);
    let (mut times, mut failures, mut view_bytes) = (Vec::new(), 0, 0);
    for poller in pollers {
        let seen = poller.await?;
        times.extend(seen.times);
        failures += seen.failures;
        view_bytes = view_bytes.max(seen.bytes);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q) as usize)
            .copied()
    };
    Ok(Watching {
        quiet,
        watched,
        polls: times.len(),
        poll_p50_ms: at(0.5).unwrap_or(0.0),
        poll_p99_ms: at(0.99).unwrap_or(0.0),
        poll_failures: failures,
        view_bytes,
    })
}

struct Seen {
    times: Vec<f64>,
    failures: usize,
    bytes: usize,
}

/// One dashboard: `/admin/fleet` once a second, spread over the second by `i`.
async fn poll(url: &str, i: usize, stop: &AtomicBool) -> Seen {
    let client = HttpClient::new(Duration::from_secs(5));
    let mut seen = Seen {
        times: Vec::new(),
        failures: 0,
        bytes: 0,
    };
    let spread = Duration::from_millis(1000 * i as u64 / DASHBOARDS as u64);
    tokio::time::sleep(spread).await;
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match client.get(url, Some(TOKEN)).await {
            Ok(r) if r.status.is_success() => {
                seen.times.push(started.elapsed().as_secs_f64() * 1000.0);
                seen.bytes = seen.bytes.max(r.body.len());
            }
            _ => seen.failures += 1,
        }
        next += Duration::from_secs(1);
        tokio::time::sleep_until(next).await;
    }
    seen
}

pub fn summary(s: &mut String, w: &Watching) {
    let _ = writeln!(s, "\n## What watching the rush costs\n");
    let _ = writeln!(
        s,
        "Cart updates at {RATE:.0}/s on edge-1 of a two-edge fleet (SQLite central), with no \
         dashboard open, then with {DASHBOARDS} dashboards each polling `/admin/fleet` on \
         edge-1 once a second, as the page does. The edge gathers the fleet's view (central's \
         registry and stock, both edges' status) at most once a second and serves it to every \
         dashboard.\n"
    );
    s.push_str(crate::harness::TABLE_HEAD);
    s.push_str(&crate::harness::row("no dashboard", &w.quiet));
    s.push_str(&crate::harness::row(
        &format!("{DASHBOARDS} dashboards"),
        &w.watched,
    ));
    let _ = writeln!(
        s,
        "\n`/admin/fleet` during the run: {} polls, p50 {:.2} ms, p99 {:.2} ms, {} failed; \
         {} bytes a view.\n",
        w.polls, w.poll_p50_ms, w.poll_p99_ms, w.poll_failures, w.view_bytes
    );
}
