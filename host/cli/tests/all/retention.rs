//! Day after day: thirty daily sales, one after another, on a fleet around a PostgreSQL central
//! where two edges keep a finished sale two "days" and two keep everything. Time is scaled, not
//! moved: a day is a few seconds, an ended sale leaves the calendar as soon as it is settled,
//! and retention is two such days. The retaining edges' databases stop growing, and so do
//! central's receipts of their events; the others grow; the audit passes after every sale; a
//! pruned sale's cart answers `404` where it was pruned only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::{CartRef, Client, Fleet, TestEdge, audit_passes, eventually, sale_of};

const DAYS: usize = 30;
/// A sale's length; the day is this, the shopping before it and the settling after.
const SALE_SECS: i64 = 2;

/// Shoppers a day at each edge: three in five buy a unit, the others hold one past the end.
const SHOPPERS: usize = 20;

/// One day's shoppers at one edge; the first one's cart.
async fn shop(client: Client, day: usize, n: usize) -> CartRef {
    let mut first = None;
    for i in 0..SHOPPERS {
        let customer = format!("day{day}-e{n}-{i}");
        let cart = client.create_cart(&customer).await;
        let (status, body) = client.set(&cart, "BAG", 1).await;
        assert_eq!(status, StatusCode::OK, "day {day}: {body}");
        if i % 5 < 3 {
            let (status, body) = client.checkout(&cart, &customer).await;
            assert_eq!(status, StatusCode::CREATED, "day {day}: {body}");
        }
        first.get_or_insert(cart);
    }
    first.unwrap_or_else(|| unreachable!())
}

/// The database's size in pages.
async fn pages(edge: &TestEdge) -> u32 {
    edge.edge()
        .read(cart_edge::store::retention::pages)
        .await
        .expect("page count")
        .0
}

/// Whether the edge has dropped `sale_id` from its calendar, settled.
async fn dropped(edge: &TestEdge, sale_id: &str) -> bool {
    let sale_id = sale_id.to_owned();
    edge.edge()
        .read(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM finished_sales WHERE sale_id = ?1",
                [&sale_id],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .expect("finished sales")
        == 1
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_daily_sales_leave_retaining_edges_no_bigger_and_the_audit_passing() {
    let day_sale =
        |day: usize| sale_of(&format!("day-{day:02}"), &[("BAG", 400, 2)], -1, SALE_SECS);
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("retention").await.expect("database");
    let fleet = Fleet::on(url, &day_sale(0)).await;
    let day = Duration::from_secs(3);
    let mut edges = Vec::new();
    for (id, retain) in [
        ("edge-1", 2 * day),
        ("edge-2", 2 * day),
        ("edge-3", Duration::ZERO),
        ("edge-4", Duration::ZERO),
    ] {
        let mut config = fleet.config(id);
        config.keep_ended = Duration::ZERO;
        config.retain = retain;
        config.outbox_keep = Duration::ZERO;
        config.sweep_every = Duration::from_millis(200);
        edges.push(fleet.edge_with(config).await);
    }
    let urls = || edges.iter().map(|e| e.client.url.clone());
    let central = fleet.central().await;
    let mut sizes: Vec<[u32; 4]> = Vec::new();
    let mut first_carts = Vec::new();
    for d in 0..DAYS {
        let started = Instant::now();
        let sale = day_sale(d);
        if d > 0 {
            central
                .load_sale(&sale)
                .await
                .expect("the day's sale loads");
        }
        for edge in &edges {
            eventually(
                "the day's sale at every edge",
                Duration::from_secs(10),
                || async {
                    let (status, sku) = edge
                        .call(Method::GET, "/v1/skus/BAG", None, Value::Null)
                        .await;
                    status == StatusCode::OK
                        && sku["sale_id"] == sale.sale_id.as_str()
                        && sku["available_here"].as_u64() >= Some(5)
                },
            )
            .await;
        }
        let on_sale = started.elapsed();
        let shoppers: Vec<_> = (edges.iter().enumerate())
            .map(|(n, edge)| tokio::spawn(shop(edge.client.clone(), d, n)))
            .collect();
        for shopper in shoppers {
            let cart = shopper.await.expect("shoppers");
            if d == 0 {
                first_carts.push(cart);
            }
        }
        let shopped = started.elapsed();
        for edge in &edges {
            eventually(
                "the day's sale dropped, settled",
                Duration::from_secs(20),
                || dropped(edge, &sale.sale_id),
            )
            .await;
        }
        let settled = started.elapsed();
        audit_passes(&fleet, urls()).await;
        let mut size = [0; 4];
        for (s, edge) in size.iter_mut().zip(&edges) {
            *s = pages(edge).await;
        }
        eprintln!(
            "day {d}: pages {size:?}; on sale {on_sale:?}, shopped {shopped:?}, dropped \
             {settled:?}, audited {:?}",
            started.elapsed()
        );
        sizes.push(size);
        // The rest of the "day": retention counts from the drop.
        tokio::time::sleep(day.saturating_sub(started.elapsed())).await;
    }
    // The module the edges store is most of a fresh database: growth is counted in pages
    // over the first day's size. Keeping everything, a day's carts take a page or two.
    let grew = |e: usize, d: usize| sizes[d][e].saturating_sub(sizes[0][e]);
    for e in 0..2 {
        let most = (0..DAYS).map(|d| grew(e, d)).max().unwrap_or(0);
        assert!(
            most <= 8,
            "edge-{}: keeping two days, its database grew by {most} pages: {sizes:?}",
            e + 1
        );
    }
    for e in 2..4 {
        assert!(
            grew(e, DAYS - 1) >= grew(e, 4) + 20,
            "edge-{}: keeping everything, its database should grow by a page a day: \
             {sizes:?}",
            e + 1
        );
    }
    // The first day's carts: gone where they were pruned, whole where they were kept.
    for (edge, cart) in edges.iter().zip(&first_carts) {
        let (status, body) = edge.client.get_cart(cart).await;
        let kept = edge.edge().config.retain.is_zero();
        let want = if kept {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, want, "{body}");
    }
    let deleted = edges[0]
        .client
        .metric("cart_retention_deleted_carts_total")
        .await;
    assert!(deleted.is_some_and(|n| n >= 100.0), "{deleted:?}");
    // Central: the retaining edges' receipts of applied events are a few days' worth, the
    // others' every one since the first day (a day is some fifty events an edge). Read after
    // the metric: the edges go on forgetting.
    let forgotten = edges[0]
        .client
        .metric("cart_retention_deleted_central_receipts_total")
        .await;
    let snapshot = central.snapshot().await.expect("snapshot");
    for (edge, id) in edges.iter().zip(["edge-1", "edge-2", "edge-3", "edge-4"]) {
        let ledger = &snapshot.edges[id];
        if edge.edge().config.retain.is_zero() {
            assert_eq!(ledger.events_applied, ledger.high_water, "{id}: {ledger:?}");
        } else {
            assert!(
                ledger.events_applied < ledger.high_water / 4,
                "{id}: central kept too many receipts: {ledger:?}"
            );
        }
    }
    let pruned = snapshot.edges["edge-1"].events_pruned as f64;
    assert!(
        forgotten.is_some_and(|n| n > 0.0 && n <= pruned),
        "{forgotten:?} of {pruned}"
    );
}
