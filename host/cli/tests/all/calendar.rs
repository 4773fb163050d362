//! A sale every day at noon: sales loaded into a running fleet, starting and ending while it
//! runs; the calendar's rules at central.

use std::time::{Duration, Instant};

use cart_central::{Central, CentralError, Loaded};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Fleet, TestEdge, audit_report, eventually, sale_of};

async fn sales(edge: &TestEdge) -> Vec<String> {
    let (status, body) = edge.call(Method::GET, "/v1/sales", None, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sales"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["sale_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Sale A runs; sale B is loaded while it runs and starts seconds later; shoppers buy in both;
/// A ends early by the operator's command: its updates answer `sale_ended`, its holds are
/// released (only its lines), its unsold units go back, and the audit finds A final and B
/// consistent. No edge restarts.
async fn two_sales_one_ending(fleet: Fleet) {
    let edges = [fleet.edge("edge-1").await, fleet.edge("edge-2").await];
    for edge in &edges {
        eventually("units of sale A", Duration::from_secs(10), || async {
            edge.available("A-BAG").await > 0
        })
        .await;
    }
    fleet
        .central()
        .await
        .load_sale(&sale_of("sale-b", &[("B-HAT", 40, 5)], 4, 3600))
        .await
        .expect("sale B loads into the running fleet");
    for edge in &edges {
        eventually("sale B at every edge", Duration::from_secs(10), || async {
            sales(edge).await.contains(&"sale-b".to_owned())
        })
        .await;
    }

    // Shoppers of A at both edges: one buys, one holds, one holds A and then B.
    let mut both = Vec::new();
    for (i, edge) in edges.iter().enumerate() {
        let buyer = edge.create_cart(&format!("buyer-{i}")).await;
        assert_eq!(edge.set(&buyer, "A-BAG", 2).await.0, StatusCode::OK);
        assert_eq!(edge.checkout(&buyer, "k").await.0, StatusCode::CREATED);
        let holder = edge.create_cart(&format!("holder-{i}")).await;
        assert_eq!(edge.set(&holder, "A-BAG", 1).await.0, StatusCode::OK);
        let mixed = edge.create_cart(&format!("mixed-{i}")).await;
        assert_eq!(edge.set(&mixed, "A-BAG", 1).await.0, StatusCode::OK);
        let (status, body) = edge.set(&mixed, "B-HAT", 1).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "sale_not_started");
        both.push(mixed);
    }
    // What is left of A in the sale (20, less 2 sold and 2 held at each edge), and how it
    // sold, as central counts them once the outboxes are delivered, on either database.
    for edge in &edges {
        eventually(
            "A's count left in the sale",
            Duration::from_secs(10),
            || async {
                let (_, sku) = edge
                    .call(Method::GET, "/v1/skus/A-BAG", None, Value::Null)
                    .await;
                sku["available_in_sale"] == 12
            },
        )
        .await;
    }
    let charted = fleet
        .central()
        .await
        .sell_through(300)
        .await
        .expect("sell-through");
    let a = charted
        .iter()
        .find(|s| s.sku == "A-BAG")
        .expect("A charted");
    assert_eq!(a.sold.last(), Some(&4), "{a:?}");
    assert!(a.sold.windows(2).all(|w| w[0] <= w[1]), "{a:?}");

    // B starts; its shoppers are served.
    for (edge, mixed) in edges.iter().zip(&both) {
        eventually("sale B to start", Duration::from_secs(15), || async {
            edge.set(mixed, "B-HAT", 1).await.0 == StatusCode::OK
        })
        .await;
    }

    // The operator ends A now.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["sale", "end", "--central", &fleet.central_url, "sale-a"])
        .output()
        .await
        .expect("cart-host sale end");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The end comes once every edge can know it: after the leases central has granted (10 s
    // here). From then on every edge answers `sale_ended`.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut told = vec![false; edges.len()];
    while told.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for sale A's updates to answer sale_ended: {told:?}"
        );
        for ((edge, mixed), told) in edges.iter().zip(&both).zip(&mut told) {
            if !*told {
                *told = edge.set(mixed, "A-BAG", 2).await.1["error"]["code"] == "sale_ended";
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (edge, mixed) in edges.iter().zip(&both) {
        eventually(
            "sale A's holds released",
            Duration::from_secs(10),
            || async {
                let (_, cart) = edge.get_cart(mixed).await;
                edge.status().await["ended_units"] == 0
                    && cart["lines"].as_array().map(Vec::len) == Some(1)
            },
        )
        .await;
        // A's line left the cart; B's hold stands, and the rest of the cart checks out.
        let stock = edge.status().await;
        assert_eq!(stock["skus"]["B-HAT"]["held"], 1, "{stock}");
        let (status, body) = edge.checkout(mixed, "k2").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["lines"][0]["sku"], "B-HAT", "{body}");
    }
    let report = audit_report(
        &fleet,
        edges.iter().map(|e| e.url.clone()),
        Duration::from_secs(60),
    )
    .await;
    assert!(report.passed(), "{report}");
    let said = report.to_string();
    assert!(
        said.contains("sale sale-a has ended and is final: 4 sold, 16 back at central"),
        "{said}"
    );
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    let b = &snapshot.skus[&cart_central::SkuKey::new("sale-b", "B-HAT")];
    assert_eq!(
        b.sold.values().sum::<i64>(),
        2,
        "sale B's holds stood and were bought"
    );

    // The calendar as the operator sees it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["sale", "list", "--central", &fleet.central_url])
        .output()
        .await
        .expect("cart-host sale list");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("sale-a") && l.contains("ended")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("sale-b") && l.contains("running")),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sale_joins_a_running_fleet_and_the_first_ends_on_sqlite() {
    let fleet = Fleet::new(&sale_of("sale-a", &[("A-BAG", 20, 5)], -60, 3600)).await;
    two_sales_one_ending(fleet).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sale_joins_a_running_fleet_and_the_first_ends_on_postgres() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("calendar").await.expect("database");
    let fleet = Fleet::on(url, &sale_of("sale-a", &[("A-BAG", 20, 5)], -60, 3600)).await;
    two_sales_one_ending(fleet).await;
}

/// Noon: a sale loaded a minute before its start. The edges take units ahead of it, so its
/// first hundred holds are served from them with no grant on their path.
#[tokio::test(flavor = "multi_thread")]
async fn at_noon_the_first_hundred_holds_are_served_from_units_granted_before() {
    let fleet = Fleet::new(&sale_of("yesterday", &[("OLD", 1, 1)], -7200, -3600)).await;
    let edges = [fleet.edge("edge-1").await, fleet.edge("edge-2").await];
    fleet
        .central()
        .await
        .load_sale(&sale_of("noon", &[("WATCH", 2000, 1)], 60, 3600))
        .await
        .expect("the noon sale loads");
    for edge in &edges {
        eventually(
            "units granted before the start",
            Duration::from_secs(15),
            || async {
                let (status, sku) = edge
                    .call(Method::GET, "/v1/skus/WATCH", None, Value::Null)
                    .await;
                status == StatusCode::OK && sku["available_here"].as_u64() >= Some(50)
            },
        )
        .await;
    }
    let granted = |edge: &TestEdge| {
        let edge = edge.client.clone();
        async move {
            edge.metric("cart_stock_granted_units_total")
                .await
                .unwrap_or(0.0)
        }
    };
    let before = [granted(&edges[0]).await, granted(&edges[1]).await];
    // Noon.
    for edge in &edges {
        edge.clock.advance(Duration::from_secs(61));
    }
    let holds: Vec<_> = (0..100)
        .map(|i| {
            let edge = edges[i % 2].client.clone();
            tokio::spawn(async move {
                let cart = edge.create_cart(&format!("noon-{i}")).await;
                edge.set(&cart, "WATCH", 1).await.0
            })
        })
        .collect();
    for h in holds {
        assert_eq!(h.await.expect("shopper"), StatusCode::OK);
    }
    let after = [granted(&edges[0]).await, granted(&edges[1]).await];
    assert_eq!(before, after, "a grant was on a shopper's path");
    assert!(!sales(&edges[0]).await.contains(&"yesterday".to_owned()));
}

/// The calendar's rules, on both databases: the same sale twice is a no-op; a change before
/// the start replaces it, after the start is refused naming what differs; a SKU code shared
/// with a sale at the same time is refused; after it ends, a code may be used again.
#[tokio::test(flavor = "multi_thread")]
async fn the_calendar_takes_repeats_and_early_changes_and_refuses_clashes() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let pg_url = pg.database("calendar_rules").await.expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite:{}", dir.path().join("central.db").display());
    for url in [sqlite_url, pg_url] {
        let central = Central::connect(&url).await.expect("central");
        let running = sale_of("running", &[("BAG", 10, 1)], -60, 3600);
        assert_eq!(
            central.load_sale(&running).await.expect("load"),
            Loaded::New
        );
        assert_eq!(
            central.load_sale(&running).await.expect("again"),
            Loaded::Unchanged,
            "{url}"
        );
        let mut changed = running.clone();
        changed.skus[0].price_cents = 999;
        match central.load_sale(&changed).await {
            Err(CentralError::SaleChanged { differences, .. }) => {
                assert_eq!(differences, ["BAG.price_cents: 1000 -> 999"], "{url}");
            }
            other => panic!("{url}: a started sale was changed: {other:?}"),
        }
        let later = sale_of("later", &[("HAT", 10, 1)], 3600, 7200);
        central.load_sale(&later).await.expect("load later");
        let mut more = later.clone();
        more.skus[0].stock_total = 20;
        assert_eq!(
            central.load_sale(&more).await.expect("replace"),
            Loaded::Replaced,
            "{url}"
        );
        assert_eq!(
            central
                .sale("later")
                .await
                .expect("read")
                .map(|s| s.skus[0].stock_total),
            Some(20)
        );
        let clash = sale_of("clash", &[("BAG", 5, 1)], 1800, 5400);
        match central.load_sale(&clash).await {
            Err(CentralError::SaleOverlaps { other, skus, .. }) => {
                assert_eq!((other.as_str(), skus), ("running", vec!["BAG".to_owned()]));
            }
            other => panic!("{url}: a clashing sale loaded: {other:?}"),
        }
        central.end_sale("running").await.expect("end");
        assert_eq!(
            central.load_sale(&clash).await.expect("after the end"),
            Loaded::New,
            "{url}"
        );
        // A sale an operator ended stays ended, started or not, whatever is loaded again.
        central
            .end_sale("later")
            .await
            .expect("end the scheduled one");
        match central.load_sale(&more).await {
            Err(CentralError::SaleEnded(id)) => assert_eq!(id, "later", "{url}"),
            other => panic!("{url}: an ended sale was loaded again: {other:?}"),
        }
    }
}
