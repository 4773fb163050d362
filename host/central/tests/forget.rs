//! Central forgets receipts of applied events: only a caller's own, only those it has marked
//! delivered and that are old enough, a batch at a time, each one counted; those of an edge
//! gone long enough too; and nothing for a process that no longer serves the edge id.

use cart_central::events::{Delivery, EventKey, OutboxEvent, Sender};
use cart_central::time::wall_ms;
use cart_central::{Central, CentralError, FORGET_BATCH};

mod support;

/// Claims `edge_id` for a new process with a minute's lease; its incarnation and key.
async fn claim(central: &Central, edge_id: &str) -> (String, EventKey) {
    support::claim(central, edge_id, 60_000).await
}

/// A cutoff past everything done so far. Central caps a cutoff at its own clock, so this waits
/// until its clock has moved on, not only names a later time.
async fn after_now() -> i64 {
    let now = wall_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    now + 1
}

/// Delivers `n` events of `edge_id`'s history after `from`.
async fn deliver(central: &Central, edge_id: &str, key: &EventKey, from: i64, n: i64) {
    let history = format!("{edge_id}-history");
    let batch: Vec<_> = (from + 1..=from + n)
        .map(|seq| {
            let released = OutboxEvent::HoldChanged {
                cart_id: format!("cart-{seq}"),
                customer_id: "someone".into(),
                sale_id: "sale".into(),
                sku: "BAG".into(),
                quantity: 0,
                expires_at: 0,
            };
            Delivery::unsigned(seq, released)
        })
        .collect();
    let marks = central
        .deliver(edge_id, &history, Sender::Process(key), &batch)
        .await
        .expect("applied");
    assert_eq!(marks.after, from + n);
}

/// Receipts central keeps and has forgotten for `edge_id`.
async fn receipts(central: &Central, edge_id: &str) -> (i64, i64) {
    let snapshot = central.snapshot().await.expect("snapshot");
    let ledger = &snapshot.edges[edge_id];
    assert_eq!(
        ledger.events_applied + ledger.events_pruned,
        ledger.high_water,
        "every event up to the mark is kept or counted"
    );
    (ledger.events_applied, ledger.events_pruned)
}

#[tokio::test]
async fn receipts_go_only_when_delivered_old_and_asked_by_their_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("central.db").display());
    let central = Central::connect(&url).await.expect("central");
    let (a, a_key) = claim(&central, "edge-a").await;
    let events = 2 * i64::try_from(FORGET_BATCH).expect("small") + 500;
    deliver(&central, "edge-a", &a_key, 0, events).await;
    let later = after_now().await;

    // Too young: nothing goes.
    let young = central
        .forget("edge-a", &a, events, 0)
        .await
        .expect("forget");
    assert_eq!(young.receipts, 0);
    // Another process under the edge id: refused.
    let stranger = central.forget("edge-a", "not-the-process", events, later);
    assert!(matches!(stranger.await, Err(CentralError::Superseded(_))));
    // Old enough: a batch at a time, never past what the edge marked delivered.
    let delivered = events - 300;
    let mut batches = Vec::new();
    loop {
        let forgotten = central
            .forget("edge-a", &a, delivered, later)
            .await
            .expect("forget");
        batches.push(forgotten.receipts);
        if forgotten.receipts < FORGET_BATCH {
            break;
        }
    }
    let left = u64::try_from(delivered).expect("positive") - 2 * FORGET_BATCH;
    assert_eq!(batches, [FORGET_BATCH, FORGET_BATCH, left]);
    assert_eq!(receipts(&central, "edge-a").await, (300, delivered));

    // The events after the mark still apply once; the kept receipts still tell a crash apart.
    deliver(&central, "edge-a", &a_key, events, 5).await;
    let digests = central
        .applied_digests("edge-a-history", events - 2, events + 5)
        .await
        .expect("digests");
    assert_eq!(digests.len(), 8);
    assert_eq!(receipts(&central, "edge-a").await, (305, delivered));

    // Another edge, live: its receipts are its own to forget, however old.
    let (_c, c_key) = claim(&central, "edge-c").await;
    deliver(&central, "edge-c", &c_key, 0, 30).await;
    let later = after_now().await;
    let others = central
        .forget("edge-a", &a, delivered, later)
        .await
        .expect("forget");
    assert_eq!(others.gone_receipts, 0);
    assert_eq!(receipts(&central, "edge-c").await, (30, 0));

    // An edge that drained: its receipts go once it has been gone past the retention, on
    // whichever edge asks.
    let (b, b_key) = claim(&central, "edge-b").await;
    deliver(&central, "edge-b", &b_key, 0, 40).await;
    central.drained("edge-b", &b).await.expect("drained");
    let soon = central
        .forget("edge-a", &a, delivered, 0)
        .await
        .expect("forget");
    assert_eq!(soon.gone_receipts, 0);
    let gone = central
        .forget("edge-a", &a, delivered, after_now().await)
        .await
        .expect("forget");
    assert_eq!(gone.gone_receipts, 40);
    assert_eq!(receipts(&central, "edge-b").await, (0, 40));
}
