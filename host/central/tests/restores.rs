//! A central restored from a backup: the restore is noticed by the first edge whose grant or
//! events central lacks (or declared by an operator), and from then on nothing new is granted
//! until every edge that may be selling has sent its grants again; grants sent again are
//! granted as they were.

use std::path::Path;

use cart_central::{Central, CentralError, GrantRequest, Known};

mod support;

/// Claims `edge_id` for a new process whose lease runs `lease_ms` from now; its incarnation.
async fn claim(central: &Central, edge_id: &str, lease_ms: i64) -> String {
    support::claim(central, edge_id, lease_ms).await.0
}

/// `edge_id`'s grant request `grant_id` for `units` of the sale's one SKU, knowing
/// `newest_grant` answered.
fn request(edge_id: &str, grant_id: &str, units: u32, newest_grant: Option<&str>) -> GrantRequest {
    GrantRequest {
        grant_id: grant_id.into(),
        edge_id: edge_id.into(),
        incarnation: format!("{edge_id}-process"),
        sale_id: "sale".into(),
        sku: "BAG".into(),
        requested: units,
        again: false,
        known: Known {
            delivered: None,
            newest_grant: newest_grant.map(Into::into),
        },
    }
}

/// Renews `edge_id`'s lease, knowing `newest_grant` answered; the restore it must reconcile
/// with, if any.
async fn renew(central: &Central, edge_id: &str, newest_grant: Option<&str>) -> Option<i64> {
    let known = Known {
        delivered: None,
        newest_grant: newest_grant.map(Into::into),
    };
    central
        .renew_lease(edge_id, &format!("{edge_id}-process"), 60_000, &known)
        .await
        .expect("renewed")
        .reconcile
}

/// Whom a refused grant waits for.
fn waiting_for(answer: Result<u32, CentralError>) -> String {
    match answer {
        Err(CentralError::Reconciling { waiting_for }) => waiting_for,
        other => panic!("granted while a restore is unreconciled: {other:?}"),
    }
}

/// A SQLite central with a sale of 100 units of one SKU, and a copy of it as of now.
async fn central_with_backup(dir: &Path) -> (Central, std::path::PathBuf) {
    let file = dir.join("central.db");
    let central = Central::connect(&format!("sqlite:{}", file.display()))
        .await
        .expect("central");
    support::load_bags(&central, 100).await;
    (central, file)
}

/// Copies the database at `file` as of now.
fn back_up(file: &Path, to: &Path) {
    rusqlite::Connection::open(file)
        .expect("opened")
        .execute("VACUUM INTO ?1", [to.to_str().expect("a UTF-8 path")])
        .expect("copied");
}

/// Puts `backup` in place of the central at `file`, as the README says: stopped, its log gone.
async fn restore(central: Central, file: &Path, backup: &Path) -> Central {
    drop(central);
    for log in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{log}", file.display()));
    }
    std::fs::copy(backup, file).expect("restored");
    Central::connect(&format!("sqlite:{}", file.display()))
        .await
        .expect("central, restored")
}

#[tokio::test]
async fn after_a_restore_nothing_new_is_granted_until_every_edge_has_sent_its_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (central, file) = central_with_backup(dir.path()).await;
    let (a, b) = (
        claim(&central, "edge-a", 60_000).await,
        claim(&central, "edge-b", 60_000).await,
    );
    // A process whose lease has lapsed, as every lease in a backup of some age has: central
    // cannot tell it from one that sells on, and waits for it too.
    let gone = claim(&central, "edge-gone", -120_000).await;
    assert_eq!(
        central
            .grant(&request("edge-a", "g1", 10, None))
            .await
            .expect("g1"),
        10
    );
    let backup = dir.path().join("central.backup.db");
    back_up(&file, &backup);
    assert_eq!(
        central
            .grant(&request("edge-a", "g2", 30, Some("g1")))
            .await
            .expect("g2"),
        30
    );
    let central = restore(central, &file, &backup).await;
    assert_eq!(
        central.stock_levels().await.expect("levels")[0].unallocated,
        90
    );

    // Central has lost g2, and counts its units unallocated: edge-b, which knows of no grant,
    // cannot tell; edge-a, which knows of g2, can.
    assert_eq!(
        renew(&central, "edge-b", None).await,
        None,
        "not noticed yet"
    );
    let restored_at = renew(&central, "edge-a", Some("g2"))
        .await
        .expect("noticed");
    assert_eq!(renew(&central, "edge-b", None).await, Some(restored_at));
    assert_eq!(
        waiting_for(central.grant(&request("edge-b", "g3", 50, None)).await),
        "edge-a"
    );

    // edge-a sends both again: the one central kept is answered as before, the lost one
    // taken again.
    let again = central
        .grant_again(&[
            request("edge-a", "g1", 10, None),
            request("edge-a", "g2", 30, None),
        ])
        .await
        .expect("sent again");
    assert_eq!(again, [10, 30]);
    assert_eq!(
        central.stock_levels().await.expect("levels")[0].unallocated,
        60
    );
    central
        .reconciled("edge-a", &a, restored_at)
        .await
        .expect("reconciled");
    assert_eq!(renew(&central, "edge-a", Some("g2")).await, None);
    assert_eq!(
        waiting_for(central.grant(&request("edge-b", "g3", 50, None)).await),
        "edge-b",
        "every edge that may be selling, the asker too"
    );
    // Never for a restore later than central noticed; and a grant sent "again" by an edge not
    // told to is a grant like any other.
    central
        .reconciled("edge-b", &b, restored_at + 3_600_000)
        .await
        .expect("answered");
    assert_eq!(
        renew(&central, "edge-b", None).await,
        Some(restored_at),
        "not reconciled"
    );
    let not_again = central
        .grant_again(&[request("edge-a", "g9", 5, None)])
        .await;
    assert!(
        matches!(not_again, Err(CentralError::Reconciling { .. })),
        "{not_again:?}"
    );
    central
        .reconciled("edge-b", &b, restored_at)
        .await
        .expect("reconciled");
    assert_eq!(
        waiting_for(central.grant(&request("edge-b", "g3", 80, None)).await),
        "edge-gone"
    );
    central
        .reconciled("edge-gone", &gone, restored_at)
        .await
        .expect("reconciled");
    assert_eq!(
        central
            .grant(&request("edge-b", "g3", 80, None))
            .await
            .expect("g3"),
        60,
        "what is left, not edge-a's units"
    );

    // An edge that keeps finding something missing (here a grant central never made) cannot
    // hold grants back again while central has just waited for one restore; an operator can.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        central
            .grant(&request("edge-b", "g4", 1, Some("nowhere")))
            .await
            .expect("g4"),
        0,
        "answered (none are left), not refused"
    );
    assert_eq!(renew(&central, "edge-b", Some("nowhere")).await, None);
    central.restored().await.expect("marked restored");
    let noticed = renew(&central, "edge-b", Some("g4"))
        .await
        .expect("the operator's restore");
    assert!(noticed > restored_at);
    assert_eq!(
        waiting_for(central.grant(&request("edge-b", "g5", 1, Some("g4"))).await),
        "edge-a"
    );
}
