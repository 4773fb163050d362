//! Central restored from a backup mid-sale: the edges notice that central has lost events it had
//! applied, grant again and deliver again what it lost, central grants nothing new until they
//! have, and the audit passes with every hold and order present; an edge that no longer keeps
//! them stops and says what is missing.

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
    // Restored while the edges still top up after the shopping: units granted since the
    // backup look unallocated to the restored central, and must not be granted again before
    // their edges have sent their grants again.
    pg.restore("restored", &dump).await.expect("pg_restore");
    let lost = orders.difference(&central_orders(&fleet).await).count();
    assert_eq!(lost, 2 * 30, "the backup was taken before the second round");
    (pg, fleet, edges, orders)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_central_restored_from_a_backup_gets_every_lost_hold_and_order_again() {
    let (_pg, fleet, edges, orders) = restored_mid_sale(Duration::from_secs(3600)).await;
    // Until an edge notices (at its next renewal), central lacks what it lost and the audit
    // rightly says so: the audit runs once both have given it back.
    for edge in &edges {
        crate::support::eventually(
            "each edge to notice the restore",
            Duration::from_secs(30),
            || async {
                let restores = edge.client.metric("cart_central_restores_total").await;
                restores.is_some_and(|n| n >= 1.0)
            },
        )
        .await;
    }
    audit_passes(&fleet, edges.iter().map(|e| e.client.url.clone())).await;
    assert_eq!(central_orders(&fleet).await, orders);
    // And central grants again once both have sent theirs: with the shopping over, the edges
    // give back what they are not selling, and shoppers who want more than the edge kept need
    // new grants.
    let central = fleet.central().await;
    crate::support::eventually(
        "edge-1 to give back what it is not selling",
        Duration::from_secs(30),
        || async {
            let snapshot = central.snapshot().await.expect("snapshot");
            let ledger = crate::support::ledger(&snapshot, "BAG-1");
            let units = |of: &std::collections::BTreeMap<String, i64>| {
                of.get("edge-1").copied().unwrap_or(0)
            };
            units(&ledger.allotted) - units(&ledger.held) - units(&ledger.sold) < 60
        },
    )
    .await;
    let granted = || async {
        let mut units = 0.0;
        for edge in &edges {
            let metric = edge.client.metric("cart_stock_granted_units_total").await;
            units += metric.unwrap_or(0.0);
        }
        units
    };
    let before = granted().await;
    let mut orders = orders;
    orders.extend(shop(&[&edges[0]], "later", 30).await);
    assert!(granted().await > before, "no grant after the restore");
    audit_passes(&fleet, edges.iter().map(|e| e.client.url.clone())).await;
    assert_eq!(central_orders(&fleet).await, orders);
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

/// `cart-host backup` of an edge's database while shoppers hold and buy on it.
async fn backup(args: &[&std::ffi::OsStr]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .arg("backup")
        .args(args)
        .env_remove("CART_DATA")
        .output()
        .await
        .expect("cart-host backup")
}

/// Carts made while the backup is taken: more than it takes, even on a loaded machine.
const SHOPPERS: i64 = 1500;

/// A copy taken while an edge sells is one moment of its books: every counter agrees with the
/// carts and orders in the copy. An existing file is never overwritten, and a PostgreSQL
/// central is sent to its own tools, its password unprinted.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_backed_up_while_it_sells_is_copied_as_of_one_moment() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 5000, 3)], -60)).await;
    let edge = fleet.edge("edge-1").await;
    let client = edge.client.clone();
    let created = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let carts = std::sync::Arc::clone(&created);
    let shoppers = tokio::spawn(async move {
        for i in 0..SHOPPERS {
            let customer = format!("shopper-{i}");
            let cart = client.create_cart(&customer).await;
            carts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(client.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
            if i % 2 == 0 {
                client.checkout(&cart, &customer).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to = fleet.dir.path().join("edge-1.backup.db");
    let data = edge.edge().config.data_dir.clone();
    let back_up_edge = || async {
        backup(&[
            "--data".as_ref(),
            data.as_ref(),
            "--to".as_ref(),
            to.as_ref(),
        ])
        .await
    };
    let before = created.load(std::sync::atomic::Ordering::SeqCst);
    let out = back_up_edge().await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("checked whole"), "{said}");
    assert!(
        !shoppers.is_finished(),
        "the copy was taken while shoppers shopped"
    );
    shoppers.await.expect("shoppers");

    let copy = rusqlite::Connection::open(&to).expect("the copy opens");
    let count = |sql: &str| -> i64 { copy.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let (held, sold) = (
        count("SELECT held FROM stock WHERE sku = 'BAG-1'"),
        count("SELECT sold FROM stock WHERE sku = 'BAG-1'"),
    );
    let held_in_carts = count(
        "SELECT COALESCE(SUM(l.quantity), 0) FROM cart_lines l JOIN carts c USING (cart_id) \
         WHERE l.held = 1 AND c.status = 'open'",
    );
    let sold_in_orders = count(
        "SELECT COALESCE(SUM(l.quantity), 0) FROM cart_lines l JOIN orders o USING (cart_id)",
    );
    assert!(
        sold > 0 && held > 0,
        "the copy has shopping in it: {held} held, {sold} sold"
    );
    assert_eq!((held, sold), (held_in_carts, sold_in_orders));
    // Of a moment after the backup began (what the log holds included) and before the
    // shopping ended.
    let in_copy = count("SELECT COUNT(*) FROM carts");
    assert!(
        (before..SHOPPERS).contains(&in_copy),
        "{in_copy} carts in the copy; {before} were made before it began"
    );

    // Never over an existing file.
    let before = std::fs::read(&to).expect("the copy");
    let out = back_up_edge().await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    assert_eq!(std::fs::read(&to).expect("the copy"), before);

    let pg = "postgres://cart:s3cret@127.0.0.1:1/central";
    let elsewhere = fleet.dir.path().join("central.backup");
    let out = backup(&[
        "--central".as_ref(),
        pg.as_ref(),
        "--to".as_ref(),
        elsewhere.as_ref(),
    ])
    .await;
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        told.contains("pg_dump") && !told.contains("s3cret"),
        "{told}"
    );
    assert!(!elsewhere.exists());
}

/// A SQLite central copied with `cart-host backup` mid-sale, and put back in place of its file
/// with the edges stopped, as the README says: the edges, started again on their folders, give
/// it back what it lost, and the audit passes with every order.
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_central_restored_from_its_backup_gets_every_lost_order_again() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 400, 3)], -60)).await;
    let configs: Vec<_> = ["edge-1", "edge-2"]
        .into_iter()
        .map(|id| {
            let mut config = fleet.config(id);
            config.outbox_keep = Duration::from_secs(3600);
            config
        })
        .collect();
    let mut edges = Vec::new();
    for config in &configs {
        edges.push(fleet.edge_with(config.clone()).await);
    }
    let urls = |edges: &[TestEdge]| {
        edges
            .iter()
            .map(|e| e.client.url.clone())
            .collect::<Vec<_>>()
    };
    let mut orders = shop(&[&edges[0], &edges[1]], "before", 5).await;
    audit_passes(&fleet, urls(&edges)).await;
    let file = fleet.dir.path().join("central.db");
    let copy = fleet.dir.path().join("central.backup.db");
    let out = backup(&[
        "--central".as_ref(),
        format!("sqlite:{}", file.display()).as_ref(),
        "--to".as_ref(),
        copy.as_ref(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    orders.extend(shop(&[&edges[0], &edges[1]], "after", 30).await);
    audit_passes(&fleet, urls(&edges)).await;
    for edge in edges {
        edge.stop().await;
    }
    for stale in ["central.db-wal", "central.db-shm"] {
        let _ = std::fs::remove_file(fleet.dir.path().join(stale));
    }
    // Under a new inode, as `mv` puts a file in place: a connection the stopped edges' tasks
    // may still hold closes on the old file, not over the copy.
    let staged = fleet.dir.path().join("central.restoring.db");
    std::fs::copy(&copy, &staged).expect("the copy");
    std::fs::rename(&staged, &file).expect("the copy back in place");
    let lost = orders.difference(&central_orders(&fleet).await).count();
    assert_eq!(lost, 2 * 30, "the backup was taken before the second round");

    let mut edges = Vec::new();
    for config in configs {
        edges.push(fleet.edge_with(config).await);
    }
    audit_passes(&fleet, urls(&edges)).await;
    assert_eq!(central_orders(&fleet).await, orders);
    for edge in &edges {
        let restores = edge.client.metric("cart_central_restores_total").await;
        assert!(restores.is_some_and(|n| n >= 1.0), "{restores:?}");
    }
}
