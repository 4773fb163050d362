//! `kill -9` of an edge process under load, then a restart on the same data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers: Vec<_> = (0..16)
        .map(|i| {
            let (client, stop) = (edge.client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let cart = client.create_cart(&format!("shopper-{i}")).await;
                let mut acknowledged = 0i64;
                while !stop.load(Ordering::Relaxed) {
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
                        Some(other) => panic!("unexpected {other}"),
                        None => break, // the edge died under this request
                    }
                }
                (cart, acknowledged)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    edge.kill().await;
    stop.store(true, Ordering::Relaxed);
    let mut carts: Vec<(CartRef, i64)> = Vec::new();
    for s in shoppers {
        carts.push(s.await.expect("shopper"));
    }
    let acknowledged: i64 = carts.iter().map(|(_, n)| n).sum();
    assert!(acknowledged > 0, "the load did some work before the kill");

    let edge = EdgeProcess::start(&fleet, "edge-a").await;
    let mut held_in_carts = 0;
    for (cart, acked) in &carts {
        let (status, body) = edge.client.get_cart(cart).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let quantity = body["lines"][0]["quantity"].as_i64().unwrap_or(0);
        // Every acknowledged update is there; at most the one in flight went further.
        assert!(
            quantity == *acked || quantity == acked + 1,
            "cart {} holds {quantity}, acknowledged {acked}",
            cart.id
        );
        held_in_carts += quantity;
    }
    // No half-applied update: the stock held is exactly what the carts hold.
    let status = edge.client.status().await;
    assert_eq!(
        status["skus"]["BAG-1"]["held"].as_i64(),
        Some(held_in_carts)
    );

    audit_passes(&fleet, [edge.client.url.clone()]).await;
    edge.kill().await;
}
