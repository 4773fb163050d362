//! Direct against queued delivery: the same noon sale on ten edges over PostgreSQL, once with
//! each edge writing its outbox to central and once through NATS JetStream and one relay.
//! Measured: central's committed transactions per second and its open connections, the edges'
//! outbox lag, and the time from a hold acknowledged to its row at central.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use hyper::Method;

use crate::harness::{
    BenchConfig, Edge, Rules, TOKEN, audit, measure, noon_sale, postgres_with_sale, relay,
};
use cart_edge::http_client::HttpClient;
use cart_load::LoadReport;
use cart_testkit::Nats;

pub const EDGES: usize = 10;
/// How often a probe changes its hold, and how often it looks for the change at central.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_POLL: Duration = Duration::from_millis(2);

/// One way of delivering, measured.
pub struct DeliveryRun {
    pub report: LoadReport,
    /// Transactions central committed per second of the sale (the probe's look-ups left out).
    pub central_tps: f64,
    /// Of those transactions, each a request with an answer in both modes: customers met for
    /// the first time (their home edge recorded), and unit grants and returns.
    pub new_customers: i64,
    pub grants_and_returns: i64,
    /// Most client connections central had open at once.
    pub max_connections: i64,
    /// The edges' outbox lag (age of the oldest undelivered event), sampled every 100 ms.
    pub outbox_lag_p99_ms: u64,
    /// From a hold change acknowledged to the shopper to its row at central.
    pub end_to_end: Histogram<u64>,
    pub audit: String,
}

pub struct Delivery {
    pub direct: DeliveryRun,
    pub queued: DeliveryRun,
    pub nats: String,
}

pub async fn compare(cfg: &BenchConfig) -> anyhow::Result<Delivery> {
    Ok(Delivery {
        direct: run(cfg, false).await?,
        queued: run(cfg, true).await?,
        nats: Nats::version(),
    })
}

async fn run(cfg: &BenchConfig, queued: bool) -> anyhow::Result<DeliveryRun> {
    let name = if queued {
        "delivery-queued"
    } else {
        "delivery-direct"
    };
    let dir = cfg.out_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_pg, central) = postgres_with_sale().await?;
    let nats = if queued { Some(Nats::start()?) } else { None };
    let queue_args: Vec<String> = nats
        .iter()
        .flat_map(|n| ["--queue".to_owned(), n.url()])
        .collect();
    let _relay = match &nats {
        Some(n) => Some(relay(cfg, &dir, &n.url(), &central)?),
        None => None,
    };
    let extra: Vec<&str> = queue_args.iter().map(String::as_str).collect();
    let mut edges = Vec::new();
    for i in 1..=EDGES {
        let id = format!("edge-{i}");
        edges.push(Edge::start(cfg, &dir, &id, &central, Rules::Component, &extra).await?);
    }
    let urls: Vec<String> = edges.iter().map(|e| e.url.clone()).collect();

    let (db, connection) = tokio_postgres::connect(&central, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let db = Arc::new(db);
    let stop = Arc::new(AtomicBool::new(false));
    let lag = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 3_600_000, 3,
    )?));
    let connections = Arc::new(AtomicI64::new(0));
    let sampler = tokio::spawn(sample(
        urls.clone(),
        Arc::clone(&db),
        Arc::clone(&stop),
        Arc::clone(&lag),
        Arc::clone(&connections),
    ));
    let probe = tokio::spawn(probe(urls[0].clone(), Arc::clone(&db), Arc::clone(&stop)));
    let commits_before = commits(&db).await?;

    let report = measure(cfg, name, noon_sale(cfg, &urls)).await?;
    stop.store(true, Ordering::Relaxed);
    let (end_to_end, probe_queries) = probe.await??;
    sampler.await??;
    let audit = audit(cfg, &central, &dir, &urls).await?;
    // Ended sessions report their counts: stop the edges and the relay, then read them.
    drop(edges);
    drop(_relay);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commits = commits(&db).await? - commits_before - probe_queries - 2;
    let counts = db
        .query_one(
            "SELECT (SELECT count(*) FROM customers), \
                    (SELECT count(*) FROM grants) + (SELECT count(*) FROM unit_returns)",
            &[],
        )
        .await?;
    let max_connections = connections.load(Ordering::Relaxed);
    let outbox_lag_p99_ms = lag
        .lock()
        .map_err(|_| anyhow::anyhow!("lag sampler panicked"))?
        .value_at_quantile(0.99);
    Ok(DeliveryRun {
        central_tps: commits as f64 / report.duration_s,
        new_customers: counts.get(0),
        grants_and_returns: counts.get(1),
        report,
        max_connections,
        outbox_lag_p99_ms,
        end_to_end,
        audit,
    })
}

/// Transactions committed in central's database so far.
async fn commits(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?
        .get(0))
}

/// Every 100 ms until `stop`: each edge's outbox lag, and central's open connections (the
/// sampler's own left out).
async fn sample(
    urls: Vec<String>,
    db: Arc<tokio_postgres::Client>,
    stop: Arc<AtomicBool>,
    lag: Arc<std::sync::Mutex<Histogram<u64>>>,
    connections: Arc<AtomicI64>,
) -> anyhow::Result<()> {
    let client = HttpClient::default();
    while !stop.load(Ordering::Relaxed) {
        for u in &urls {
            if let Ok(r) = client.get(&format!("{u}/admin/status"), Some(TOKEN)).await
                && let Ok(v) = r.json()
            {
                let ms = v["sync_lag_ms"].as_u64().unwrap_or(0);
                if let Ok(mut h) = lag.lock() {
                    h.saturating_record(ms);
                }
            }
        }
        let open: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .await?
            .get(0);
        connections.fetch_max(open, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A shopper of its own on the first edge: holds a unit of SKU-0, releases it, holds it again,
/// every [`PROBE_EVERY`]; after each acknowledged change, looks at central every
/// [`PROBE_POLL`] until the change is there. The times, and how many look-ups it made (each is
/// a transaction central committed).
async fn probe(
    edge: String,
    db: Arc<tokio_postgres::Client>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Histogram<u64>, i64)> {
    let client = HttpClient::default();
    let mut times = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut queries = 0;
    let created = client
        .send(
            Method::POST,
            &format!("{edge}/v1/carts"),
            &[("content-type", "application/json")],
            r#"{"customer_id": "probe"}"#,
        )
        .await?
        .json()?;
    let cart = created["cart_id"].as_str().context("cart_id")?.to_owned();
    let token = format!(
        "Bearer {}",
        created["cart_token"].as_str().context("cart_token")?
    );
    let mut quantity = 1;
    while !stop.load(Ordering::Relaxed) {
        let answer = client
            .send(
                Method::PUT,
                &format!("{edge}/v1/carts/{cart}/items/SKU-0"),
                &[
                    ("content-type", "application/json"),
                    ("authorization", &token),
                ],
                format!(r#"{{"quantity": {quantity}}}"#),
            )
            .await?;
        let acknowledged = Instant::now();
        if answer.status.is_success() {
            let deadline = acknowledged + Duration::from_secs(30);
            loop {
                queries += 1;
                let rows = db
                    .query(
                        "SELECT quantity FROM holds WHERE cart_id = $1 AND sku = 'SKU-0'",
                        &[&cart],
                    )
                    .await?;
                let at_central: i64 = rows.first().map_or(0, |r| r.get(0));
                if at_central == quantity || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(PROBE_POLL).await;
            }
            times.saturating_record(acknowledged.elapsed().as_micros() as u64);
            quantity = 1 - quantity;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    Ok((times, queries))
}

/// The section of BENCHMARKS.md.
pub fn summary(s: &mut String, d: &Delivery) {
    let _ = writeln!(
        s,
        "\n## Direct and queued delivery: {EDGES} edges, PostgreSQL central, a noon sale\n"
    );
    let f = &d.direct.report;
    let _ = writeln!(
        s,
        "The same sale as above (noon curve peaking at {:.0}/s for {:.0} s) on {EDGES} edges: \
         each edge writes its outbox to central over its own pool (direct), or publishes it to \
         NATS JetStream ({}) and one `cart-host relay` applies it (queued; grants stay direct, \
         one central connection per edge). Central's transactions are those committed while \
         the sale ran and drained (the probe's look-ups left out), per second of the sale; of \
         them, requests that need an answer and stay direct in both modes: a new customer's \
         home edge recorded, a grant or a return of units. Connections are the most open at \
         once. End to end: a probe shopper changes a hold every {} ms and polls central every \
         {} ms until the change is there.\n",
        f.target_rate,
        f.duration_s,
        d.nats,
        PROBE_EVERY.as_millis(),
        PROBE_POLL.as_millis()
    );
    let _ = writeln!(
        s,
        "| delivery | requests | p99 ms | central tx/s | new customers | grants + returns | central connections | outbox lag p99 | hold to central p50 | p99 | max | probes | audit |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (name, r) in [("direct", &d.direct), ("queued", &d.queued)] {
        let ms = |q: f64| r.end_to_end.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            s,
            "| {name} | {} | {:.2} | {:.0} | {} | {} | {} | {} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |",
            r.report.sent,
            r.report.latency_ms.p99,
            r.central_tps,
            r.new_customers,
            r.grants_and_returns,
            r.max_connections,
            r.outbox_lag_p99_ms,
            ms(0.5),
            ms(0.99),
            r.end_to_end.max() as f64 / 1000.0,
            r.end_to_end.len(),
            r.audit
        );
    }
}
