//! `kill -9` of an edge process under load, then a restart on the same data.

use std::time::Duration;

use hyper::StatusCode;

use crate::support::{CartRef, EdgeProcess, Fleet, audit_passes, sale};

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_edge_keeps_every_acknowledged_update_and_delivers_once() {
    // A limit and stock no shopper reaches before the kill: at 1.5 ms an update, one raises
    // its line a thousand times in those 1.5 s.
    let fleet = Fleet::new(&sale(&[("BAG-1", 200_000, 10_000)], -60)).await;
    let edge = EdgeProcess::start(&fleet, "edge-a").await;

    // Shoppers raise their line one unit at a time and note every acknowledged quantity.
    let mut shoppers = Vec::new();
    for i in 0..16 {
        let cart = edge.client.create_cart(&format!("shopper-{i}")).await;
        shoppers.push(raise(edge.client.clone(), cart, 0));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    edge.kill().await;
    let carts = until_killed(shoppers).await;
    let acknowledged: i64 = carts.iter().map(|(_, n)| n).sum();
    assert!(acknowledged > 0, "the load did some work before the kill");

    let edge = EdgeProcess::start(&fleet, "edge-a").await;
    let carts = answered_updates_kept(&edge, carts, "after the kill").await;
    let held_in_carts: i64 = carts.iter().map(|(_, n)| n).sum();
    // No half-applied update: the stock held is exactly what the carts hold.
    let status = edge.client.status().await;
    assert_eq!(
        status["skus"]["BAG-1"]["held"].as_i64(),
        Some(held_in_carts)
    );

    audit_passes(&fleet, [edge.client.url.clone()]).await;
    edge.kill().await;
}

/// Power cuts under load: unlike a `kill -9`, a cut loses every write the disk was not told to
/// keep (the edge runs on the power-loss VFS, `cart_edge::store::power`). Cut at random points,
/// many times; after each, the database must be whole, its outbox without a gap and no shorter
/// than central's copy of it, and every answered update there.
#[tokio::test(flavor = "multi_thread")]
async fn power_cuts_under_load_lose_no_answered_update() {
    const CUTS: usize = 8;
    let (fleet, disk) = PowerLoss::fleet().await;
    let env = disk.env();
    let (data, images) = (&disk.data, &disk.images);
    let central = fleet.central().await;
    let mut carts: Vec<(CartRef, i64)> = Vec::new();
    for cut in 0..CUTS {
        let edge = EdgeProcess::start_env(&fleet, "edge-a", "edge-a", &[], &env).await;
        if carts.is_empty() {
            for i in 0..16 {
                carts.push((edge.client.create_cart(&format!("shopper-{i}")).await, 0));
            }
        } else {
            carts = answered_updates_kept(&edge, carts, &format!("after cut {cut}")).await;
        }
        let shoppers: Vec<_> = carts
            .iter()
            .map(|(cart, acknowledged)| raise(edge.client.clone(), cart.clone(), *acknowledged))
            .collect();
        let load_ms = rand::random_range(200..1200);
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        edge.kill().await;
        carts = until_killed(shoppers).await;
        cut_power(data, images);
        let (kept, whole) = outbox_after_the_cut(data);
        assert!(
            whole,
            "after cut {cut} ({load_ms} ms of load): integrity_check failed"
        );
        let applied = central.applied_up_to("edge-a").await.expect("central");
        assert!(
            kept.contiguous() && kept.newest >= applied,
            "after cut {cut} ({load_ms} ms of load): the edge kept outbox {kept:?} and central \
             applied up to {applied}"
        );
    }
    assert!(
        carts.iter().map(|(_, n)| n).sum::<i64>() > 0,
        "the load did some work"
    );

    // Back on an ordinary disk: everything kept, nothing half-applied, the books agree.
    let edge = EdgeProcess::start(&fleet, "edge-a").await;
    let carts = answered_updates_kept(&edge, carts, "at the end").await;
    let held: i64 = carts.iter().map(|(_, n)| n).sum();
    let status = edge.client.status().await;
    assert_eq!(status["skus"]["BAG-1"]["held"].as_i64(), Some(held));
    audit_passes(&fleet, [edge.client.url.clone()]).await;
    edge.kill().await;
}

/// A sync that fails is final: the kernel may have dropped the writes it could not make, so
/// the edge stops its writer rather than sync again, and fails every update it has not
/// answered. After a power cut, every update it did answer is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sync_stops_the_writer_and_loses_no_answered_update() {
    let (fleet, disk) = PowerLoss::fleet().await;
    let env = disk.env();
    let (data, images) = (&disk.data, &disk.images);
    let edge = EdgeProcess::start_env(&fleet, "edge-a", "edge-a", &[], &env).await;
    let mut shoppers = Vec::new();
    for i in 0..16 {
        let cart = edge.client.create_cart(&format!("shopper-{i}")).await;
        shoppers.push(raise(edge.client.clone(), cart, 0));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(images.join("fail-sync"), "").expect("the disk fails");
    let mut carts = Vec::new();
    for shopper in shoppers {
        let (cart, acknowledged, ended) = tokio::time::timeout(Duration::from_secs(30), shopper)
            .await
            .expect("every update fails once a sync has")
            .expect("shopper");
        let ended = ended.expect("the edge still answers");
        assert!(
            ended.is_server_error(),
            "cart {}: {ended} after the failed sync",
            cart.id
        );
        carts.push((cart, acknowledged));
    }
    assert!(
        !edge.client.healthy().await,
        "/healthz: the writer has stopped"
    );
    let (status, _) = edge.client.get_cart(&carts[0].0).await;
    assert!(
        status.is_server_error(),
        "a read after the failed sync: {status}"
    );

    edge.kill().await;
    cut_power(data, images);
    std::fs::remove_file(images.join("fail-sync")).expect("the disk is replaced");
    let edge = EdgeProcess::start(&fleet, "edge-a").await;
    let carts = answered_updates_kept(&edge, carts, "after the failed sync").await;
    assert!(
        carts.iter().map(|(_, n)| n).sum::<i64>() > 0,
        "the load did some work"
    );
    audit_passes(&fleet, [edge.client.url.clone()]).await;
    edge.kill().await;
}

/// The folders of an edge on the power-loss VFS: its data, and the images of what its disk has.
struct PowerLoss {
    data: std::path::PathBuf,
    images: std::path::PathBuf,
}

impl PowerLoss {
    /// A fleet with a sale no shopper's raises reach in these tests, and edge-a's folders.
    async fn fleet() -> (Fleet, Self) {
        let fleet = Fleet::new(&sale(&[("BAG-1", 200_000, 10_000)], -60)).await;
        let disk = Self {
            data: fleet.dir.path().join("edge-a"),
            images: fleet.dir.path().join("power"),
        };
        (fleet, disk)
    }

    /// The environment that starts an edge on the VFS.
    fn env(&self) -> [(&str, &str); 1] {
        [(
            "CART_TEST_POWER_LOSS",
            self.images.to_str().expect("a UTF-8 path"),
        )]
    }
}

/// A shopper raising one line a unit at a time until the edge dies under it (`None`) or
/// answers other than `200` or `409` (that answer); with the quantity last acknowledged.
fn raise(
    client: crate::support::Client,
    cart: CartRef,
    mut acknowledged: i64,
) -> tokio::task::JoinHandle<(CartRef, i64, Option<StatusCode>)> {
    tokio::spawn(async move {
        loop {
            let next = acknowledged + 1;
            let path = format!("/v1/carts/{}/items/BAG-1", cart.id);
            let body = format!(r#"{{"quantity": {next}}}"#);
            let sent = client
                .try_send(hyper::Method::PUT, &path, Some(&cart.token), &[], body)
                .await
                .ok()
                .map(|r| r.status);
            match sent {
                Some(StatusCode::OK) => acknowledged = next,
                Some(StatusCode::CONFLICT) => {}
                ended => return (cart, acknowledged, ended),
            }
        }
    })
}

/// Waits for the shoppers, who must all have seen the edge die under them.
async fn until_killed(
    shoppers: Vec<tokio::task::JoinHandle<(CartRef, i64, Option<StatusCode>)>>,
) -> Vec<(CartRef, i64)> {
    let mut carts = Vec::with_capacity(shoppers.len());
    for shopper in shoppers {
        let (cart, acknowledged, ended) = shopper.await.expect("shopper");
        assert_eq!(
            ended, None,
            "cart {}: answered {ended:?} before the kill",
            cart.id
        );
        carts.push((cart, acknowledged));
    }
    carts
}

/// Every cart holds its acknowledged quantity, or the one more that was in flight; returns the
/// carts with what they hold now.
async fn answered_updates_kept(
    edge: &EdgeProcess,
    carts: Vec<(CartRef, i64)>,
    when: &str,
) -> Vec<(CartRef, i64)> {
    let mut now = Vec::with_capacity(carts.len());
    for (cart, acknowledged) in carts {
        let (status, body) = edge.client.get_cart(&cart).await;
        assert_eq!(status, StatusCode::OK, "{when}: cart {}: {body}", cart.id);
        let quantity = body["lines"][0]["quantity"].as_i64().unwrap_or(0);
        assert!(
            quantity == acknowledged || quantity == acknowledged + 1,
            "{when}: cart {} holds {quantity}, acknowledged {acknowledged}",
            cart.id
        );
        now.push((cart, quantity));
    }
    now
}

/// The power cut, on a killed edge: each of its database's files becomes what was synced of
/// it, and a file never synced is gone. (The `-shm` index is memory, rebuilt from the WAL.)
fn cut_power(data: &std::path::Path, images: &std::path::Path) {
    for name in ["edge.db", "edge.db-wal", "edge.db-journal"] {
        let (file, image) = (data.join(name), images.join(name));
        if image.exists() {
            std::fs::copy(&image, &file).expect("the synced image");
        } else {
            let _ = std::fs::remove_file(&file);
        }
    }
    let _ = std::fs::remove_file(data.join("edge.db-shm"));
}

/// The outbox's sequence numbers an edge database holds.
#[derive(Debug)]
struct Outbox {
    events: i64,
    oldest: i64,
    newest: i64,
}

impl Outbox {
    fn contiguous(&self) -> bool {
        self.events == 0 || self.newest - self.oldest + 1 == self.events
    }
}

/// Opens the database as the edge would after the cut (recovering the WAL): its outbox, and
/// whether `PRAGMA integrity_check` passes.
fn outbox_after_the_cut(data: &std::path::Path) -> (Outbox, bool) {
    // Read-only: closing it neither checkpoints nor deletes the WAL, which would leave the
    // files out of step with the images the next cut puts back.
    let conn = rusqlite::Connection::open_with_flags(
        data.join("edge.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the edge database opens");
    let check: String = conn
        .pragma_query_value(None, "integrity_check", |r| r.get(0))
        .expect("integrity_check");
    let outbox = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM outbox",
            [],
            |r| {
                Ok(Outbox {
                    events: r.get(0)?,
                    oldest: r.get(1)?,
                    newest: r.get(2)?,
                })
            },
        )
        .expect("the outbox");
    (outbox, check == "ok")
}
