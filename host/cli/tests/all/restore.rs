//! Central restored from a backup mid-sale: the edges notice that central has lost events it had
//! applied, grant again and deliver again what it lost, and the audit passes with every hold and
//! order present; an edge that no longer keeps them stops and says what is missing.

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::StatusCode;

use crate::support::{Fleet, TestEdge, audit_passes, audit_report, sale};

/// `n` customers of each edge buy one unit and check out, and `n` more hold one; the orders'
/// ids.
async fn shop(edges: &[&TestEdge], prefix: &str, n: usize) -> BTreeSet<String> {
    let mut orders = BTreeSet::new();
    for (e, edge) in edges.iter().enumerate() {
        for i in 0..n {
            for buys in [true, false] {
                let customer = format!("{prefix}-{e}-{i}-{buys}");
                let cart = edge.client.create_cart(&customer).await;
                let (status, body) = edge.client.set(&cart, "BAG-1", 1).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                if buys {
                    let (status, body) = edge.client.checkout(&cart, &customer).await;
                    assert_eq!(status, StatusCode::CREATED, "{body}");
                    orders.insert(body["order_id"].as_str().expect("order id").to_owned());
                }
            }
        }
    }
    orders
}

/// The ids of the orders central has, from every edge.
async fn central_orders(fleet: &Fleet) -> BTreeSet<String> {
    let central = fleet.central().await;
    let mut ids = BTreeSet::new();
    for edge in ["edge-1", "edge-2"] {
        for order in central.orders_of(edge).await.expect("orders") {
            ids.insert(order.order_id);
        }
    }
    ids
}

/// A fleet of two edges on PostgreSQL that keep delivered events for `keep`, and its central
/// restored from a `pg_dump` taken before the second half of its orders; those orders' ids.
async fn restored_mid_sale(
    keep: Duration,
) -> (
    cart_testkit::Postgres,
    Fleet,
    [TestEdge; 2],
    BTreeSet<String>,
) {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("restored").await.expect("database");
    // Edges start with a tenth of the stock each: the shopping after the backup needs grants.
    let fleet = Fleet::on(url, &sale(&[("BAG-1", 400, 3)], -60)).await;
    let mut edges = Vec::new();
    for id in ["edge-1", "edge-2"] {
        let mut config = fleet.config(id);
        config.outbox_keep = keep;
        edges.push(fleet.edge_with(config).await);
    }
    let edges: [TestEdge; 2] = edges.try_into().unwrap_or_else(|_| unreachable!());
    let urls = || edges.iter().map(|e| e.client.url.clone());
    let mut orders = shop(&[&edges[0], &edges[1]], "before", 5).await;
    audit_passes(&fleet, urls()).await;
    let dump = fleet.dir.path().join("central.dump");
    pg.dump("restored", &dump).expect("pg_dump");

    orders.extend(shop(&[&edges[0], &edges[1]], "after", 30).await);
    audit_passes(&fleet, urls()).await;
    assert_eq!(central_orders(&fleet).await, orders);
    pg.restore("restored", &dump).await.expect("pg_restore");
    let lost = orders.difference(&central_orders(&fleet).await).count();
    assert_eq!(lost, 2 * 30, "the backup was taken before the second round");
    (pg, fleet, edges, orders)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_central_restored_from_a_backup_gets_every_lost_hold_and_order_again() {
    let (_pg, fleet, edges, orders) = restored_mid_sale(Duration::from_secs(3600)).await;
    audit_passes(&fleet, edges.iter().map(|e| e.client.url.clone())).await;
    assert_eq!(central_orders(&fleet).await, orders);
    for edge in &edges {
        let restores = edge.client.metric("cart_central_restores_total").await;
        assert!(restores.is_some_and(|n| n >= 1.0), "{restores:?}");
    }
}

/// The same restore against edges that delete what they delivered: the events are gone, so each
/// edge stops delivering and says why, and the audit fails rather than pass with orders
/// missing.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_that_kept_nothing_stops_and_says_what_central_lost() {
    let (_pg, fleet, edges, _) = restored_mid_sale(Duration::ZERO).await;
    let status = &edges[0].client;
    crate::support::eventually(
        "edge-1 to say central lost events",
        Duration::from_secs(30),
        || async {
            status.status().await["last_sync_error"]
                .as_str()
                .is_some_and(|e| e.contains("no longer keeps"))
        },
    )
    .await;
    let urls = edges.iter().map(|e| e.client.url.clone());
    let report = audit_report(&fleet, urls, Duration::from_secs(5)).await;
    assert!(!report.passed(), "{report}");
}
