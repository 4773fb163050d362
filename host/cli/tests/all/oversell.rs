//! Never oversell, tried as an attacker and as a bad network would: a copy of a live edge's
//! folder, an edge cut off from central while its id is taken over, a peer with the fleet
//! secret forging a hand-off, anyone who can publish to the queue forging events. Each of these
//! sold units twice, or lost confirmed orders, before the edges' leases, signed events and
//! central's own count of units.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cart_central::events::{EventKey, EventLine, Order, OutboxEvent};
use cart_queue::Envelope;
use cart_testkit::link::{Link, Mode};
use cart_testkit::{Nats, Postgres};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::one_fleet::{readyz, start as start_in_fleet};
use crate::support::{
    CartRef, Client, EdgeProcess, Fleet, RelayProcess, audit_passes, eventually, ledger, sale,
};

/// A shopper who buys `quantity` of BAG-1: the order's id, or the first answer that was not a
/// success.
pub async fn buy(
    edge: &Client,
    customer: &str,
    quantity: i64,
) -> Result<String, (StatusCode, Value)> {
    let (status, body) = edge
        .call(
            Method::POST,
            "/v1/carts",
            None,
            json!({ "customer_id": customer }),
        )
        .await;
    if status != StatusCode::CREATED {
        return Err((status, body));
    }
    let cart = CartRef::from_created(&body);
    let (status, body) = edge.set(&cart, "BAG-1", quantity).await;
    if status != StatusCode::OK {
        return Err((status, body));
    }
    let (status, body) = edge.checkout(&cart, &format!("buy-{customer}")).await;
    if status != StatusCode::CREATED {
        return Err((status, body));
    }
    Ok(body["order_id"].as_str().expect("order_id").to_owned())
}

/// Every order central holds, under any edge id (retired histories' too).
pub async fn orders_at_central(fleet: &Fleet) -> BTreeSet<String> {
    let central = fleet.central().await;
    let snapshot = central.snapshot().await.expect("snapshot");
    let mut all = BTreeSet::new();
    for edge in snapshot.edges.keys() {
        for o in central.orders_of(edge).await.expect("orders") {
            assert!(all.insert(o.order_id.clone()), "{} twice", o.order_id);
        }
    }
    all
}

/// A copy of a running edge's folder (SQLite's `VACUUM INTO`, a consistent copy of a live
/// database) does not start under the edge's id: it would sell the original's units again and
/// mark the original's orders delivered. With `--take-over` it waits, selling nothing, until
/// the original's lease has lapsed, and then starts a history of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_live_edges_folder_sells_nothing_of_the_original() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 10)], -60)).await;
    let lease = ["--lease-secs", "2"];
    let original = EdgeProcess::start_with(&fleet, "edge-1", "folder-a", &lease).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        original.client.available("BAG-1").await > 0
    })
    .await;
    let first = buy(&original.client, "ann", 1)
        .await
        .expect("a first order");

    let copy = fleet.dir.path().join("folder-b");
    std::fs::create_dir_all(&copy).expect("copy folder");
    let live = rusqlite::Connection::open(fleet.dir.path().join("folder-a/edge.db")).expect("db");
    live.execute(
        "VACUUM INTO ?1",
        [copy.join("edge.db").display().to_string()],
    )
    .expect("a copy of the live database");

    let (status, said) = EdgeProcess::refused(&fleet, "edge-1", "folder-b", &lease).await;
    assert!(!status.success());
    assert!(said.contains("is a copy"), "{said}");

    // Taking over waits for the original's lease, which it keeps renewing: nothing is sold.
    let mut args = lease.to_vec();
    args.push("--take-over");
    let taker = EdgeProcess::start_with(&fleet, "edge-1", "folder-b", &args).await;
    for _ in 0..3 {
        assert_eq!(readyz(&taker.client).await, StatusCode::SERVICE_UNAVAILABLE);
        let refused = buy(&taker.client, "bob", 1).await;
        assert!(
            matches!(refused, Err((StatusCode::SERVICE_UNAVAILABLE, _))),
            "{refused:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let second = buy(&original.client, "cat", 1)
        .await
        .expect("the original sells on");
    // Its orders are at central before it dies (a dead folder's undelivered orders would be
    // its own to deliver when it comes back).
    eventually(
        "the original's outbox delivered",
        Duration::from_secs(10),
        || async { original.client.status().await["outbox_backlog"] == 0 },
    )
    .await;
    original.kill().await;
    eventually(
        "the taker to start once the lease lapsed",
        Duration::from_secs(20),
        || async { readyz(&taker.client).await == StatusCode::OK },
    )
    .await;
    // The original's history is written off with its units in doubt, its orders kept.
    let orders = orders_at_central(&fleet).await;
    for o in [&first, &second] {
        assert!(orders.contains(o), "{o} is lost: {orders:?}");
    }
    let mut more = 0;
    for i in 0..20 {
        if buy(&taker.client, &format!("late-{i}"), 1).await.is_ok() {
            more += 1;
        }
    }
    assert!(2 + more <= 10, "{} orders for 10 units", 2 + more);
    audit_passes(&fleet, [taker.client.url.clone()]).await;
}

/// An edge cut off from central (its link blackholed, not refused: the half-open link real
/// networks make) sells from its units only until its lease runs out, and says so; a take-over
/// elsewhere waits for the lease at central and does not sell the cut-off edge's units; when the
/// link heals, the cut-off edge delivers every order it confirmed, to its retired history.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_cut_off_from_central_stops_before_a_take_over_and_loses_no_order() {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("partition").await.expect("database");
    let fleet = Fleet::on(url.clone(), &sale(&[("BAG-1", 60, 60)], -60)).await;
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse().expect("address");
    let link = Link::start(target).await.expect("a link to central");
    let via = link.url(&url, target);
    let old = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1",
        // A shopper short of units waits for central as long as in production (the harness's
        // 5 s would outlast the 3 s lease this test times).
        &[
            "--central",
            &via,
            "--lease-secs",
            "3",
            "--shortage-wait-ms",
            "150",
        ],
    )
    .await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        old.client.available("BAG-1").await > 0
    })
    .await;
    let mut confirmed = Vec::new();
    for i in 0..10 {
        confirmed.push(
            buy(&old.client, &format!("before-{i}"), 1)
                .await
                .expect("an order"),
        );
    }

    link.set(Mode::Blackholed);
    let cut = Instant::now();
    let mut n = 0;
    let refusal = loop {
        match buy(&old.client, &format!("cut-{n}"), 1).await {
            Ok(order) => confirmed.push(order),
            // Out of units here, and central out of reach: it tries again.
            Err((StatusCode::CONFLICT, _)) => {}
            Err(refusal) => break refusal,
        }
        n += 1;
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "edge-1 still sells {:?} after its link to central was cut, past its 3 s lease",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // It may sell until its lease is nearly out, and not past it.
    assert!(
        cut.elapsed() < Duration::from_secs(3),
        "{:?}",
        cut.elapsed()
    );
    assert_eq!(refusal.0, StatusCode::SERVICE_UNAVAILABLE, "{refusal:?}");
    assert!(
        refusal.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lease")),
        "{refusal:?}"
    );
    assert_eq!(readyz(&old.client).await, StatusCode::SERVICE_UNAVAILABLE);

    // An operator takes the id over on another folder, straight to central.
    let new = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1-new",
        &["--lease-secs", "3", "--take-over"],
    )
    .await;
    eventually(
        "the take-over to serve",
        Duration::from_secs(20),
        || async { readyz(&new.client).await == StatusCode::OK },
    )
    .await;
    let mut i = 0;
    while let Ok(order) = buy(&new.client, &format!("new-{i}"), 1).await {
        confirmed.push(order);
        i += 1;
        assert!(i <= 60, "the take-over sells without end");
    }
    assert!(
        confirmed.len() <= 300,
        "{} orders for 300 units",
        confirmed.len()
    );

    link.heal();
    eventually(
        "every confirmed order at central",
        Duration::from_secs(60),
        || async {
            let at_central = orders_at_central(&fleet).await;
            confirmed.iter().all(|o| at_central.contains(o))
        },
    )
    .await;
    let at_central = orders_at_central(&fleet).await;
    assert_eq!(at_central.len(), confirmed.len(), "{at_central:?}");
    audit_passes(&fleet, [new.client.url.clone()]).await;
}

/// A peer holding the fleet secret offers a hand-off central never recorded: a thousand held
/// units of a twenty-unit SKU, and a cart at price 0. Nothing is taken, no unit appears, and
/// central's count of units is as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_handoff_moves_no_unit_and_sets_no_price() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 20, 1000)], -60)).await;
    let edge = start_in_fleet(&fleet, "edge-1", &[]).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        edge.client.available("BAG-1").await > 0
    })
    .await;
    let before = edge.client.status().await["skus"]["BAG-1"].clone();
    let unallocated = ledger(
        &fleet.central().await.snapshot().await.expect("snapshot"),
        "BAG-1",
    )
    .unallocated;
    let cart_id = format!("c_{}{}", "0123abcd", "f".repeat(24));
    let batch = json!({
        "handoff_id": format!("h_{}", "e".repeat(32)),
        "from_edge": "edge-9",
        "carts": [{
            "cart_id": cart_id,
            "customer_id": "mallory",
            "token_hash": "a".repeat(64),
            "checked_out": false,
            "created_at": 1,
            "lines": [{"sku": "BAG-1", "sale_id": "test-sale", "quantity": 1000,
                       "unit_price_cents": 0, "hold_expires_at": i64::MAX, "held": true}],
            "order": null
        }]
    });
    let r = edge
        .client
        .send(
            Method::POST,
            "/fleet/handoffs",
            None,
            &[
                ("content-type", "application/json"),
                ("x-cart-forwarded-by", "edge-9"),
                ("x-fleet-secret", "a-fleet-secret-for-the-tests"),
            ],
            batch.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(edge.client.status().await["skus"]["BAG-1"], before);
    let after = fleet.central().await.snapshot().await.expect("snapshot");
    assert_eq!(ledger(&after, "BAG-1").unallocated, unallocated);
    audit_passes(&fleet, [edge.client.url.clone()]).await;
}

/// Anyone who can publish to the queue publishes a forged order as an edge's next event, and
/// junk: neither applies, the edge's real event is not taken for a duplicate of the forgery,
/// nothing stalls, and the relay counts what it set aside until its lag is back to zero.
#[tokio::test(flavor = "multi_thread")]
async fn forged_queue_messages_neither_apply_nor_suppress_nor_block() {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("forged").await.expect("database");
    let nats = Nats::start().expect("a NATS server with JetStream");
    let fleet = Fleet::on(url, &sale(&[("BAG-1", 20, 20)], -60)).await;
    let relay = RelayProcess::start(&fleet, &nats.url(), "relay").await;
    let edge = EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &["--queue", &nats.url()]).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        edge.client.available("BAG-1").await > 0
    })
    .await;
    let first = buy(&edge.client, "ann", 1).await.expect("an order");
    eventually(
        "edge-1's events applied",
        Duration::from_secs(20),
        || async { orders_at_central(&fleet).await.contains(&first) },
    )
    .await;
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    let next = snapshot.edges["edge-1"].high_water + 1;
    let history = cart_edge::wire::fetch_books(
        &cart_edge::http_client::HttpClient::default(),
        &edge.client.url,
        Some(crate::support::ADMIN_TOKEN),
    )
    .await
    .expect("books")
    .history_id;
    // Signed, but by a key central never registered for the history.
    let forger = EventKey::generate();
    let forged = OutboxEvent::OrderPlaced(Order {
        order_id: "o_forged".into(),
        cart_id: "c_forged".into(),
        customer_id: "mallory".into(),
        lines: vec![EventLine {
            sale_id: "test-sale".into(),
            sku: "BAG-1".into(),
            quantity: 10,
            unit_price_cents: 0,
        }],
        total_cents: 0,
        placed_at: 1,
    });
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("NATS"));
    let envelope = Envelope {
        edge_id: "edge-1".into(),
        history_id: history.clone(),
        seq: next,
        signature: forger.signature(&history, next, &forged),
        event: forged,
    };
    // As the edge's next row, under the id a predictable scheme would give the real one.
    for (payload, id) in [
        (
            serde_json::to_vec(&envelope).expect("JSON"),
            format!("edge-1/{history}/{next}"),
        ),
        (b"junk".to_vec(), "junk".to_owned()),
    ] {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        js.send_publish(cart_queue::SUBJECT, message)
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let second = buy(&edge.client, "bob", 1).await.expect("a real order");
    eventually(
        "the real order applied, the forgery set aside",
        Duration::from_secs(30),
        || async {
            let orders = orders_at_central(&fleet).await;
            orders.contains(&second) && relay.metric("cart_relay_rejected_total").await == Some(1.0)
        },
    )
    .await;
    assert!(!orders_at_central(&fleet).await.contains("o_forged"));
    eventually(
        "the relay's lag back to 0",
        Duration::from_secs(30),
        || async { relay.metric("cart_relay_lag_messages").await == Some(0.0) },
    )
    .await;
    assert_eq!(relay.metric("cart_relay_dropped_total").await, Some(1.0));
    audit_passes(&fleet, [edge.client.url.clone()]).await;
}

/// A take-over writes a history off, not what its customers bought: a customer with a limit of
/// one who bought before the take-over cannot buy again after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_take_over_keeps_counting_what_customers_bought_before_it() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 20, 1)], -60)).await;
    let old = EdgeProcess::start_with(&fleet, "edge-1", "folder-a", &["--lease-secs", "1"]).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        old.client.available("BAG-1").await > 0
    })
    .await;
    buy(&old.client, "ann", 1).await.expect("ann's one");
    eventually("the order at central", Duration::from_secs(10), || async {
        old.client.status().await["outbox_backlog"] == 0
    })
    .await;
    old.kill().await;
    let new = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "folder-b",
        &["--lease-secs", "1", "--take-over"],
    )
    .await;
    eventually(
        "the take-over to serve",
        Duration::from_secs(30),
        || async { readyz(&new.client).await == StatusCode::OK },
    )
    .await;
    // What the retired history sold reaches the new one's books within a moment.
    let mut answer = None;
    for _ in 0..50 {
        match buy(&new.client, "ann", 1).await {
            Err((StatusCode::UNPROCESSABLE_ENTITY, body)) => {
                answer = Some(body);
                break;
            }
            Err((StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT, _)) => {}
            other => panic!("ann bought past her limit of 1: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = answer.expect("a limit_exceeded answer");
    assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
    buy(&new.client, "bob", 1)
        .await
        .expect("another customer buys");
}

/// An edge cut off from central confirms orders, then dies before it can deliver them; its id
/// is taken over elsewhere. Its folder, started again, is not the edge any more, but it still
/// delivers every order it confirmed (to its retired history) and gives its units back. Before
/// the orders, a shopper held three units and let them go: central takes the units back only
/// once it has that hold, or it would count the hold against units already given back, refuse
/// it for ever, and never see the orders behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_edge_that_died_delivers_its_orders_when_its_folder_starts_again() {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("died").await.expect("database");
    let fleet = Fleet::on(url.clone(), &sale(&[("BAG-1", 60, 60)], -60)).await;
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse().expect("address");
    let link = Link::start(target).await.expect("a link to central");
    let via = link.url(&url, target);
    let through_link = ["--central", via.as_str(), "--lease-secs", "2"];
    let old = EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &through_link).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        old.client.available("BAG-1").await >= 3
    })
    .await;
    link.set(Mode::Refused);
    let browsing = old.client.create_cart("browsing").await;
    for quantity in [3, 0] {
        let (status, body) = old.client.set(&browsing, "BAG-1", quantity).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut confirmed = Vec::new();
    for i in 0..2 {
        confirmed.push(
            buy(&old.client, &format!("cut-{i}"), 1)
                .await
                .expect("an order"),
        );
    }
    old.kill().await;
    let new = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1-new",
        &["--lease-secs", "2", "--take-over"],
    )
    .await;
    eventually(
        "the take-over to serve",
        Duration::from_secs(60),
        || async { readyz(&new.client).await == StatusCode::OK },
    )
    .await;
    link.heal();
    let again = EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &through_link).await;
    assert_eq!(readyz(&again.client).await, StatusCode::SERVICE_UNAVAILABLE);
    let refused = buy(&again.client, "late", 1).await;
    assert!(refused.is_err(), "the retired folder sold: {refused:?}");
    eventually(
        "the orders it confirmed at central",
        Duration::from_secs(30),
        || async {
            let at_central = orders_at_central(&fleet).await;
            confirmed.iter().all(|o| at_central.contains(o))
        },
    )
    .await;
    eventually("its units given back", Duration::from_secs(30), || async {
        again.client.status().await["skus"]["BAG-1"]["free"] == 0
    })
    .await;
    audit_passes(&fleet, [new.client.url.clone()]).await;
}

/// A take-over gets the id from an edge on a flaky link: each time the link drops for longer
/// than the lease, the lease lapses, and the old process may not revive it when the link comes
/// back while the take-over waits for it (it used to, at its next renewal, and the take-over
/// could wait for ever). The take-over asks again as the lease lapses.
#[tokio::test(flavor = "multi_thread")]
async fn a_take_over_gets_the_id_from_an_edge_on_a_flaky_link() {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("flaky").await.expect("database");
    let fleet = Fleet::on(url.clone(), &sale(&[("BAG-1", 60, 60)], -60)).await;
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse().expect("address");
    let link = Link::start(target).await.expect("a link to central");
    let via = link.url(&url, target);
    let lease = ["--lease-secs", "2"];
    let old = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1",
        &[&["--central", &via], &lease[..]].concat(),
    )
    .await;
    eventually("edge-1 to serve", Duration::from_secs(10), || async {
        readyz(&old.client).await == StatusCode::OK
    })
    .await;
    let new = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1-new",
        &[&lease[..], &["--take-over"]].concat(),
    )
    .await;
    let started = Instant::now();
    let mut drops = 0;
    while readyz(&new.client).await != StatusCode::OK {
        assert!(
            drops < 4,
            "the take-over still waits after {drops} lapsed leases ({:?})",
            started.elapsed()
        );
        link.set(Mode::Blackholed);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        link.heal();
        drops += 1;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    assert_eq!(readyz(&old.client).await, StatusCode::SERVICE_UNAVAILABLE);
    buy(&new.client, "after", 1)
        .await
        .expect("the take-over sells");
}
