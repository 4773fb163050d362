//! Far from central: the same cart updates served by three edges whose central PostgreSQL is
//! [`RTT`] away (half of it each way, through the test kit's proxy), and done as transactions
//! straight on that PostgreSQL across the same link: the single-database cart the edge design
//! replaced (a row lock on the SKU's stock, the hold written, the stock moved, commit). The
//! edges run twice: delivering their outboxes to central directly across the link, and through
//! NATS JetStream as far away, with a relay beside central. Measured: the updates' times, how
//! fast events reach central across the link, and whether they all get there (the audit, once
//! the link is fast again).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::Method;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;

use crate::harness::{
    BenchConfig, Edge, GOALS_HEAD, Rules, TOKEN, audit, goal, postgres_with_sale, relay,
};
use cart_edge::http_client::HttpClient;
use cart_testkit::link::Link;
use cart_testkit::{Nats, Postgres};

/// The round trip between each edge and central.
pub const RTT: Duration = Duration::from_millis(80);
/// Shoppers at once, each holding and letting go of a unit in a loop.
pub const SHOPPERS: usize = 24;
const EDGES: usize = 3;

/// One way of keeping carts, measured.
pub struct Run {
    /// Each update's time, in microseconds.
    pub latency: Histogram<u64>,
    pub updates: u64,
    /// Answers other than a success, by status (an edge's `409 sold_out`; 0 for a
    /// transaction's error).
    pub failed: BTreeMap<u16, u64>,
    pub seconds: f64,
}

/// The edges, one way of delivering their outboxes, measured.
pub struct EdgeRun {
    pub shoppers: Run,
    /// Events central applied per second during the run, and what was still waiting at its
    /// end.
    pub applied_per_s: f64,
    pub backlog_after: i64,
    /// Once the link is fast again: how long the outboxes took to drain, and the audit.
    pub drained_after: Duration,
    pub audit: String,
}

pub struct Wan {
    /// Each edge delivering its outbox to central across the link.
    pub direct: EdgeRun,
    /// Through NATS JetStream beside central (across the link from the edges), applied by a
    /// relay beside it.
    pub queued: EdgeRun,
    pub central_db: Run,
}

pub async fn run(cfg: &BenchConfig) -> anyhow::Result<Wan> {
    let duration = Duration::from_secs_f64(cfg.step_secs * 2.0);
    let direct = edges(cfg, duration, false).await?;
    let queued = edges(cfg, duration, true).await?;
    let pg = Postgres::start()?;
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse()?;
    let link = Link::start(target).await?;
    link.delay(RTT / 2);
    let db = pg.database("central_cart").await?;
    let db = link.url(&db, target);
    central_cart_schema(&db).await?;
    let central_db = shoppers(|i| {
        let db = db.clone();
        async move { central_shopper(&db, i, duration).await }
    })
    .await?;
    Ok(Wan {
        direct,
        queued,
        central_db,
    })
}

/// [`EDGES`] edges [`RTT`] away from central (and from the queue, `queued`), under the
/// shoppers for `duration`; then the link made fast, the outboxes drained and the books audited.
async fn edges(cfg: &BenchConfig, duration: Duration, queued: bool) -> anyhow::Result<EdgeRun> {
    let dir = cfg
        .out_dir
        .join(if queued { "wan-queued" } else { "wan-direct" });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (pg, central) = postgres_with_sale().await?;
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse()?;
    let to_central = Link::start(target).await?;
    to_central.delay(RTT / 2);
    let nats = if queued { Some(Nats::start()?) } else { None };
    let to_queue = match &nats {
        Some(nats) => {
            let target: SocketAddr = nats.url().trim_start_matches("nats://").parse()?;
            let link = Link::start(target).await?;
            link.delay(RTT / 2);
            Some((link.url(&nats.url(), target), link))
        }
        None => None,
    };
    let _relay = match &nats {
        Some(n) => Some(relay(cfg, &dir, &n.url(), &central)?),
        None => None,
    };
    let via = to_central.url(&central, target);
    // A shopper short of units waits for a grant, which takes a few round trips.
    let mut extra = vec!["--shortage-wait-ms", "1000"];
    if let Some((url, _)) = &to_queue {
        extra.extend(["--queue", url.as_str()]);
    }
    let mut edges = Vec::new();
    for i in 1..=EDGES {
        let id = format!("edge-{i}");
        edges.push(Edge::start(cfg, &dir, &id, &via, Rules::Component, &extra).await?);
    }
    let urls: Vec<String> = edges.iter().map(|e| e.url.clone()).collect();
    let client = HttpClient::new(Duration::from_secs(30));
    for url in &urls {
        wait_for_units(&client, url).await?;
    }
    let (db, connection) = tokio_postgres::connect(&central, NoTls).await?;
    tokio::spawn(connection);
    let applied = || async {
        let row = db
            .query_one("SELECT count(*) FROM applied_events", &[])
            .await?;
        anyhow::Ok(row.get::<_, i64>(0))
    };
    let applied_before = applied().await?;
    let shoppers = shoppers(|i| {
        let (client, url) = (client.clone(), urls[i % EDGES].clone());
        async move { edge_shopper(client, url, i, duration).await }
    })
    .await?;
    let applied_per_s = (applied().await? - applied_before) as f64 / shoppers.seconds;
    let backlog_after = backlog(&client, &urls).await?;

    to_central.heal();
    if let Some((_, link)) = &to_queue {
        link.heal();
    }
    // Drained: every event the edges hold is applied at central (through the queue, the
    // edges' outboxes empty long before the relay has applied what the stream holds).
    let healed = Instant::now();
    while (backlog(&client, &urls).await? > 0
        || applied().await? < published(&client, &urls).await?)
        && healed.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained_after = healed.elapsed();
    let audit = audit(cfg, &central, &dir, &urls).await?;
    Ok(EdgeRun {
        shoppers,
        applied_per_s,
        backlog_after,
        drained_after,
        audit,
    })
}

/// Runs [`SHOPPERS`] shoppers to their end; their updates' times together.
async fn shoppers<F, Fut>(shopper: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<(Histogram<u64>, BTreeMap<u16, u64>)>> + Send + 'static,
{
    let started = Instant::now();
    let mut all = JoinSet::new();
    for i in 0..SHOPPERS {
        all.spawn(shopper(i));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut failed = BTreeMap::new();
    while let Some(done) = all.join_next().await {
        let (times, refused) = done??;
        latency.add(&times)?;
        for (status, n) in refused {
            *failed.entry(status).or_default() += n;
        }
    }
    Ok(Run {
        updates: latency.len(),
        latency,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A shopper on an edge: one cart, a unit of its SKU held and let go, over and over.
async fn edge_shopper(
    client: HttpClient,
    url: String,
    i: usize,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, BTreeMap<u16, u64>)> {
    let created = client
        .send(
            Method::POST,
            &format!("{url}/v1/carts"),
            &[("content-type", "application/json")],
            format!(r#"{{"customer_id":"wan-{i}"}}"#),
        )
        .await?
        .json()?;
    let (cart, token) = (
        created["cart_id"].as_str().unwrap_or_default().to_owned(),
        format!(
            "Bearer {}",
            created["cart_token"].as_str().unwrap_or_default()
        ),
    );
    let line = format!("{url}/v1/carts/{cart}/items/SKU-{}", i % 3);
    let headers = [
        ("authorization", token.as_str()),
        ("content-type", "application/json"),
    ];
    let mut times = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut failed = BTreeMap::new();
    let until = Instant::now() + duration;
    let mut quantity = 1;
    while Instant::now() < until {
        let started = Instant::now();
        let answer = if quantity == 1 {
            client
                .send(Method::PUT, &line, &headers, r#"{"quantity":1}"#)
                .await?
        } else {
            client.send(Method::DELETE, &line, &headers, "").await?
        };
        times.saturating_record(micros(started.elapsed()));
        if !answer.status.is_success() {
            *failed.entry(answer.status.as_u16()).or_default() += 1;
        }
        quantity = 1 - quantity;
    }
    Ok((times, failed))
}

/// The central-database cart's tables: the stock, and the holds.
async fn central_cart_schema(url: &str) -> anyhow::Result<()> {
    let (db, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    db.batch_execute(
        "CREATE TABLE stock (sku TEXT PRIMARY KEY, available INT NOT NULL CHECK (available >= 0));
         CREATE TABLE holds (cart TEXT, sku TEXT, quantity INT NOT NULL, PRIMARY KEY (cart, sku));
         INSERT INTO stock VALUES ('SKU-0', 2000), ('SKU-1', 2000), ('SKU-2', 2000);",
    )
    .await?;
    Ok(())
}

/// A shopper on the central database, across the link: the same hold and release, each a
/// transaction with the SKU's stock row locked (statements prepared once, before the clock).
async fn central_shopper(
    url: &str,
    i: usize,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, BTreeMap<u16, u64>)> {
    let (mut db, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    let lock = db
        .prepare("SELECT available FROM stock WHERE sku = $1 FOR UPDATE")
        .await?;
    let hold = db.prepare("INSERT INTO holds VALUES ($1, $2, 1)").await?;
    let take = db
        .prepare("UPDATE stock SET available = available - 1 WHERE sku = $1")
        .await?;
    let release = db
        .prepare("DELETE FROM holds WHERE cart = $1 AND sku = $2 RETURNING quantity")
        .await?;
    let give = db
        .prepare("UPDATE stock SET available = available + $2 WHERE sku = $1")
        .await?;
    let (cart, sku) = (format!("cart-{i}"), format!("SKU-{}", i % 3));
    let mut times = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut failed = BTreeMap::new();
    let until = Instant::now() + duration;
    let mut holding = false;
    while Instant::now() < until {
        let started = Instant::now();
        let done: anyhow::Result<()> = async {
            let tx = db.transaction().await?;
            if holding {
                if let Some(row) = tx.query_opt(&release, &[&cart, &sku]).await? {
                    let quantity: i32 = row.get(0);
                    tx.execute(&give, &[&sku, &quantity]).await?;
                }
            } else {
                let available: i32 = tx.query_one(&lock, &[&sku]).await?.get(0);
                anyhow::ensure!(available > 0, "sold out");
                tx.execute(&hold, &[&cart, &sku]).await?;
                tx.execute(&take, &[&sku]).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        times.saturating_record(micros(started.elapsed()));
        match done {
            Ok(()) => holding = !holding,
            Err(_) => *failed.entry(0).or_default() += 1,
        }
    }
    Ok((times, failed))
}

/// `0`, or each status's count (`409: 12`; `error` for a failed transaction).
fn failures(failed: &BTreeMap<u16, u64>) -> String {
    if failed.is_empty() {
        return "0".into();
    }
    let each: Vec<String> = failed
        .iter()
        .map(|(status, n)| match status {
            0 => format!("error: {n}"),
            status => format!("{status}: {n}"),
        })
        .collect();
    each.join(", ")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn wait_for_units(client: &HttpClient, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let skus = client.get(&format!("{url}/v1/skus"), None).await?.json()?;
        let stocked = skus["skus"].as_array().is_some_and(|s| {
            !s.is_empty()
                && s.iter()
                    .all(|k| k["available_here"].as_u64().unwrap_or(0) > 0)
        });
        if stocked {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} got no units within a minute: {skus}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn statuses(client: &HttpClient, urls: &[String]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for url in urls {
        all.push(
            client
                .get(&format!("{url}/admin/status"), Some(TOKEN))
                .await?
                .json()?,
        );
    }
    Ok(all)
}

/// Every event the edges have written (an edge's history numbers them from 1).
async fn published(client: &HttpClient, urls: &[String]) -> anyhow::Result<i64> {
    Ok(statuses(client, urls)
        .await?
        .iter()
        .map(|s| {
            s["delivered_seq"].as_i64().unwrap_or(0) + s["outbox_backlog"].as_i64().unwrap_or(0)
        })
        .sum())
}

async fn backlog(client: &HttpClient, urls: &[String]) -> anyhow::Result<i64> {
    Ok(statuses(client, urls)
        .await?
        .iter()
        .map(|s| s["outbox_backlog"].as_i64().unwrap_or(0))
        .sum())
}

pub fn summary(out: &mut String, w: &Wan) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let _ = writeln!(
        out,
        "\n## Far from central: {} ms between the edges and central\n\n\
         {SHOPPERS} shoppers each hold a unit and let it go, over and over, for {:.0} s: on \
         {EDGES} edges whose central PostgreSQL is {} ms away (through the test kit's proxy), \
         their outboxes delivered to it directly or through NATS JetStream beside it (as far \
         away, a relay beside both applying them); and as transactions straight on that \
         PostgreSQL across the same link (the SKU's stock row locked, the hold written, the \
         stock moved, commit). Updates that failed are `sold_out` answers or failed \
         transactions.\n\n\
         | carts kept | updates | updates/s | failed | p50 ms | p99 ms | max ms |\n\
         |---|---|---|---|---|---|---|",
        RTT.as_millis(),
        w.direct.shoppers.seconds,
        RTT.as_millis(),
    );
    for (name, r) in [
        ("at the edges, outbox direct", &w.direct.shoppers),
        ("at the edges, outbox through the queue", &w.queued.shoppers),
        ("in central's database", &w.central_db),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} |",
            r.updates,
            r.updates as f64 / r.seconds,
            failures(&r.failed),
            ms(&r.latency, 0.5),
            ms(&r.latency, 0.99),
            ms(&r.latency, 1.0),
        );
    }
    let (edge_p99, central_p50, central_p99) = (
        ms(&w.direct.shoppers.latency, 0.99),
        ms(&w.central_db.latency, 0.5),
        ms(&w.central_db.latency, 0.99),
    );
    let _ = writeln!(
        out,
        "\nAt p99 the edges answer {:.0}x faster than the central-database cart ({:.0}x at p50).\n",
        central_p99 / edge_p99.max(0.001),
        central_p50 / ms(&w.direct.shoppers.latency, 0.5).max(0.001),
    );
    out.push_str(GOALS_HEAD);
    goal(
        out,
        "p99 ms of cart updates at the edges, outbox direct",
        format!("{edge_p99:.2} ms"),
        edge_p99,
        10.0,
        false,
    );
    let rtt = RTT.as_millis() as f64;
    goal(
        out,
        "p50 ms of the central-database cart (at least a round trip)",
        format!("{central_p50:.0} ms"),
        central_p50,
        rtt,
        true,
    );
    goal(
        out,
        "central-database cart's p99 ÷ the edges' p99",
        format!("{central_p99:.0} ÷ {edge_p99:.2} ms"),
        central_p99 / edge_p99.max(0.001),
        20.0,
        true,
    );
    out.push('\n');
    for (name, r) in [("directly", &w.direct), ("through the queue", &w.queued)] {
        let _ = writeln!(
            out,
            "- Outboxes {name}: central applied {:.0} events/s during the run, {} events were \
             still waiting at its end; with the links fast again they drained in {:.1} s; the \
             audit: {}.",
            r.applied_per_s,
            r.backlog_after,
            r.drained_after.as_secs_f64(),
            r.audit,
        );
    }
}
