//! A drain under load: three edges (PostgreSQL central), 500 shoppers holding units on the first,
//! who keep changing their carts through the other two while the first drains. Reported: how
//! long the drain took, how long each cart answered `503` while it was on its way (p50, p99,
//! max), the updates' latency, anything else that failed, and the audit of the two edges left.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{BenchConfig, Edge, FLEET_SECRET, Rules, TOKEN, audit, postgres_with_sale};
use cart_edge::http_client::HttpClient;

/// Shoppers holding units on the edge that drains.
pub const SHOPPERS: usize = 500;
/// Between one shopper's updates: 1,000 updates a second in all, which the draining edge and
/// PostgreSQL keep up with here. (At 5,000 a second the draining edge's outbox outgrew what
/// central applied, and each batch waited for it: see BENCHMARKS.md.)
const EVERY: Duration = Duration::from_millis(500);

pub struct Draining {
    /// From `POST /admin/drain` to the process's exit.
    pub drain: Duration,
    pub exit: String,
    /// Per cart that answered `503` at all: from its first `503` to its next answer.
    pub in_transit_ms: Vec<f64>,
    pub unavailable: usize,
    /// Every other answer that was not 2xx, by status.
    pub other_failures: Vec<String>,
    pub updates: usize,
    pub update_ms: Vec<f64>,
    pub audit: String,
}

/// What one shopper saw.
#[derive(Default)]
struct Seen {
    updates: usize,
    times_ms: Vec<f64>,
    unavailable: usize,
    in_transit: Option<f64>,
    failures: Vec<String>,
}

pub async fn run(cfg: &BenchConfig) -> anyhow::Result<Draining> {
    let dir = cfg.out_dir.join("draining");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_pg, central) = postgres_with_sale().await?;
    let secret = dir.join("fleet-secret");
    std::fs::write(&secret, FLEET_SECRET)?;
    let secret = secret.display().to_string();
    let extra = ["--fleet-secret-file", secret.as_str()];
    let mut one = Edge::start(cfg, &dir, "edge-1", &central, Rules::Component, &extra).await?;
    let two = Edge::start(cfg, &dir, "edge-2", &central, Rules::Component, &extra).await?;
    let three = Edge::start(cfg, &dir, "edge-3", &central, Rules::Component, &extra).await?;
    let client = HttpClient::new(Duration::from_secs(10));
    let json = [("content-type", "application/json")];

    let mut carts = Vec::with_capacity(SHOPPERS);
    for i in 0..SHOPPERS {
        let made = client
            .send(
                Method::POST,
                &format!("{}/v1/carts", one.url),
                &json,
                json!({ "customer_id": format!("shopper-{i}") }).to_string(),
            )
            .await?
            .json()?;
        let cart = (
            made["cart_id"].as_str().unwrap_or_default().to_owned(),
            made["cart_token"].as_str().unwrap_or_default().to_owned(),
        );
        let held = put(&client, &one.url, &cart, i % 3, 1).await?;
        anyhow::ensure!(held.0 == StatusCode::OK, "holding a unit: {}", held.1);
        carts.push(cart);
    }

    let busy = Arc::new(AtomicBool::new(true));
    let mut shoppers = tokio::task::JoinSet::new();
    for (i, cart) in carts.into_iter().enumerate() {
        let url = if i % 2 == 0 { &two.url } else { &three.url }.clone();
        let (client, busy) = (client.clone(), Arc::clone(&busy));
        shoppers.spawn(async move {
            let mut seen = Seen::default();
            let mut since: Option<Instant> = None;
            let mut quantity = 1;
            // Spread the shoppers over the interval.
            tokio::time::sleep(EVERY * (i as u32) / SHOPPERS as u32).await;
            while busy.load(Ordering::Relaxed) {
                quantity = 3 - quantity;
                let began = Instant::now();
                match put(&client, &url, &cart, i % 3, quantity).await {
                    Ok((StatusCode::OK, _)) => {
                        seen.updates += 1;
                        seen.times_ms.push(began.elapsed().as_secs_f64() * 1_000.0);
                        if let Some(s) = since.take() {
                            let ms = s.elapsed().as_secs_f64() * 1_000.0;
                            seen.in_transit = Some(seen.in_transit.unwrap_or(0.0).max(ms));
                        }
                    }
                    Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                        seen.unavailable += 1;
                        since.get_or_insert(began);
                    }
                    Ok((status, body)) => seen.failures.push(format!("{status}: {body}")),
                    Err(e) => seen.failures.push(format!("{e:#}")),
                }
                tokio::time::sleep(EVERY).await;
            }
            seen
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = Instant::now();
    let drained = client
        .send(
            Method::POST,
            &format!("{}/admin/drain", one.url),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await?;
    anyhow::ensure!(
        drained.status == StatusCode::ACCEPTED,
        "the drain was refused"
    );
    let exit = match one.exited(Duration::from_secs(60)).await {
        Some(status) => status.to_string(),
        None => "did not exit within 60 s".into(),
    };
    let drain = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    busy.store(false, Ordering::Relaxed);
    let mut all = Seen::default();
    let mut in_transit_ms = Vec::new();
    while let Some(seen) = shoppers.join_next().await {
        let seen = seen?;
        all.updates += seen.updates;
        all.times_ms.extend(seen.times_ms);
        all.unavailable += seen.unavailable;
        all.failures.extend(seen.failures);
        in_transit_ms.extend(seen.in_transit);
    }
    let audit = audit(cfg, &central, &dir, &[two.url.clone(), three.url.clone()]).await?;
    Ok(Draining {
        drain,
        exit,
        in_transit_ms,
        unavailable: all.unavailable,
        other_failures: all.failures,
        updates: all.updates,
        update_ms: all.times_ms,
        audit,
    })
}

/// Sets a cart's quantity of `SKU-{sku}`: the status and the body.
async fn put(
    client: &HttpClient,
    url: &str,
    cart: &(String, String),
    sku: usize,
    quantity: u32,
) -> anyhow::Result<(StatusCode, Value)> {
    let auth = format!("Bearer {}", cart.1);
    let r = client
        .send(
            Method::PUT,
            &format!("{url}/v1/carts/{}/items/SKU-{sku}", cart.0),
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            json!({ "quantity": quantity }).to_string(),
        )
        .await?;
    let body = r.json().unwrap_or(Value::Null);
    Ok((r.status, body))
}

/// The `q` quantile of `values` (0 for none).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round().max(0.0) as usize)
        .copied()
        .unwrap_or(0.0)
}

pub fn summary(s: &mut String, d: &Draining) {
    let _ = writeln!(s, "## A drain under load\n");
    let _ = writeln!(
        s,
        "Three edges (PostgreSQL central); {SHOPPERS} shoppers each hold a unit on edge-1 and \
         change their quantity every {} ms through edge-2 or edge-3, while edge-1 is drained \
         (`POST /admin/drain`): its carts move to the other two in batches of whole customers.\n",
        EVERY.as_millis()
    );
    let _ = writeln!(
        s,
        "- drain: {:.2} s from the request to the process's exit ({})\n\
         - carts that answered `503` while on their way: {} of {SHOPPERS}, for p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms ({} `503` answers in all)\n\
         - updates answered: {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         - other failures: {}\n\
         - audit of the two edges left: {}\n",
        d.drain.as_secs_f64(),
        d.exit,
        d.in_transit_ms.len(),
        quantile(&d.in_transit_ms, 0.5),
        quantile(&d.in_transit_ms, 0.99),
        quantile(&d.in_transit_ms, 1.0),
        d.unavailable,
        d.updates,
        quantile(&d.update_ms, 0.5),
        quantile(&d.update_ms, 0.99),
        quantile(&d.update_ms, 1.0),
        if d.other_failures.is_empty() {
            "none".to_owned()
        } else {
            format!("{} ({})", d.other_failures.len(), d.other_failures[0])
        },
        d.audit.lines().next().unwrap_or_default(),
    );
}
