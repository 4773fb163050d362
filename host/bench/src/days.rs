//! Day after day: [`DAYS`] daily sales, one after another, on two fleets of two edges around
//! PostgreSQL, one that keeps a finished sale two days (`--retain-days 2`) and one that keeps
//! everything (`--retain-days 0`); the edges' and central's database sizes after each day.
//!
//! Time is scaled, not moved: a day is [`DAY`], its sale [`SALE`] of it, and a finished sale
//! leaves the calendar as soon as it is settled. The edges run in this process, where their
//! configuration can say so; everything else is as `cart-host serve` runs them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cart_central::Central;
use cart_central::sale::Sale;
use cart_central::time::{rfc3339, wall_ms};
use cart_edge::config::ModuleBytes;
use cart_edge::config::{CreateRate, EdgeConfig};
use cart_edge::http_client::HttpClient;
use cart_edge::server::RunningEdge;
use cart_load::{LoadConfig, Scenario};
use cart_testkit::Postgres;
use serde_json::json;

use crate::harness::{BenchConfig, TOKEN};

/// Daily sales run.
pub const DAYS: usize = 30;
/// A scaled day: the sale, its settling and the rest.
const DAY: Duration = Duration::from_secs(8);
/// A sale's length.
const SALE: Duration = Duration::from_secs(4);
/// Shoppers arriving a second during a sale, at each fleet.
const SHOPPERS_PER_SEC: f64 = 100.0;
/// How long they arrive.
const SHOPPING: Duration = Duration::from_secs(2);

/// One fleet's sizes after one day.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    /// Each edge's database, in bytes.
    pub edges: [u64; 2],
    /// Central's receipts of applied events kept, and their table's size in bytes.
    pub receipts: i64,
    pub receipts_bytes: i64,
    /// Central's whole database, in bytes.
    pub central_bytes: i64,
}

pub struct Days {
    /// Per day: the fleet keeping two days, then the one keeping everything.
    pub sizes: Vec<[Sizes; 2]>,
    /// Orders placed over all days, in each fleet.
    pub orders: [u64; 2],
    pub took: Duration,
}

/// One fleet: its central's database and its edges.
struct Fleet {
    url: String,
    central: Central,
    edges: Vec<RunningEdge>,
}

pub async fn run(cfg: &BenchConfig) -> anyhow::Result<Days> {
    let started = Instant::now();
    let pg = Postgres::start()?;
    let module = ModuleBytes::read(&cfg.module)?;
    let mut fleets = Vec::new();
    for (name, retain) in [("retaining", 2 * DAY), ("keeping", Duration::ZERO)] {
        let url = pg.database(name).await?;
        let central = Central::connect(&url).await?;
        central.load_sale(&day_sale(0)?).await?;
        let mut edges = Vec::new();
        for id in ["edge-1", "edge-2"] {
            let config = EdgeConfig {
                edge_id: id.into(),
                data_dir: cfg.out_dir.join("days").join(name).join(id),
                central_url: url.clone(),
                module: module.clone(),
                admin_token: Some(TOKEN.into()),
                create_rate: CreateRate::UNLIMITED,
                keep_ended: Duration::ZERO,
                retain,
                outbox_keep: Duration::ZERO,
                sweep_every: Duration::from_millis(200),
                ..EdgeConfig::default()
            };
            let _ = std::fs::remove_dir_all(&config.data_dir);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            edges.push(cart_edge::server::start(listener, config).await?);
        }
        fleets.push(Fleet {
            url,
            central,
            edges,
        });
    }
    let mut days = Days {
        sizes: Vec::new(),
        orders: [0; 2],
        took: Duration::ZERO,
    };
    for d in 0..DAYS {
        let dawn = Instant::now();
        let sale = day_sale(d)?;
        for fleet in &fleets {
            if d > 0 {
                fleet.central.load_sale(&sale).await?;
            }
            for edge in &fleet.edges {
                on_sale(&edge.url, &sale.sale_id).await?;
            }
        }
        // Both fleets' shoppers at once.
        let shoppers: Vec<_> = (fleets.iter())
            .map(|fleet| {
                tokio::spawn(cart_load::run(LoadConfig {
                    edges: fleet.edges.iter().map(|e| e.url.clone()).collect(),
                    scenario: Scenario::Sale,
                    rate: SHOPPERS_PER_SEC,
                    duration: SHOPPING,
                    ..LoadConfig::default()
                }))
            })
            .collect();
        for (orders, shopped) in days.orders.iter_mut().zip(shoppers) {
            *orders += shopped.await??.units_ordered;
        }
        let mut sizes = [Sizes::default(); 2];
        for (fleet, size) in fleets.iter().zip(&mut sizes) {
            for edge in &fleet.edges {
                dropped(edge, &sale.sale_id).await?;
            }
            *size = measure(fleet).await?;
        }
        eprintln!(
            "  day {:2}: edges {:?} / {:?} bytes; central receipts {} / {}",
            d + 1,
            sizes[0].edges,
            sizes[1].edges,
            sizes[0].receipts,
            sizes[1].receipts
        );
        days.sizes.push(sizes);
        tokio::time::sleep(DAY.saturating_sub(dawn.elapsed())).await;
    }
    for fleet in fleets {
        for edge in fleet.edges {
            edge.stop().await?;
        }
    }
    days.took = started.elapsed();
    Ok(days)
}

/// Day `d`'s sale: one SKU, stock to spare, starting a second ago and lasting [`SALE`].
fn day_sale(d: usize) -> anyhow::Result<Sale> {
    let now = wall_ms();
    let ends = now + i64::try_from(SALE.as_millis())?;
    let text = json!({
        "sale_id": format!("day-{:02}", d + 1),
        "starts_at": rfc3339(now - 1_000),
        "ends_at": rfc3339(ends),
        "hold_ttl_seconds": 600,
        "skus": [{"sku": "BAG", "name": "Bag", "price_cents": 4900, "stock": 5_000,
                  "limit_per_customer": 2}]
    });
    Ok(Sale::parse(&text.to_string())?)
}

/// Waits until the edge sells `sale_id`.
async fn on_sale(url: &str, sale_id: &str) -> anyhow::Result<()> {
    let client = HttpClient::new(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&format!("{url}/v1/skus/BAG"), None).await
            && serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|sku| sku["sale_id"] == sale_id)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} did not put {sale_id} on sale")
}

/// Waits until the edge has dropped `sale_id` from its calendar, settled.
async fn dropped(edge: &RunningEdge, sale_id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let id = sale_id.to_owned();
        let finished = edge
            .edge
            .read(move |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM finished_sales WHERE sale_id = ?1",
                    [&id],
                    |r| r.get::<_, i64>(0),
                )
            })
            .await?;
        if finished == 1 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{} did not settle {sale_id}", edge.url)
}

/// The fleet's sizes now.
async fn measure(fleet: &Fleet) -> anyhow::Result<Sizes> {
    let mut sizes = Sizes::default();
    for (size, edge) in sizes.edges.iter_mut().zip(&fleet.edges) {
        let (pages, page_size) = edge
            .edge
            .read(|c| {
                let pages: u32 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
                let size: u32 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
                Ok((pages, size))
            })
            .await?;
        *size = u64::from(pages) * u64::from(page_size);
    }
    let (client, conn) = tokio_postgres::connect(&fleet.url, tokio_postgres::NoTls)
        .await
        .context("PostgreSQL")?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), pg_total_relation_size('applied_events'), \
               pg_database_size(current_database()) FROM applied_events",
            &[],
        )
        .await?;
    sizes.receipts = row.get(0);
    sizes.receipts_bytes = row.get(1);
    sizes.central_bytes = row.get(2);
    Ok(sizes)
}

pub fn summary(s: &mut String, d: &Days) {
    let _ = writeln!(s, "## Day after day: database sizes\n");
    let _ = writeln!(
        s,
        "{DAYS} daily sales, one after another, on two fleets of two edges around PostgreSQL: \
         one keeps a finished sale two days (`--retain-days 2`), the other everything \
         (`--retain-days 0`). Time is scaled: a day is {} s, its sale {} s, with {:.0} \
         shoppers a second arriving for {} s at each fleet ({} and {} units ordered in all). \
         Sizes after each day's sale has settled and left the calendar; an edge's database in \
         KiB (page count × page size), central's receipts of applied events (rows, and the \
         table with its index in KiB) and its whole database in KiB. {:.0} s in all.\n",
        DAY.as_secs(),
        SALE.as_secs(),
        SHOPPERS_PER_SEC,
        SHOPPING.as_secs(),
        d.orders[0],
        d.orders[1],
        d.took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| day | edge-1, 2 days (KiB) | edge-1, all (KiB) | receipts, 2 days | receipts, all | \
         receipts KiB, 2 days | receipts KiB, all | central KiB, 2 days | central KiB, all |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (n, [kept, all]) in d.sizes.iter().enumerate() {
        let day = n + 1;
        if !(day <= 3 || day % 5 == 0 || day == d.sizes.len()) {
            continue;
        }
        let _ = writeln!(
            s,
            "| {day} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kept.edges[0] / 1024,
            all.edges[0] / 1024,
            kept.receipts,
            all.receipts,
            kept.receipts_bytes / 1024,
            all.receipts_bytes / 1024,
            kept.central_bytes / 1024,
            all.central_bytes / 1024
        );
    }
    let _ = writeln!(s);
}
