//! Hold time-to-live, tested by moving the request clock rather than sleeping.

use std::time::Duration;

use hyper::StatusCode;

use crate::support::{Fleet, eventually, sale};

#[tokio::test(flavor = "multi_thread")]
async fn a_lapsed_hold_blocks_checkout_and_its_units_return() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 5), ("HAT-1", 10, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let cart = edge.create_cart("slowpoke").await;
    assert_eq!(edge.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
    edge.clock.advance(Duration::from_secs(300));
    assert_eq!(edge.set(&cart, "HAT-1", 1).await.0, StatusCode::OK);
    // BAG-1 was raised 601 s ago and its 600 s hold has lapsed; HAT-1's, 301 s old, has not.
    edge.clock.advance(Duration::from_secs(301));
    let (status, body) = edge.checkout(&cart, "k1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "hold_expired");
    assert_eq!(body["error"]["skus"], serde_json::json!(["BAG-1"]));

    // The sweep hands the lapsed units back (and only those).
    eventually(
        "the sweep to release BAG-1",
        Duration::from_secs(10),
        || async { edge.status().await["skus"]["BAG-1"]["held"] == 0 },
    )
    .await;
    assert_eq!(edge.status().await["skus"]["HAT-1"]["held"], 1);

    // Raising the line again places a new hold, and checkout goes through.
    assert_eq!(edge.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
    let (status, body) = edge.checkout(&cart, "k2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raising_a_line_refreshes_its_hold_and_lowering_does_not() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let cart = edge.create_cart("c").await;
    let (_, first) = edge.set(&cart, "BAG-1", 1).await;
    edge.clock.advance(Duration::from_secs(100));
    let (_, raised) = edge.set(&cart, "BAG-1", 3).await;
    edge.clock.advance(Duration::from_secs(100));
    let (_, lowered) = edge.set(&cart, "BAG-1", 2).await;
    let expiry =
        |v: &serde_json::Value| v["lines"][0]["hold_expires_at"].as_str().map(str::to_owned);
    assert_ne!(
        expiry(&first),
        expiry(&raised),
        "raising refreshes the hold"
    );
    assert_eq!(expiry(&raised), expiry(&lowered), "lowering keeps it");
    assert_eq!(edge.status().await["skus"]["BAG-1"]["held"], 2);
}
