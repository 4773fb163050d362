//! Units an edge gives back: central takes a return only once it has applied the outbox events
//! the edge wrote before it, so that a hold it has not seen yet is never counted against units
//! already given back (central would refuse that hold, and the order behind it, for ever).

use cart_central::events::{Delivery, EventKey, OutboxEvent, Sender};
use cart_central::{Central, CentralError, GrantRequest, Known, SkuKey, UnitReturn};

mod support;

/// A hold of `quantity` bags in `cart` (0: released).
fn hold(cart: &str, quantity: u32) -> OutboxEvent {
    OutboxEvent::HoldChanged {
        cart_id: cart.into(),
        customer_id: "ann".into(),
        sale_id: "sale".into(),
        sku: "BAG".into(),
        quantity,
        expires_at: cart_central::time::wall_ms() + 600_000,
    }
}

/// Delivers `event` as `edge-a`'s outbox event `seq`, alone.
async fn deliver(central: &Central, key: &EventKey, seq: i64, event: OutboxEvent) {
    let delivery = Delivery::unsigned(seq, event);
    let marks = central
        .deliver(
            "edge-a",
            "edge-a-history",
            Sender::Process(key),
            &[delivery],
        )
        .await
        .unwrap_or_else(|e| panic!("event {seq} refused: {e}"));
    assert_eq!(marks.after, seq);
}

/// `edge-a`'s return `id` of `quantity` bags, written after its outbox event `after_seq`.
fn giving_back(id: &str, quantity: u32, after_seq: i64) -> UnitReturn {
    UnitReturn {
        return_id: id.into(),
        edge_id: "edge-a".into(),
        incarnation: "edge-a-process".into(),
        sale_id: "sale".into(),
        sku: "BAG".into(),
        quantity,
        after_seq,
    }
}

/// Bags no edge has been granted.
async fn unallocated(central: &Central) -> i64 {
    let snapshot = central.snapshot().await.expect("snapshot");
    snapshot.skus[&SkuKey::new("sale", "BAG")].unallocated
}

#[tokio::test]
async fn a_return_waits_until_central_has_the_holds_written_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("central.db").display());
    let central = Central::connect(&url).await.expect("central");
    support::load_bags(&central, 100).await;
    let (incarnation, key) = support::claim(&central, "edge-a", 60_000).await;
    let granted = central
        .grant(&GrantRequest {
            grant_id: "g1".into(),
            edge_id: "edge-a".into(),
            incarnation,
            sale_id: "sale".into(),
            sku: "BAG".into(),
            requested: 10,
            again: false,
            known: Known::default(),
        })
        .await
        .expect("granted");
    assert_eq!(granted, 10);

    // The edge held 2 bags and let them go (its events 1 and 2), then gave its 10 free bags
    // back, while central had neither event yet.
    let early = central.return_units(&giving_back("r1", 10, 2)).await;
    match early {
        Err(CentralError::ReturnEarly {
            applied: 0,
            needed: 2,
            ..
        }) => {}
        other => panic!("a return taken before the holds it follows: {other:?}"),
    }
    assert_eq!(unallocated(&central).await, 90);

    // The hold, delivered alone, is counted against the bags the edge still has.
    deliver(&central, &key, 1, hold("cart-1", 2)).await;
    let still = central.return_units(&giving_back("r1", 10, 2)).await;
    assert!(
        matches!(still, Err(CentralError::ReturnEarly { applied: 1, .. })),
        "{still:?}"
    );
    deliver(&central, &key, 2, hold("cart-1", 0)).await;
    central
        .return_units(&giving_back("r1", 10, 2))
        .await
        .expect("taken once central has the events before it");
    assert_eq!(unallocated(&central).await, 100);
    // Taken once, whatever it says when asked again.
    central
        .return_units(&giving_back("r1", 10, 2))
        .await
        .expect("the same return again");
    assert_eq!(unallocated(&central).await, 100);
    // And never more than the edge has.
    let more = central.return_units(&giving_back("r2", 1, 2)).await;
    assert!(
        matches!(more, Err(CentralError::ReturnRefused { spare: 0, .. })),
        "{more:?}"
    );
}
