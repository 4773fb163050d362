//! Many shoppers at once for few units: exactly as many succeed as there are units.

use hyper::StatusCode;

use crate::support::{Fleet, audit_passes, ledger, sale};

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_shoppers_fifty_units_exactly_fifty_holds() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 50, 1)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let shoppers: Vec<_> = (0..200)
        .map(|i| {
            let edge = edge.client.clone();
            tokio::spawn(async move {
                let cart = edge.create_cart(&format!("shopper-{i}")).await;
                let (status, body) = edge.set(&cart, "BAG-1", 1).await;
                (status, body["error"]["code"].as_str().map(str::to_owned))
            })
        })
        .collect();
    let mut won = 0;
    let mut sold_out = 0;
    for s in shoppers {
        match s.await.expect("shopper") {
            (StatusCode::OK, _) => won += 1,
            (StatusCode::CONFLICT, Some(code)) if code == "sold_out" => sold_out += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((won, sold_out), (50, 150));
    assert_eq!(edge.available("BAG-1").await, 0);
    let stock = &edge.status().await["skus"]["BAG-1"];
    assert_eq!(
        (stock["free"].as_u64(), stock["held"].as_u64()),
        (Some(0), Some(50))
    );

    // Central ends with every hold the edge committed, once each.
    audit_passes(&fleet, [edge.url.clone()]).await;
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    assert_eq!(ledger(&snapshot, "BAG-1").held.get("edge-a"), Some(&50));
    assert_eq!(ledger(&snapshot, "BAG-1").unallocated, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_share_one_stock_without_overselling() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 30, 1)], -60)).await;
    let edges = [fleet.edge("edge-a").await, fleet.edge("edge-b").await];
    let shoppers: Vec<_> = (0..120)
        .map(|i| {
            let edge = edges[i % 2].client.clone();
            tokio::spawn(async move {
                let cart = edge.create_cart(&format!("shopper-{i}")).await;
                let (status, _) = edge.set(&cart, "BAG-1", 1).await;
                if status == StatusCode::OK {
                    let (status, _) = edge.checkout(&cart, &format!("k-{i}")).await;
                    assert_eq!(status, StatusCode::CREATED);
                    true
                } else {
                    assert_eq!(status, StatusCode::CONFLICT);
                    false
                }
            })
        })
        .collect();
    let mut sold = 0;
    for s in shoppers {
        sold += i64::from(s.await.expect("shopper"));
    }
    assert!(sold <= 30, "oversold: {sold} of 30");
    audit_passes(&fleet, edges.iter().map(|e| e.url.clone())).await;
    let snapshot = fleet.central().await.snapshot().await.expect("snapshot");
    let central_sold: i64 = ledger(&snapshot, "BAG-1").sold.values().sum();
    assert_eq!(central_sold, sold, "central has every order once");
}
