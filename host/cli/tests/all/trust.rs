//! Everything that comes in is untrusted: anonymous and out-of-limit requests, modules, second
//! processes under one edge id, slow clients, operators' redeploys. Each test is named after
//! what broke when the fleet was tried as an attacker, a careless operator and a broken module
//! would try it.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    ADMIN_TOKEN, CartRef, EdgeProcess, Fleet, audit_passes, eventually, ledger, sale,
};

async fn allotted(fleet: &Fleet, sku: &str, edge: &str) -> i64 {
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    ledger(&snapshot, sku)
        .allotted
        .get(edge)
        .copied()
        .unwrap_or(0)
}

/// Demand that pulls stock between edges comes only from authentic updates the rules would
/// take but for stock, and at most what that customer may still hold.
#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_or_out_of_limit_request_moves_no_stock() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 1000, 2)], -60)).await;
    let a = fleet.edge("edge-a").await;
    let b = fleet.edge("edge-b").await;
    for edge in [&a, &b] {
        eventually("the first grants", Duration::from_secs(10), || async {
            edge.available("BAG-1").await > 0
        })
        .await;
    }
    let before = allotted(&fleet, "BAG-1", "edge-a").await;
    let shopper = a.create_cart("greedy").await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        // No such cart, a wrong token, and the largest quantity there is.
        let stranger = CartRef {
            id: cart_host_free_id(),
            token: "not-a-token".into(),
        };
        assert_eq!(
            a.set(&stranger, "BAG-1", 10_000).await.0,
            StatusCode::NOT_FOUND
        );
        let wrong = CartRef {
            token: "wrong".into(),
            ..shopper.clone()
        };
        assert_eq!(
            a.set(&wrong, "BAG-1", 10_000).await.0,
            StatusCode::UNAUTHORIZED
        );
        // A real cart asking for more than its customer may hold.
        assert_eq!(
            a.set(&shopper, "BAG-1", 10_000).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        allotted(&fleet, "BAG-1", "edge-a").await,
        before,
        "refused requests moved units to edge-a"
    );
    // Shoppers at the other edge are served as before.
    let fair = b.create_cart("fair").await;
    assert_eq!(b.set(&fair, "BAG-1", 2).await.0, StatusCode::OK);
}

/// A cart id no edge made.
fn cart_host_free_id() -> String {
    format!("c_{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos())
}

/// A module could once run SQL on the edge's own connection, past its deadline: a recursive
/// query froze the writer for good. The 0.2 world offers no SQL at all: a component asking for
/// it is refused at deploy, and the writer serves on.
#[tokio::test(flavor = "multi_thread")]
async fn a_module_cannot_reach_sql_so_cannot_freeze_the_writer() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let wants_sql = wat::parse_str(
        r#"(component
             (import "flashsale:cart/store@0.1.0" (instance
               (export "execute" (func (param "sql" string) (result u64))))))"#,
    )
    .expect("WAT");
    let r = edge
        .send(
            Method::PUT,
            "/admin/modules",
            Some(ADMIN_TOKEN),
            &[],
            wants_sql,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = r.json().expect("JSON")["error"]["message"].to_string();
    assert!(message.contains("flashsale:cart/store@0.1.0"), "{message}");
    assert!(edge.healthy().await);
    eventually("the first grant", Duration::from_secs(10), || async {
        edge.available("BAG-1").await > 0
    })
    .await;
    let cart = edge.create_cart("c").await;
    assert_eq!(edge.set(&cart, "BAG-1", 1).await.0, StatusCode::OK);
}

/// `/healthz` said 200 while the writer was stuck; a load balancer kept sending shoppers.
#[tokio::test(flavor = "multi_thread")]
async fn healthz_fails_while_the_writer_is_stuck() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.writer.stuck_after = Duration::from_millis(300);
    let edge = fleet.edge_with(config).await;
    assert!(edge.healthy().await);
    let stuck = edge.edge().writer.host(|_| {
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    });
    let stuck = tokio::spawn(stuck);
    eventually("healthz to fail", Duration::from_secs(2), || async {
        !edge.healthy().await
    })
    .await;
    stuck.await.expect("job").expect("the job ends");
    assert!(edge.healthy().await, "healthy again once the writer moves");
}

/// An edge restarted under the same id on an empty folder made holds central never recorded:
/// its delivered mark jumped to central's. Now a second live process is refused, and a fresh
/// folder under a known id does not start until an operator takes over.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_or_a_fresh_folder_under_one_edge_id_is_refused() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let first = EdgeProcess::start_with(&fleet, "edge-1", "folder-a", &["--lease-secs", "2"]).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        first.client.available("BAG-1").await > 0
    })
    .await;
    let cart = first.client.create_cart("c-1").await;
    assert_eq!(first.client.set(&cart, "BAG-1", 3).await.0, StatusCode::OK);
    eventually("the hold at central", Duration::from_secs(10), || async {
        first.client.status().await["outbox_backlog"] == 0
    })
    .await;

    // The same folder: refused by the folder's lock.
    let (status, said) = EdgeProcess::refused(&fleet, "edge-1", "folder-a", &[]).await;
    assert!(!status.success());
    assert!(
        said.contains("another cart-host process is serving the data folder"),
        "{said}"
    );
    // Another folder while the first lives: refused by its lease.
    let (status, said) = EdgeProcess::refused(&fleet, "edge-1", "folder-b", &[]).await;
    assert!(!status.success());
    assert!(said.contains("being served by another process"), "{said}");

    // The first dies; once its lease has lapsed, a fresh folder is still no substitute.
    first.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, said) = EdgeProcess::refused(&fleet, "edge-1", "folder-b", &[]).await;
    assert!(!status.success());
    assert!(said.contains("--take-over"), "{said}");
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    assert_eq!(ledger(&snapshot, "BAG-1").held.get("edge-1"), Some(&3));

    // Its own folder resumes where it stopped, holds and all.
    let again = EdgeProcess::start_with(&fleet, "edge-1", "folder-a", &["--lease-secs", "2"]).await;
    let (status, body) = again.client.get_cart(&cart).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"][0]["quantity"], 3);
    audit_passes(&fleet, [again.client.url.clone()]).await;
    again.kill().await;

    // An operator who means it takes over on a fresh folder: the old history is written off.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let taken = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "folder-b",
        &["--lease-secs", "2", "--take-over"],
    )
    .await;
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    let bag = ledger(&snapshot, "BAG-1");
    assert_eq!(
        bag.held.get("edge-1"),
        None,
        "the lost cart's hold is released"
    );
    assert!(
        snapshot.edges.values().any(|e| e.retired),
        "the old history is kept under a retired id"
    );
    audit_passes(&fleet, [taken.client.url.clone()]).await;
    taken.kill().await;
}

/// With central unreachable, an edge with its own history sells from its units; a fresh
/// folder, which central has never heard of, sells nothing until central answers.
#[tokio::test(flavor = "multi_thread")]
async fn with_central_down_only_an_edge_with_its_own_history_sells() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("identity").await.expect("database");
    let fleet = Fleet::on(url, &sale(&[("BAG-1", 100, 5)], -60)).await;
    let old = EdgeProcess::start(&fleet, "edge-1").await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        old.client.available("BAG-1").await > 0
    })
    .await;
    old.kill().await;
    pg.halt().expect("PostgreSQL stops");

    let old = EdgeProcess::start(&fleet, "edge-1").await;
    let cart = old.client.create_cart("c-1").await;
    assert_eq!(old.client.set(&cart, "BAG-1", 1).await.0, StatusCode::OK);

    let new = EdgeProcess::start(&fleet, "edge-2").await;
    let r = new
        .client
        .send(
            Method::POST,
            "/v1/carts",
            None,
            &[],
            r#"{"customer_id": "c-2"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));

    pg.resume().expect("PostgreSQL starts again");
    eventually(
        "edge-2 to reach central",
        Duration::from_secs(30),
        || async {
            new.client
                .send(
                    Method::POST,
                    "/v1/carts",
                    None,
                    &[],
                    r#"{"customer_id": "c-2"}"#,
                )
                .await
                .status
                == StatusCode::CREATED
        },
    )
    .await;
    audit_passes(&fleet, [old.client.url.clone(), new.client.url.clone()]).await;
}

/// A SKU with no stock asked central for 0 units, failed a CHECK, and the error ended every
/// balancing pass, so SKUs after it never got units.
#[tokio::test(flavor = "multi_thread")]
async fn a_sku_without_stock_does_not_starve_the_others() {
    let fleet = Fleet::new(&sale(&[("A-NONE", 0, 1), ("B-BAG", 100, 1)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    eventually("units of B-BAG", Duration::from_secs(10), || async {
        edge.available("B-BAG").await > 0
    })
    .await;
    assert_eq!(edge.available("A-NONE").await, 0);
}

/// A client holding half a request head kept its connection, and on SIGTERM the whole
/// process, for as long as it liked.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.http.header_timeout = Duration::from_millis(300);
    config.http.body_timeout = Duration::from_millis(300);
    let edge = fleet.edge_with(config).await;
    let addr = edge.url.trim_start_matches("http://").to_owned();

    // Half a request head, then nothing: the edge hangs up.
    let mut half = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    half.write_all(b"GET /v1/skus HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    assert_closed_within(&mut half, Duration::from_secs(3)).await;

    // A keep-alive connection left idle after its answer: the edge hangs up.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 512];
    let n = idle.read(&mut answer).await.expect("read");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    assert_closed_within(&mut idle, Duration::from_secs(3)).await;

    // A body that never arrives whole: 408.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(
        b"POST /v1/carts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"customer_id\"",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

async fn assert_closed_within(stream: &mut tokio::net::TcpStream, within: Duration) {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {within:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_process_despite_a_half_sent_request() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let mut edge = EdgeProcess::start(&fleet, "edge-1").await;
    let addr = edge.client.url.trim_start_matches("http://").to_owned();
    let mut half = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    half.write_all(b"PUT /v1/carts/c_x/items/BAG-1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &edge.pid().to_string()])
        .status()
        .await
        .expect("kill -TERM");
    assert!(term.success());
    let exited = tokio::time::timeout(Duration::from_secs(15), edge.child.wait())
        .await
        .expect("the process exits within the header timeout and the shutdown grace")
        .expect("reaped");
    assert!(exited.success(), "{exited}");
}

/// The same bytes under a new version answered `503 unavailable` (a UNIQUE constraint).
#[tokio::test(flavor = "multi_thread")]
async fn redeploying_the_same_bytes_names_the_version_that_holds_them() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let bytes = crate::deploy::variant(
        &std::fs::read(crate::support::guest_wasm()).expect("module"),
        "twice",
    );
    let put = |version: &'static str, bytes: Vec<u8>| {
        let edge = &edge;
        async move {
            let r = edge
                .send(
                    Method::PUT,
                    "/admin/modules",
                    Some(ADMIN_TOKEN),
                    &[("x-module-version", version)],
                    bytes,
                )
                .await;
            (r.status, r.json().expect("JSON"))
        }
    };
    assert_eq!(put("v1", bytes.clone()).await.0, StatusCode::CREATED);
    let (status, body) = put("v1", bytes.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same bytes, the same version: {body}"
    );
    let (status, body) = put("v2", bytes.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].to_string().contains("version v1"),
        "{body}"
    );
    let other = crate::deploy::variant(&bytes, "other");
    let (status, body) = put("v1", other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].to_string().contains("v1"),
        "{body}"
    );
}

/// Activation and start-up loaded stored modules without checking signatures, so a module
/// stored before `--trusted-key` was set could still run.
#[tokio::test(flavor = "multi_thread")]
async fn a_module_stored_before_trusted_keys_can_no_longer_run() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let unsigned = crate::deploy::variant(
        &std::fs::read(crate::support::guest_wasm()).expect("module"),
        "unsigned",
    );
    let r = edge
        .send(
            Method::PUT,
            "/admin/modules",
            Some(ADMIN_TOKEN),
            &[("x-module-version", "unsigned-1")],
            unsigned,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let started_on = crate::deploy::modules(&edge).await["modules"][0]["version"].clone();
    edge.stop().await;

    // Restarted with a trusted key: the unsigned module does not run.
    let (_, public) = crate::deploy::key_pair(9);
    let mut config = fleet.config("edge-a");
    config.trusted_keys = vec![cart_edge::modules::read_public_key(&public).expect("key")];
    let edge = fleet.edge_with(config).await;
    let listed = crate::deploy::modules(&edge).await;
    assert_ne!(listed["active"], "unsigned-1", "{listed}");
    assert_eq!(listed["active"], started_on, "{listed}");
    let r = edge
        .send(
            Method::POST,
            "/admin/modules/unsigned-1/activate",
            Some(ADMIN_TOKEN),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_ne!(crate::deploy::modules(&edge).await["active"], "unsigned-1");
}

/// Prices had no upper bound and totals wrapped. Prices are bounded now, and the largest
/// cart's total is exact.
#[tokio::test(flavor = "multi_thread")]
async fn the_highest_price_times_the_largest_quantity_totals_exactly() {
    let mut s = sale(&[("GOLD", 10_000, 10_000)], -60);
    s.skus[0].price_cents = cart_rules::MAX_PRICE_CENTS;
    let fleet = Fleet::new(&s).await;
    let edge = fleet.edge("edge-a").await;
    eventually("units of GOLD", Duration::from_secs(10), || async {
        edge.available("GOLD").await >= 1000
    })
    .await;
    let cart = edge.create_cart("rich").await;
    let (status, body) = edge.set(&cart, "GOLD", 1000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["total_cents"],
        json!(1000 * cart_rules::MAX_PRICE_CENTS)
    );
    // And a sale file asking for more is refused, naming the field.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sale.json");
    std::fs::write(
        &file,
        json!({"sale_id": "x", "starts_at": "2026-11-27T12:00:00Z", "hold_ttl_seconds": 60,
               "skus": [{"sku": "A", "name": "A", "price_cents": i64::MAX, "stock": 1,
                         "limit_per_customer": 1}]})
        .to_string(),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["sale", "load", "--central", &fleet.central_url])
        .arg(&file)
        .output()
        .expect("cart-host runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skus[0].price_cents"));
}

/// An operator token of a character or two is no lock: the edge does not start on one.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_token_too_short_to_guard_anything_is_refused() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let file = fleet.dir.path().join("short-token");
    std::fs::write(&file, "x").expect("token file");
    let (status, said) = EdgeProcess::refused(
        &fleet,
        "edge-1",
        "edge-1",
        &["--admin-token-file", &file.display().to_string()],
    )
    .await;
    assert!(!status.success());
    assert!(said.contains("at least 16"), "{said}");
}

/// In a fleet, requests for carts no edge keeps, with tokens that cannot be theirs, are refused
/// at the door: thousands of them cost central next to nothing (before, each cost a central
/// transaction or more).
#[tokio::test(flavor = "multi_thread")]
async fn made_up_carts_are_refused_before_any_peer_or_central_is_asked() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("made_up").await.expect("database");
    let fleet = Fleet::on(url.clone(), &sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = crate::one_fleet::start(&fleet, "edge-1", &[]).await;
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL");
    tokio::spawn(conn);
    let commits = || async {
        admin
            .query_one(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("stats")
            .get::<_, i64>(0)
    };
    let before = commits().await;
    for i in 0..1000u32 {
        let cart = format!("c_{i:08x}{}", "0".repeat(24));
        let r = edge
            .client
            .send(
                Method::GET,
                &format!("/v1/carts/{cart}"),
                Some(&"f".repeat(64)),
                &[],
                "",
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // The edge's own loops keep talking to central meanwhile; a thousand lookups would show.
    let spent = commits().await - before;
    assert!(
        spent < 300,
        "{spent} central transactions for 1000 made-up carts"
    );
}
