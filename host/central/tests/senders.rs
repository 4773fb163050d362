//! Who central takes an edge's outbox events from: the process that serves their history,
//! delivering them itself (its key, checked once for the batch), or anyone passing on events
//! that key signed (the queue's relay). No one else, and nothing unsigned that passed through
//! other hands.

use cart_central::events::{Delivery, EventKey, OutboxEvent, Sender};
use cart_central::{Central, CentralError};

mod support;

/// Edge-a's events `from..=to`: carts let go of.
fn released(from: i64, to: i64) -> Vec<Delivery> {
    (from..=to)
        .map(|seq| {
            Delivery::unsigned(
                seq,
                OutboxEvent::HoldChanged {
                    cart_id: format!("cart-{seq}"),
                    customer_id: "ann".into(),
                    sale_id: "sale".into(),
                    sku: "BAG".into(),
                    quantity: 0,
                    expires_at: 0,
                },
            )
        })
        .collect()
}

/// The same rows, each signed by `key`.
fn signed(key: &EventKey, rows: Vec<Delivery>) -> Vec<Delivery> {
    rows.into_iter()
        .map(|d| key.sign("edge-a-history", d.seq, d.event))
        .collect()
}

async fn deliver(
    central: &Central,
    sender: Sender<'_>,
    batch: &[Delivery],
) -> Result<i64, CentralError> {
    central
        .deliver("edge-a", "edge-a-history", sender, batch)
        .await
        .map(|marks| marks.after)
}

#[tokio::test]
async fn events_come_from_the_historys_process_or_with_its_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("central.db").display());
    let central = Central::connect(&url).await.expect("central");
    support::load_bags(&central, 10).await;
    let (_, key) = support::claim(&central, "edge-a", 60_000).await;
    let stranger = EventKey::generate();

    // The process itself, unsigned rows.
    let own = deliver(&central, Sender::Process(&key), &released(1, 3)).await;
    assert_eq!(own.expect("the process's own batch"), 3);
    // Another process, even one with the same rows signed by the right key: its key is not the
    // history's.
    let other = deliver(&central, Sender::Process(&stranger), &released(4, 5)).await;
    assert!(
        matches!(other, Err(CentralError::BadSignature { seq: 4, .. })),
        "{other:?}"
    );
    // Even with a batch central has applied already, or one that starts past a gap: neither
    // tells central anything, nor does the stranger get to touch the history's row.
    let old = deliver(&central, Sender::Process(&stranger), &released(1, 3)).await;
    assert!(
        matches!(old, Err(CentralError::BadSignature { seq: 1, .. })),
        "{old:?}"
    );
    let gapped = deliver(&central, Sender::Process(&stranger), &released(9, 9)).await;
    assert!(
        matches!(gapped, Err(CentralError::BadSignature { seq: 9, .. })),
        "{gapped:?}"
    );
    let other_signed = signed(&key, released(4, 5));
    let other = deliver(&central, Sender::Process(&stranger), &other_signed).await;
    assert!(
        matches!(other, Err(CentralError::BadSignature { .. })),
        "{other:?}"
    );
    // Passed on: each row's signature is what counts.
    let unsigned = deliver(&central, Sender::Signatures, &released(4, 5)).await;
    assert!(
        matches!(unsigned, Err(CentralError::BadSignature { seq: 4, .. })),
        "{unsigned:?}"
    );
    let forged = deliver(
        &central,
        Sender::Signatures,
        &signed(&stranger, released(4, 5)),
    )
    .await;
    assert!(
        matches!(forged, Err(CentralError::BadSignature { .. })),
        "{forged:?}"
    );
    // One forged row among signed ones: none of the batch applies.
    let mut mixed = signed(&key, released(4, 5));
    mixed.extend(signed(&stranger, released(6, 6)));
    let mixed = deliver(&central, Sender::Signatures, &mixed).await;
    assert!(
        matches!(mixed, Err(CentralError::BadSignature { seq: 6, .. })),
        "{mixed:?}"
    );
    let passed_on = deliver(&central, Sender::Signatures, &signed(&key, released(4, 5))).await;
    assert_eq!(passed_on.expect("signed rows passed on"), 5);
    let snapshot = central.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.edges["edge-a"].events_applied, 5);
}
