//! Upgrading a running fleet: central's schema migrated on its own (`cart-host migrate`), edges
//! that never change it (`--schema check`) restarted in place one at a time under load, against
//! a newer schema they are compatible with; a schema they are not is refused at start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cart_central::Release;
use hyper::{Method, StatusCode};

use crate::one_fleet::{readyz, signal, start};
use crate::support::{CartRef, Client, EdgeProcess, Fleet, audit_passes, sale};

/// `cart-host migrate` against `central`: its exit status and what it printed.
fn migrate(central: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["migrate", "--central", central])
        .output()
        .expect("cart-host runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// What the next release's `cart-host migrate` would do to central, by hand: one more
/// migration, additive (a table and a nullable column), and its release stamped, still letting
/// this release's processes run against it.
async fn next_release_migrates(central: &str, next: Release, edges_from: Release) {
    let (client, conn) = tokio_postgres::connect(central, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE TABLE gift_notes (order_id TEXT PRIMARY KEY, note TEXT NOT NULL); \
             ALTER TABLE orders ADD COLUMN gift_wrapped BOOLEAN; \
             INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
               SELECT MAX(version) + 1, 'next_release', now()::text, '0' \
               FROM refinery_schema_history; \
             UPDATE schema_release SET release = '{next}', edges_from = '{edges_from}'"
        ))
        .await
        .expect("the next release's migration");
}

/// Waits for the process to exit with success.
async fn exits_0(process: &mut EdgeProcess) {
    let status = tokio::time::timeout(Duration::from_secs(10), process.child.wait())
        .await
        .expect("the edge exits within 10 s")
        .expect("reaped");
    assert!(status.success(), "the edge exited with {status}");
}

/// Shoppers through the fleet's edges (`front`, as it is now) in turn while `stop` is unset, as a
/// load balancer that skips an edge it cannot connect to: every answer's status, and whether a
/// `503` said when to retry.
async fn shop(front: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> Vec<(StatusCode, bool)> {
    let mut seen = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let edges: Vec<Client> = front
            .lock()
            .expect("front")
            .iter()
            .map(|u| Client::new(u))
            .collect();
        let body = serde_json::json!({ "customer_id": format!("rolling-{n}") }).to_string();
        for k in 0..edges.len() {
            let (edge, other) = (
                &edges[(n + k) % edges.len()],
                &edges[(n + k + 1) % edges.len()],
            );
            let Ok(r) = edge
                .try_send(Method::POST, "/v1/carts", None, &[], body.clone())
                .await
            else {
                continue; // not listening: the front tries the next edge
            };
            seen.push((r.status, r.headers.contains_key("retry-after")));
            if r.status == StatusCode::CREATED {
                // Through another edge than the cart's, to cross the forwarding hop too.
                let cart = CartRef::from_created(&r.json().expect("JSON"));
                let path = format!("/v1/carts/{}/items/BAG-1", cart.id);
                let set = r#"{"quantity":1}"#;
                if let Ok(r) = other
                    .try_send(Method::PUT, &path, Some(&cart.token), &[], set)
                    .await
                {
                    seen.push((r.status, r.headers.contains_key("retry-after")));
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

/// The order of steps README's "Upgrades" gives: central migrated first, by `cart-host migrate`;
/// then each edge restarted in place on the new release, one at a time, while shoppers keep
/// buying. Edges that only check the schema refuse an unmigrated central, run against a newer
/// compatible one, and refuse one marked incompatible, naming both releases.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_under_load_loses_nothing_and_refuses_an_incompatible_schema() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("upgrade").await.expect("database");
    let this = Release::this();
    let next = Release {
        major: this.major,
        minor: this.minor + 1,
    };
    let check = [
        "--schema",
        "check",
        "--on-sigterm",
        "stop",
        "--lease-secs",
        "30",
    ];

    // An edge that may not migrate refuses an empty central, and says what to run.
    let empty = Fleet::on_unmigrated(url.clone());
    let (status, said) = EdgeProcess::refused(&empty, "edge-1", "edge-1", &check).await;
    assert!(!status.success());
    assert!(
        said.contains("cart-host migrate") && said.contains(env!("CARGO_PKG_VERSION")),
        "{said}"
    );
    let (migrated, said) = migrate(&url);
    assert!(migrated, "{said}");
    assert!(said.contains("up to date"), "{said}");

    let fleet = Fleet::on(url.clone(), &sale(&[("BAG-1", 2_000, 3)], -60)).await;
    let mut edges = Vec::new();
    for id in ["edge-1", "edge-2", "edge-3"] {
        edges.push(start(&fleet, id, &check).await);
    }
    let front = Arc::new(Mutex::new(
        edges
            .iter()
            .map(|e| e.client.url.clone())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers = tokio::spawn(shop(Arc::clone(&front), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    next_release_migrates(&url, next, this).await;
    // This release's migrate, run again by mistake, leaves the newer schema as it is.
    let (migrated, said) = migrate(&url);
    assert!(migrated && said.contains("left as it is"), "{said}");
    for (i, id) in ["edge-1", "edge-2", "edge-3"].into_iter().enumerate() {
        signal(&edges[i], "-INT");
        exits_0(&mut edges[i]).await;
        edges[i] = start(&fleet, id, &check).await;
        front.lock().expect("front")[i] = edges[i].client.url.clone();
        let ready = Instant::now();
        while readyz(&edges[i].client).await != StatusCode::OK {
            assert!(ready.elapsed() < Duration::from_secs(10), "{id} not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = shoppers.await.expect("shoppers");

    let created = seen
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert!(created > 20, "only {created} carts made across the upgrade");
    for (status, retry_after) in &seen {
        let fine =
            status.is_success() || (*status == StatusCode::SERVICE_UNAVAILABLE && *retry_after);
        assert!(fine, "a shopper got {status} during the upgrade: {seen:?}");
    }
    // The newer schema was neither migrated down nor stamped older by edges of this release.
    let (release, edges_from) = fleet
        .central()
        .await
        .schema_release()
        .await
        .expect("release");
    assert_eq!((release, edges_from), (next.to_string(), this.to_string()));
    audit_passes(&fleet, edges.iter().map(|e| e.client.url.clone())).await;

    // The next release marks its schema incompatible with this one: a restart is refused,
    // naming both releases, and so is a process that may migrate (it never migrates down).
    set_edges_from(&url, next).await;
    signal(&edges[0], "-INT");
    exits_0(&mut edges[0]).await;
    for flags in [&check[..], &[]] {
        let (status, said) = EdgeProcess::refused(&fleet, "edge-1", "edge-1", flags).await;
        assert!(!status.success());
        assert!(
            said.contains(&format!("release {next}")) && said.contains(env!("CARGO_PKG_VERSION")),
            "{said}"
        );
    }
}

async fn set_edges_from(central: &str, release: Release) {
    let (client, conn) = tokio_postgres::connect(central, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL");
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE schema_release SET edges_from = $1",
            &[&release.to_string()],
        )
        .await
        .expect("marked");
}
