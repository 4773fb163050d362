//! The audit is trusted only because these tests show it failing: each tampers with one ledger
//! (central's holds, central's sales, the exactly-once log, an edge's stock, an edge's outbox)
//! or lets a customer past the limit, and the audit must name what differs.

use std::time::Duration;

use hyper::StatusCode;

use crate::support::{Fleet, TestEdge, audit_passes, audit_report, eventually, sale};

/// An edge with two carts: one holding two units, one checked out with one.
async fn trading(fleet: &Fleet, edge: &TestEdge) {
    eventually("units at the edge", Duration::from_secs(10), || async {
        edge.available("BAG-1").await >= 3
    })
    .await;
    let holding = edge.create_cart("c-1").await;
    assert_eq!(edge.set(&holding, "BAG-1", 2).await.0, StatusCode::OK);
    let buying = edge.create_cart("c-2").await;
    assert_eq!(edge.set(&buying, "BAG-1", 1).await.0, StatusCode::OK);
    assert_eq!(edge.checkout(&buying, "k").await.0, StatusCode::CREATED);
    let _ = fleet;
}

fn central_db(fleet: &Fleet) -> rusqlite::Connection {
    rusqlite::Connection::open(fleet.dir.path().join("central.db")).expect("central.db")
}

async fn fails_naming(fleet: &Fleet, edge: &TestEdge, says: &str) {
    let report = audit_report(fleet, [edge.url.clone()], Duration::from_secs(3)).await;
    assert!(
        !report.passed(),
        "the audit passed a tampered ledger:\n{report}"
    );
    assert!(
        report.problems.iter().any(|p| p.contains(says)),
        "no problem says {says:?}:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_a_tampered_central_hold() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    trading(&fleet, &edge).await;
    audit_passes(&fleet, [edge.url.clone()]).await;
    central_db(&fleet)
        .execute("UPDATE holds SET quantity = quantity + 1", [])
        .expect("tamper");
    fails_naming(
        &fleet,
        &edge,
        "central records 3 held, the edge's carts hold 2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_a_tampered_central_sale() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    trading(&fleet, &edge).await;
    audit_passes(&fleet, [edge.url.clone()]).await;
    central_db(&fleet)
        .execute("UPDATE order_lines SET quantity = quantity + 1", [])
        .expect("tamper");
    fails_naming(
        &fleet,
        &edge,
        "central records 2 sold, the edge's orders hold 1",
    )
    .await;
    fails_naming(&fleet, &edge, "differs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_an_event_applied_twice() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    trading(&fleet, &edge).await;
    audit_passes(&fleet, [edge.url.clone()]).await;
    // The exactly-once log gains a second application of an event.
    central_db(&fleet)
        .execute(
            "INSERT INTO applied_events (edge_id, seq, kind, applied_at) \
             SELECT edge_id, seq + 1000, kind, applied_at FROM applied_events LIMIT 1",
            [],
        )
        .expect("tamper");
    fails_naming(&fleet, &edge, "events applied for sequence numbers").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_a_tampered_edge_stock_row() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    trading(&fleet, &edge).await;
    audit_passes(&fleet, [edge.url.clone()]).await;
    rusqlite::Connection::open(fleet.dir.path().join("edge-a/edge.db"))
        .expect("edge.db")
        .execute("UPDATE stock SET held = held + 1, free = free - 1", [])
        .expect("tamper");
    fails_naming(&fleet, &edge, "the stock counts 3 held, the carts hold 2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_a_lost_outbox_row() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let mut config = fleet.config("edge-a");
    // Hold the outbox back so a row can go missing before central hears of it.
    config.sync_every = Duration::from_secs(3600);
    let edge = fleet.edge_with(config).await;
    eventually("units at the edge", Duration::from_secs(10), || async {
        edge.available("BAG-1").await >= 2
    })
    .await;
    let cart = edge.create_cart("c-1").await;
    assert_eq!(edge.set(&cart, "BAG-1", 1).await.0, StatusCode::OK);
    assert_eq!(edge.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
    edge.stop().await;
    rusqlite::Connection::open(fleet.dir.path().join("edge-a/edge.db"))
        .expect("edge.db")
        .execute(
            "DELETE FROM outbox WHERE seq = (SELECT MAX(seq) FROM outbox)",
            [],
        )
        .expect("tamper");
    let edge = fleet.edge("edge-a").await;
    fails_naming(
        &fleet,
        &edge,
        "central records 1 held, the edge's carts hold 2",
    )
    .await;
}

/// Two edges outside a fleet (no fleet secret) count a customer's limit each on its own: the
/// audit, which counts across the fleet, names the customer who passed it.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_a_customer_over_the_limit_across_islands() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -60)).await;
    let (one, two) = (fleet.edge("edge-a").await, fleet.edge("edge-b").await);
    for edge in [&one, &two] {
        eventually("units at the edge", Duration::from_secs(10), || async {
            edge.available("BAG-1").await >= 2
        })
        .await;
        let cart = edge.create_cart("greedy").await;
        assert_eq!(edge.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
    }
    let report = audit_report(
        &fleet,
        [one.url.clone(), two.url.clone()],
        Duration::from_secs(10),
    )
    .await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("customer greedy holds and bought 4 of test-sale/BAG-1")),
        "{report}"
    );
}

/// An order placed at or after its sale's end (an edge that sold past it) is named, whichever
/// edge or history placed it.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_an_order_placed_after_its_sales_end() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    trading(&fleet, &edge).await;
    audit_passes(&fleet, [edge.url.clone()]).await;
    central_db(&fleet)
        .execute(
            "UPDATE orders SET placed_at = (SELECT ends_at FROM sales WHERE sale_id = 'test-sale')",
            [],
        )
        .expect("tamper");
    fails_naming(&fleet, &edge, "at or after sale test-sale's end").await;
}

/// A customer past the limit by central's own orders, as after a take-over that forgot them,
/// is named even though no audited edge's books show it.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_catches_a_customer_over_the_limit_by_centrals_orders() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    trading(&fleet, &edge).await;
    audit_passes(&fleet, [edge.url.clone()]).await;
    let db = central_db(&fleet);
    db.execute(
        "INSERT INTO orders (order_id, edge_id, cart_id, customer_id, total_cents, placed_at) \
         VALUES ('o_retired', 'edge-a~gone', 'c_retired', 'c-2', 0, 1)",
        [],
    )
    .expect("tamper");
    db.execute(
        "INSERT INTO order_lines (order_id, sale_id, sku, quantity, unit_price_cents) \
         VALUES ('o_retired', 'test-sale', 'BAG-1', 5, 0)",
        [],
    )
    .expect("tamper");
    fails_naming(
        &fleet,
        &edge,
        "customer c-2 bought and holds 6 of test-sale/BAG-1 by central's own orders",
    )
    .await;
}
