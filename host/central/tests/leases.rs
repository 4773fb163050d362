//! A take-over waits for the old process's lease, and gets the id once it lapses: the old
//! process cannot renew a lapsed lease while the take-over keeps asking (across a flaky link it
//! used to revive it at each renewal, and the take-over waited for ever). Without a take-over
//! waiting, a process whose lease lapsed renews it.

use cart_central::events::EventKey;
use cart_central::{Central, CentralError, Claim, Known};

mod support;

/// A take-over of `edge_id` from another folder, with its own history, as `serve --take-over`
/// claims: first as it is, writing nothing off (`write_off` false), and only when central finds
/// the histories differ after the lease has lapsed, again with the old history written off.
fn take_over(edge_id: &str, write_off: bool) -> Claim {
    Claim {
        edge_id: edge_id.into(),
        url: format!("http://{edge_id}-new.invalid"),
        history_id: format!("{edge_id}-new-history"),
        incarnation: format!("{edge_id}-new-process"),
        previous_incarnation: None,
        local_seq: 0,
        lease_ms: 60_000,
        take_over: write_off,
        taking_over: true,
        folder: "new".into(),
        public_key: EventKey::generate().public_key(),
    }
}

async fn renew(central: &Central, edge_id: &str) -> Result<(), CentralError> {
    let process = format!("{edge_id}-process");
    central
        .renew_lease(edge_id, &process, 1_000, &Known::default())
        .await
        .map(|_| ())
}

async fn lapse() {
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
}

#[tokio::test]
async fn a_lapsed_lease_goes_to_the_take_over_waiting_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("central.db").display());
    let central = Central::connect(&url).await.expect("central");
    support::claim(&central, "edge-a", 1_000).await;
    support::claim(&central, "edge-b", 1_000).await;

    // Asked while the lease runs: the take-over waits.
    let early = central.claim_edge(&take_over("edge-a", false)).await;
    assert!(
        matches!(early, Err(CentralError::EdgeRunning { .. })),
        "{early:?}"
    );
    renew(&central, "edge-a").await.expect("renewed in time");

    // The lease lapses (the old process cut off for a moment): it may not revive it.
    lapse().await;
    let revived = renew(&central, "edge-a").await;
    assert!(
        matches!(revived, Err(CentralError::Superseded(_))),
        "a lapsed lease renewed while a take-over waits: {revived:?}"
    );
    let mismatch = central.claim_edge(&take_over("edge-a", false)).await;
    assert!(
        matches!(mismatch, Err(CentralError::HistoryMismatch { .. })),
        "{mismatch:?}"
    );
    let claimed = central
        .claim_edge(&take_over("edge-a", true))
        .await
        .expect("the take-over gets the id");
    assert!(claimed.retired.is_some(), "{claimed:?}");

    // No take-over waits for edge-b: its process renews a lapsed lease.
    lapse().await;
    renew(&central, "edge-b")
        .await
        .expect("a lapsed lease renewed with no take-over waiting");
}
