//! Edges joining and leaving mid-sale. A joining edge runs the fleet's module and sells at once.
//! A draining edge's carts, with their holds, orders and idempotency keys, move to the other
//! edges exactly once, through `POST /admin/drain` and `SIGTERM`, under load, and across
//! `kill -9` of either edge in the middle of a hand-off.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::one_fleet::{readyz, signal, start, start_env};
use crate::support::{ADMIN_TOKEN, CartRef, Client, EdgeProcess, Fleet, audit_passes, sale};

/// Asks an edge to drain.
pub async fn drain(client: &Client) {
    let (status, body) = client
        .call(Method::POST, "/admin/drain", Some(ADMIN_TOKEN), Value::Null)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// Waits for the process to exit; its exit status must be success.
pub async fn exits_0(process: &mut EdgeProcess, within: Duration) {
    let status = tokio::time::timeout(within, process.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the edge did not exit within {within:?}"))
        .expect("reaped");
    assert!(status.success(), "the drained edge exited with {status}");
}

/// A new cart of `customer`'s through `edge`, asked again while the answer is `503` (a home
/// being looked up again after a drain).
async fn created(edge: &Client, customer: &str) -> CartRef {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = edge
            .call(
                Method::POST,
                "/v1/carts",
                None,
                serde_json::json!({ "customer_id": customer }),
            )
            .await;
        if status == StatusCode::CREATED {
            return CartRef::from_created(&body);
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the edge's log says a hand-off paused at `step` (`CART_TEST_HANDOFF_PAUSE`).
async fn paused(fleet: &Fleet, edge_id: &str, step: &str) {
    let log = fleet.dir.path().join(format!("{edge_id}.log"));
    let said = format!("paused {step}");
    crate::support::eventually("the hand-off to pause", Duration::from_secs(20), || {
        let (log, said) = (log.clone(), said.clone());
        async move { std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&said)) }
    })
    .await;
}

/// What a shopper sees of a cart that must not change: lines, quantities and hold expiries.
fn lines(cart: &Value) -> Value {
    cart["lines"].clone()
}

/// `(cart, customer)` for `n` customers, each with one cart holding `quantity` of BAG-1, made
/// on `edge`.
async fn holding(edge: &Client, prefix: &str, n: usize, quantity: i64) -> Vec<CartRef> {
    let mut carts = Vec::new();
    for i in 0..n {
        let cart = edge.create_cart(&format!("{prefix}-{i}")).await;
        let (status, body) = edge.set(&cart, "BAG-1", quantity).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        carts.push(cart);
    }
    carts
}

/// An answer through the fleet, asked again while the cart is being handed off (`503` with
/// `Retry-After`, which is the only failure allowed).
async fn settled(edge: &Client, cart: &CartRef) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = edge.cart_response(cart).await;
        if r.status == StatusCode::OK {
            return r.json().expect("JSON");
        }
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.headers.contains_key("retry-after"));
        assert!(Instant::now() < deadline, "the cart stayed unavailable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three edges; shoppers hold units on the one that drains and keep updating their carts (and
/// checking out) through the others while it does. Every cart answers afterwards through the
/// remaining edges with the same lines, quantities and expiry (or the last update made), a
/// checkout replay answers the same order, nothing but `503` with `Retry-After` was seen, the
/// drained edge exits 0 and leaves the registry, and the audit passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_edge_hands_every_cart_to_the_others_under_load_and_exits_0() {
    // Stock to spare: the subject is the hand-off, not escrow's rebalancing.
    let fleet = Fleet::new(&sale(&[("BAG-1", 20_000, 4)], -60)).await;
    let mut one = start(&fleet, "edge-1", &[]).await;
    let two = start(&fleet, "edge-2", &[]).await;
    let three = start(&fleet, "edge-3", &[]).await;
    let others = [two.client.clone(), three.client.clone()];

    // Quiet carts (left alone), busy carts (updated during the drain), orders (replayed).
    let quiet = holding(&one.client, "quiet", 120, 2).await;
    let busy = holding(&one.client, "busy", 60, 1).await;
    let ordered = holding(&one.client, "buyer", 40, 1).await;
    let mut orders = Vec::new();
    for (i, cart) in ordered.iter().enumerate() {
        let key = format!("key-{i}");
        let (status, order) = one.client.checkout(cart, &key).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        orders.push((key, order["order_id"].clone()));
    }
    // A second cart of quiet-1's, made through edge-2: edge-2 now remembers edge-1 as its home.
    let second = two.client.create_cart("quiet-1").await;
    assert_eq!(
        second.id[2..10],
        quiet[1].id[2..10],
        "kept by the customer's home"
    );
    let mut before = Vec::new();
    for cart in &quiet {
        let (status, body) = one.client.get_cart(cart).await;
        assert_eq!(status, StatusCode::OK);
        before.push(lines(&body));
    }

    // The busy shoppers keep changing their quantity through the other edges.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut shoppers = tokio::task::JoinSet::new();
    for (i, cart) in busy.iter().cloned().enumerate() {
        let (edge, stop) = (others[i % 2].clone(), stop.clone());
        shoppers.spawn(async move {
            let (mut last, mut unavailable, mut q) = (1i64, 0u32, 1i64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                q = q % 3 + 1;
                let r = edge
                    .send(
                        Method::PUT,
                        &format!("/v1/carts/{}/items/BAG-1", cart.id),
                        Some(&cart.token),
                        &[],
                        format!(r#"{{"quantity":{q}}}"#),
                    )
                    .await;
                match r.status {
                    StatusCode::OK => last = q,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(r.headers.contains_key("retry-after"));
                        unavailable += 1;
                    }
                    other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (cart, last, unavailable)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    drain(&one.client).await;
    assert_eq!(readyz(&one.client).await, StatusCode::SERVICE_UNAVAILABLE);
    exits_0(&mut one, Duration::from_secs(30)).await;
    let took = asked.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut unavailable_total = 0;
    while let Some(done) = shoppers.join_next().await {
        let (cart, last, unavailable) = done.expect("shopper");
        unavailable_total += unavailable;
        let body = settled(&others[0], &cart).await;
        assert_eq!(body["lines"][0]["quantity"], last, "{body}");
    }
    println!("drain took {took:?}; {unavailable_total} update(s) answered 503 meanwhile");

    for (i, (cart, lines_before)) in quiet.iter().zip(&before).enumerate() {
        let body = settled(&others[i % 2], cart).await;
        assert_eq!(&lines(&body), lines_before, "cart {}", cart.id);
    }
    for (i, (cart, (key, order_id))) in ordered.iter().zip(&orders).enumerate() {
        let (status, order) = others[i % 2].checkout(cart, key).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a replay answers the order: {order}"
        );
        assert_eq!(&order["order_id"], order_id);
    }
    // Its customers' new carts are made elsewhere, and their limit still counts what they hold.
    let (status, body) = two
        .client
        .call(
            Method::POST,
            "/v1/carts",
            None,
            serde_json::json!({"customer_id": "quiet-0"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let again = CartRef::from_created(&body);
    let (status, body) = two.client.set(&again, "BAG-1", 3).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "2 held + 3 is over the limit of 4: {body}"
    );

    // quiet-1's home moved with their carts: edge-2 finds it, though it remembered edge-1.
    let third = created(&two.client, "quiet-1").await;
    let (status, body) = two.client.set(&third, "BAG-1", 3).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let registry = fleet.central().await.registry().await.expect("registry");
    assert!(
        registry.iter().all(|(id, _)| id != "edge-1"),
        "{registry:?}"
    );
    audit_passes(&fleet, [two.client.url.clone(), three.client.url.clone()]).await;
}

/// `kill -9` of the draining edge after the receiver took a batch and before central recorded
/// it: the receiver serves the carts, and the restarted edge finishes the hand-off.
#[tokio::test(flavor = "multi_thread")]
async fn a_draining_edge_killed_mid_handoff_finishes_it_when_restarted() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 500, 4)], -60)).await;
    let pause = [("CART_TEST_HANDOFF_PAUSE", "after_push:600000")];
    let one = start_env(&fleet, "edge-1", "edge-1", &[], &pause).await;
    let two = start(&fleet, "edge-2", &[]).await;
    let carts = holding(&one.client, "shopper", 20, 2).await;
    let (status, order) = one.client.checkout(&carts[0], "the-key").await;
    assert_eq!(status, StatusCode::CREATED, "{order}");

    drain(&one.client).await;
    paused(&fleet, "edge-1", "after_push").await;
    assert_eq!(one.client.status().await["state"], "draining");
    assert_eq!(readyz(&one.client).await, StatusCode::SERVICE_UNAVAILABLE);
    // The scaling signal, as a scaler reads it.
    let metrics = one
        .client
        .send(Method::GET, "/metrics", None, &[], "")
        .await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    for line in [
        "cart_draining 1",
        "cart_writer_busy_seconds_total ",
        "cart_writer_queue_jobs 0",
        "cart_recent_cart_updates_per_second ",
        "cart_recent_cart_update_p99_seconds ",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(line)),
            "{line}: {metrics}"
        );
    }
    let busy: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cart_writer_busy_seconds_total "))
        .and_then(|v| v.parse().ok())
        .expect("writer busy seconds");
    assert!(busy > 0.0, "{busy}");
    one.kill().await;

    // The receiver has the carts, and answers for them.
    for cart in &carts[1..] {
        let body = settled(&two.client, cart).await;
        assert_eq!(body["lines"][0]["quantity"], 2, "{body}");
    }
    let mut one = start(&fleet, "edge-1", &[]).await;
    for cart in &carts[1..] {
        let body = settled(&one.client, cart).await;
        assert_eq!(body["lines"][0]["quantity"], 2, "{body}");
    }
    let (status, replay) = one.client.checkout(&carts[0], "the-key").await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["order_id"], order["order_id"]);
    drain(&one.client).await;
    exits_0(&mut one, Duration::from_secs(30)).await;
    audit_passes(&fleet, [two.client.url.clone()]).await;
}

/// `kill -9` of the receiving edge while a batch is on its way: the draining edge cannot know
/// whether it was taken, keeps trying until its timeout, exits 0 with the hand-off left on its
/// disk, and finishes it once both run again. No cart is lost or doubled.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiving_edge_killed_mid_handoff_loses_and_doubles_nothing() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 500, 4)], -60)).await;
    let pause = [("CART_TEST_HANDOFF_PAUSE", "before_push:3000")];
    let mut one = start_env(
        &fleet,
        "edge-1",
        "edge-1",
        &["--drain-timeout", "6"],
        &pause,
    )
    .await;
    let two = start(&fleet, "edge-2", &[]).await;
    let carts = holding(&one.client, "shopper", 20, 2).await;

    drain(&one.client).await;
    paused(&fleet, "edge-1", "before_push").await;
    two.kill().await;
    exits_0(&mut one, Duration::from_secs(20)).await;
    let log = std::fs::read_to_string(fleet.dir.path().join("edge-1.log")).expect("log");
    assert!(log.contains("1 hand-off(s) unfinished"), "{log}");

    let two = start(&fleet, "edge-2", &[]).await;
    let one = start(&fleet, "edge-1", &[]).await;
    for (i, cart) in carts.iter().enumerate() {
        let through = if i % 2 == 0 { &one.client } else { &two.client };
        let body = settled(through, cart).await;
        assert_eq!(body["lines"][0]["quantity"], 2, "{body}");
    }
    crate::support::eventually("the hand-off to finish", Duration::from_secs(20), || {
        let two = two.client.clone();
        async move { two.status().await["skus"]["BAG-1"]["held"] == 40 }
    })
    .await;
    audit_passes(&fleet, [one.client.url.clone(), two.client.url.clone()]).await;
}

/// With no other edge ready (the whole fleet stopping), `SIGTERM` keeps the carts on the edge's
/// disk and the edge exits 0 at once; started again, it serves them.
#[tokio::test(flavor = "multi_thread")]
async fn with_no_ready_peer_a_draining_edge_keeps_its_carts_and_exits_at_once() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 500, 4)], -60)).await;
    let mut one = start(&fleet, "edge-1", &[]).await;
    let carts = holding(&one.client, "shopper", 5, 3).await;
    let asked = Instant::now();
    signal(&one, "-TERM");
    exits_0(&mut one, Duration::from_secs(10)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let one = start(&fleet, "edge-1", &[]).await;
    for cart in &carts {
        let (status, body) = one.client.get_cart(cart).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["lines"][0]["quantity"], 3, "{body}");
    }
    audit_passes(&fleet, [one.client.url.clone()]).await;
}

/// A restart in place (an upgrade): `SIGINT`, or `SIGTERM` under `--on-sigterm stop`, stops
/// the edge without a drain, though a ready peer could take its carts: it exits 0 at once, stays
/// in central's registry, and a process started on its folder is ready within seconds (its
/// lease passes to it, where a stranger would wait 30 s for it to lapse) and serves every cart as
/// it was, holds and expiries included.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_in_place_keeps_the_carts_for_the_next_process() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 500, 4)], -60)).await;
    let lease = ["--lease-secs", "30"];
    let two = start(&fleet, "edge-2", &lease).await;
    let info = [("CART_LOG", "info")];
    let flags = ["--lease-secs", "30", "--on-sigterm", "stop"];
    let mut one = start_env(&fleet, "edge-1", "edge-1", &flags, &info).await;
    let carts = holding(&one.client, "shopper", 5, 3).await;
    let mut before = Vec::new();
    for cart in &carts {
        before.push(lines(&one.client.get_cart(cart).await.1));
    }
    // SIGINT stops in place whatever --on-sigterm says; SIGTERM does under this flag.
    for stop in ["-INT", "-TERM"] {
        let asked = Instant::now();
        signal(&one, stop);
        exits_0(&mut one, Duration::from_secs(10)).await;
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
        let log = fleet.log("edge-1");
        let last = log.rsplit("edge serving").next().unwrap_or_default();
        assert!(
            last.contains("stopped in place") && !last.contains("draining"),
            "{log}"
        );
        let registry = fleet.central().await.snapshot().await.expect("snapshot");
        assert!(
            !registry.edges["edge-1"].drained,
            "{stop}: left the registry"
        );

        let started = Instant::now();
        one = start_env(&fleet, "edge-1", "edge-1", &flags, &info).await;
        while readyz(&one.client).await != StatusCode::OK {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{stop}: not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (cart, was) in carts.iter().zip(&before) {
            let (status, body) = one.client.get_cart(cart).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(&lines(&body), was, "{stop}");
        }
    }
    audit_passes(&fleet, [one.client.url.clone(), two.client.url.clone()]).await;
}

/// An edge started mid-sale runs the module an operator last deployed to the fleet (recorded at
/// central), not the one it was started with, and sells within 2 s of its first shopper, its
/// units coming by escrow.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_started_mid_sale_runs_the_fleets_module_and_sells_within_2_s() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 1_000, 4)], -60)).await;
    let one = start(&fleet, "edge-1", &[]).await;
    let guest = std::fs::read(crate::support::guest_wasm()).expect("module");
    let (status, body) = crate::deploy::put_module(
        &one.client,
        crate::deploy::variant(&guest, "fleet"),
        &[("x-module-version", "v-fleet")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    holding(&one.client, "early", 10, 2).await;

    let two = start(&fleet, "edge-2", &[]).await;
    assert_eq!(
        crate::deploy::modules(&two.client).await["active"],
        "v-fleet"
    );
    let first = Instant::now();
    let cart = two.client.create_cart("late-1").await;
    let r = two
        .client
        .send(
            Method::PUT,
            &format!("/v1/carts/{}/items/BAG-1", cart.id),
            Some(&cart.token),
            &[],
            r#"{"quantity": 2}"#,
        )
        .await;
    let took = first.elapsed();
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.headers["x-cart-edge"], "edge-2");
    assert_eq!(r.headers["x-module-version"], "v-fleet");
    assert!(took < Duration::from_secs(2), "{took:?}");
    audit_passes(&fleet, [one.client.url.clone(), two.client.url.clone()]).await;
}
