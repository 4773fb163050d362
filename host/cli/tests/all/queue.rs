//! The optional queue: three `cart-host serve --queue` processes publish their outboxes to a real
//! `nats-server -js`, and `cart-host relay` processes apply them to a real PostgreSQL, through a
//! relay's death, the NATS server's and central's outages. `audit` must pass: every event
//! applied once, every unit counted once.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use cart_central::SkuKey;
use cart_central::events::{EventKey, OutboxEvent};
use cart_queue::Envelope;
use cart_testkit::{Nats, Postgres};
use hyper::StatusCode;

use crate::drain::{drain, exits_0};
use crate::fleet::{holds_kept, sell_out, shop};
use crate::oversell::{buy, orders_at_central};
use crate::support::{
    CartRef, Client, EdgeProcess, Fleet, RelayProcess, audit_passes, eventually, sale, sum_of,
};

/// A PostgreSQL central with a sale of `units` BAG-1 (one per customer), and a NATS server.
async fn setup(database: &str, units: u32) -> (Postgres, Nats, Fleet) {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database(database).await.expect("database");
    let nats = Nats::start().expect("a NATS server with JetStream");
    let fleet = Fleet::on(url, &sale(&[("BAG-1", units, 1)], -60)).await;
    (pg, nats, fleet)
}

/// Three `cart-host serve --queue` processes.
async fn queued_edges(fleet: &Fleet, nats: &Nats) -> (Vec<EdgeProcess>, Vec<Client>) {
    let mut edges = Vec::new();
    for id in ["edge-1", "edge-2", "edge-3"] {
        edges.push(EdgeProcess::start_with(fleet, id, id, &["--queue", &nats.url()]).await);
    }
    let clients = edges.iter().map(|e| e.client.clone()).collect();
    (edges, clients)
}

/// Events the relays applied between them, by their `/metrics`.
async fn applied_by(relays: &[&RelayProcess]) -> f64 {
    let mut sum = 0.0;
    for r in relays {
        sum += r
            .metric("cart_relay_events_applied_total")
            .await
            .unwrap_or(f64::NAN);
    }
    sum
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_shoppers_through_the_queue_take_exactly_the_hundred_units() {
    let (_pg, nats, fleet) = setup("queue_sell_out", 100).await;
    let relay = RelayProcess::start(&fleet, &nats.url(), "relay").await;
    let (_edges, clients) = queued_edges(&fleet, &nats).await;
    sell_out(&fleet, &clients, 1000, 100).await;
    // The edges never wrote their events to central: the relay applied every one, once.
    let events = sum_of(&clients, "delivered_seq").await as f64;
    assert!(events >= 100.0, "{events} events for 100 holds");
    eventually(
        "the relay to have applied every event",
        Duration::from_secs(10),
        || async { applied_by(&[&relay]).await == events },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_relays_at_once_apply_each_event_once() {
    let (_pg, nats, fleet) = setup("queue_two_relays", 100).await;
    let a = RelayProcess::start(&fleet, &nats.url(), "relay-a").await;
    let b = RelayProcess::start(&fleet, &nats.url(), "relay-b").await;
    let (_edges, clients) = queued_edges(&fleet, &nats).await;
    sell_out(&fleet, &clients, 1000, 100).await;
    let events = sum_of(&clients, "delivered_seq").await as f64;
    eventually(
        "the two relays to have applied every event once between them",
        Duration::from_secs(10),
        || async { applied_by(&[&a, &b]).await == events },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_mid_stream_loses_and_repeats_nothing() {
    let (_pg, nats, fleet) = setup("queue_relay_killed", 300).await;
    let relay = RelayProcess::start(&fleet, &nats.url(), "relay-a").await;
    let (_edges, clients) = queued_edges(&fleet, &nats).await;
    let crowd = tokio::spawn({
        let clients = clients.clone();
        async move { shop(&clients, 0, 600, 100).await }
    });
    eventually(
        "the relay to apply events",
        Duration::from_secs(30),
        || async { applied_by(&[&relay]).await > 0.0 },
    )
    .await;
    relay.kill().await;
    // The edges keep publishing meanwhile; what the dead relay took unacknowledged comes back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _relay = RelayProcess::start(&fleet, &nats.url(), "relay-b").await;
    let mut crowd = crowd.await.expect("crowd");
    assert_eq!((crowd.server_errors, crowd.unanswered), (0, 0), "{crowd:?}");
    // Units an edge gave back while the relay was down waited for central to apply what the
    // edge wrote before (and were sold nowhere meanwhile): once it has, the last shoppers get
    // them.
    eventually("the returns taken", Duration::from_secs(30), || async {
        sum_of(&clients, "returns_in_flight").await == 0
    })
    .await;
    let late = shop(&clients, 600, 300, 100).await;
    assert_eq!((late.server_errors, late.unanswered), (0, 0), "{late:?}");
    crowd.won.extend(late.won);
    assert_eq!(crowd.won.len(), 300, "{crowd:?}");
    holds_kept(&clients, &crowd.won).await;
    audit_passes(&fleet, clients.iter().map(|c| c.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nats_down_the_edges_sell_and_their_outboxes_drain_when_it_returns() {
    let (_pg, mut nats, fleet) = setup("queue_nats_down", 300).await;
    let _relay = RelayProcess::start(&fleet, &nats.url(), "relay").await;
    let (_edges, clients) = queued_edges(&fleet, &nats).await;
    let before = shop(&clients, 0, 60, 30).await;
    assert_eq!(before.won.len(), 60, "{before:?}");

    nats.halt().expect("nats-server stops");
    let during = shop(&clients, 60, 90, 30).await;
    assert_eq!(
        (during.server_errors, during.unanswered),
        (0, 0),
        "{during:?}"
    );
    assert_eq!(during.won.len(), 90, "central is up: {during:?}");
    assert!(
        sum_of(&clients, "outbox_backlog").await > 0,
        "the outboxes keep what the stream cannot take"
    );
    eventually("the edges to say why", Duration::from_secs(10), || async {
        let error = clients[0].status().await["last_sync_error"].to_string();
        error.contains("NATS server is unreachable")
    })
    .await;

    nats.resume()
        .expect("nats-server starts again on its store");
    eventually(
        "the outboxes to drain into the stream",
        Duration::from_secs(60),
        || async { sum_of(&clients, "outbox_backlog").await == 0 },
    )
    .await;
    let won: Vec<CartRef> = before.won.into_iter().chain(during.won).collect();
    holds_kept(&clients, &won).await;
    audit_passes(&fleet, clients.iter().map(|c| c.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thirty_second_central_outage_backs_up_in_the_stream_not_at_the_edges() {
    let (pg, nats, fleet) = setup("queue_central_down", 300).await;
    let relay = RelayProcess::start(&fleet, &nats.url(), "relay").await;
    let (_edges, clients) = queued_edges(&fleet, &nats).await;
    let before = shop(&clients, 0, 60, 30).await;
    assert_eq!(before.won.len(), 60, "{before:?}");

    pg.halt().expect("PostgreSQL stops");
    let down_since = Instant::now();
    let during = shop(&clients, 60, 90, 30).await;
    assert_eq!(
        (during.server_errors, during.unanswered),
        (0, 0),
        "{during:?}"
    );
    assert!(
        !during.won.is_empty(),
        "edges sell their own units: {during:?}"
    );
    eventually(
        "the outboxes to drain into the stream while central is down",
        Duration::from_secs(20),
        || async { sum_of(&clients, "outbox_backlog").await == 0 },
    )
    .await;
    eventually(
        "the relay's lag to grow",
        Duration::from_secs(20),
        || async { relay.metric("cart_relay_lag_messages").await > Some(0.0) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed())).await;

    pg.resume().expect("PostgreSQL starts again");
    eventually(
        "the relay's lag to drain",
        Duration::from_secs(60),
        || async { relay.metric("cart_relay_lag_messages").await == Some(0.0) },
    )
    .await;
    let won: Vec<CartRef> = before.won.into_iter().chain(during.won).collect();
    holds_kept(&clients, &won).await;
    audit_passes(&fleet, clients.iter().map(|c| c.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_stream_is_an_error_the_edge_reports_and_nothing_is_dropped() {
    let (_pg, nats, fleet) = setup("queue_full", 100).await;
    // An operator made the stream tiny.
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("NATS"));
    js.create_stream(jetstream::stream::Config {
        max_messages: 5,
        ..cart_queue::stream_config()
    })
    .await
    .expect("a five-message stream");
    let (_edges, clients) = queued_edges(&fleet, &nats).await;
    let crowd = shop(&clients, 0, 30, 10).await;
    assert_eq!(crowd.won.len(), 30, "{crowd:?}");
    eventually(
        "an edge to report the full stream",
        Duration::from_secs(30),
        || async {
            let mut full = false;
            for c in &clients {
                let error = c.status().await["last_sync_error"].to_string();
                full |= error.contains("maximum messages");
            }
            full
        },
    )
    .await;
    assert!(
        sum_of(&clients, "outbox_backlog").await > 0,
        "the rows are kept"
    );

    // A relay makes room; every event arrives, once.
    let _relay = RelayProcess::start(&fleet, &nats.url(), "relay").await;
    eventually("the outboxes to drain", Duration::from_secs(60), || async {
        sum_of(&clients, "outbox_backlog").await == 0
    })
    .await;
    holds_kept(&clients, &crowd.won).await;
    audit_passes(&fleet, clients.iter().map(|c| c.url.clone())).await;
}

/// The stream as failures can leave it: an edge's events out of order, a garbled message, and
/// an edge whose event central refuses. The relay waits for the gap, drops the garbled message,
/// and the refused edge holds back no one else.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_waits_for_a_gap_and_one_bad_message_stops_nothing_else() {
    let nats = Nats::start().expect("a NATS server with JetStream");
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 5)], -60)).await;
    let central = fleet.central().await;
    let key = EventKey::generate();
    for edge in ["edge-a", "edge-b"] {
        crate::support::claimed_with_units(&central, edge, &key, &[("BAG-1", 5)]).await;
    }
    let order = |id: &str| crate::support::bag_order(id, &format!("cart-{id}"), "c", 1);
    // edge-b's first event is an order id central already has: it can never apply.
    central
        .apply(
            "edge-a",
            "h-edge-a",
            &[key.sign("h-edge-a", 1, order("o-taken"))],
        )
        .await
        .expect("edge-a's first event, straight");
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("NATS"));
    cart_queue::ensure_stream(&js).await.expect("the stream");
    let envelope = |edge: &str, seq: i64, event: OutboxEvent| {
        let history_id = format!("h-{edge}");
        serde_json::to_vec(&Envelope {
            edge_id: edge.into(),
            signature: key.signature(&history_id, seq, &event),
            history_id,
            seq,
            event,
        })
        .expect("JSON")
    };
    for payload in [
        envelope("edge-a", 3, order("o-3")),
        b"not an event".to_vec(),
        envelope("edge-b", 1, order("o-taken")),
        envelope("edge-a", 2, order("o-2")),
    ] {
        js.publish(cart_queue::SUBJECT, payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let relay = RelayProcess::start(&fleet, &nats.url(), "relay").await;
    eventually(
        "edge-a's events to apply, in order",
        Duration::from_secs(30),
        || async { central.snapshot().await.expect("snapshot").edges["edge-a"].high_water == 3 },
    )
    .await;
    eventually(
        "the relay to count what it refused",
        Duration::from_secs(10),
        || async {
            relay.metric("cart_relay_dropped_total").await == Some(1.0)
                && relay.metric("cart_relay_failures_total").await >= Some(1.0)
        },
    )
    .await;
    let snapshot = central.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.edges["edge-b"].high_water, 0,
        "edge-b's event waits"
    );
    assert_eq!(
        central.orders_of("edge-a").await.expect("orders").len(),
        3,
        "o-taken, o-2, o-3, once each"
    );
}

/// Through the queue, central applies an edge's events some time after the edge sent them, and
/// the edge gives units back to central directly. A drained edge gives back every free unit
/// while its hold of three units, their release and an order are still in the stream: central
/// takes the units only once it has applied those events. Taken at once, the hold would be
/// counted against units already given back and refused for ever, and the order behind it
/// with it.
#[tokio::test(flavor = "multi_thread")]
async fn units_given_back_wait_for_the_events_before_them_in_the_stream() {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("queue_returns").await.expect("database");
    let nats = Nats::start().expect("a NATS server with JetStream");
    let fleet = Fleet::on(url, &sale(&[("BAG-1", 100, 5)], -60)).await;
    let nats_url = nats.url();
    let queued = ["--queue", nats_url.as_str()];
    let mut edge = EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &queued).await;
    eventually("units at edge-1", Duration::from_secs(10), || async {
        edge.client.available("BAG-1").await >= 3
    })
    .await;
    let browsing = edge.client.create_cart("browsing").await;
    for quantity in [3, 0] {
        let (status, body) = edge.client.set(&browsing, "BAG-1", quantity).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let order = buy(&edge.client, "buyer", 1).await.expect("an order");
    eventually(
        "the events in the stream",
        Duration::from_secs(10),
        || async { edge.client.status().await["outbox_backlog"] == 0 },
    )
    .await;

    // No relay yet: the drain gives the units back before central has any of the events, and
    // the edge exits with its carts kept (no peer takes them).
    drain(&edge.client).await;
    exits_0(&mut edge, Duration::from_secs(30)).await;
    let central = fleet.central().await;
    let bags = SkuKey::new("test-sale", "BAG-1");
    let allotted = central.snapshot().await.expect("snapshot").skus[&bags].allotted["edge-1"];
    assert!(
        allotted >= 3,
        "central took units back before the events before them: {allotted}"
    );

    // The relay applies the stream; the edge, started again, gives the units back.
    let _relay = RelayProcess::start(&fleet, &nats_url, "relay").await;
    let again = EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &queued).await;
    eventually("the order at central", Duration::from_secs(30), || async {
        orders_at_central(&fleet).await.contains(&order)
    })
    .await;
    eventually(
        "the units back at central",
        Duration::from_secs(30),
        || async {
            let snapshot = central.snapshot().await.expect("snapshot");
            snapshot.skus[&bags].unallocated == 99
                && again.client.status().await["returns_in_flight"] == 0
        },
    )
    .await;
    audit_passes(&fleet, [again.client.url.clone()]).await;
}
