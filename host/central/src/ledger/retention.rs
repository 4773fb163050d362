//! What central forgets: its receipts of applied events, and the cart lists of hand-offs the
//! receiving edge has taken, once they are past the edge's retention. Orders, holds, grants,
//! returns and unit moves are the business record and stay.
//!
//! A receipt (`applied_events`) keeps an event from being applied twice only until the history's
//! high-water mark passes it; after that it serves the audit, which counts receipts, and an edge
//! back from a crash, which compares the events it had not yet marked delivered with theirs.
//! So an edge forgets only receipts of events it has marked delivered, and each one forgotten
//! is counted in `edges.events_pruned`: receipts kept plus receipts pruned is still the mark.

use super::units::fence;
use crate::db::{Tx, params};
use crate::time::Millis;
use crate::{CentralError, Forgotten};

/// Receipts deleted per statement, so that no delivery waits long behind a prune.
pub const BATCH: u64 = 1_000;

/// Deletes up to [`BATCH`] receipts of the caller's history applied before `before`, of events
/// it has marked delivered (`delivered`); then as many of histories that are gone (drained, or
/// retired by a take-over) and have not been seen since `before`; then the cart lists of the
/// hand-offs the caller took before `before`. How many receipts went.
pub fn forget(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    delivered: i64,
    before: Millis,
    now: Millis,
) -> Result<Forgotten, CentralError> {
    let caller = fence(tx, edge_id, incarnation, now, true)?;
    let mut forgotten = Forgotten {
        receipts: forget_receipts(tx, &caller.name, delivered, before)?,
        ..Forgotten::default()
    };
    let gone = tx.query(
        "SELECT edge_id, high_water FROM edges \
         WHERE (retired_at IS NOT NULL OR drained_at IS NOT NULL) AND last_seen < $1 \
           AND high_water > events_pruned \
         ORDER BY edge_id LIMIT 10",
        params![before],
    )?;
    for r in &gone {
        forgotten.gone_receipts += forget_receipts(tx, &r.text(0)?, r.int(1)?, before)?;
    }
    forgotten.handoff_carts = tx.exec(
        "DELETE FROM handoff_carts WHERE handoff_id IN (\
           SELECT handoff_id FROM handoffs WHERE to_edge = $1 AND taken_at < $2)",
        params![edge_id, before],
    )?;
    Ok(forgotten)
}

/// Deletes up to [`BATCH`] of `name`'s receipts up to `upto` applied before `before`, oldest
/// first, and counts them.
fn forget_receipts(
    tx: &mut dyn Tx,
    name: &str,
    upto: i64,
    before: Millis,
) -> Result<u64, CentralError> {
    let Some(first) = tx
        .query_opt(
            "SELECT MIN(seq) FROM applied_events WHERE edge_id = $1",
            params![name],
        )?
        .and_then(|r| r.int(0).ok())
    else {
        return Ok(0);
    };
    let gone = tx.exec(
        "DELETE FROM applied_events WHERE edge_id = $1 AND seq <= $2 AND applied_at < $3",
        params![name, upto.min(first + BATCH.cast_signed() - 1), before],
    )?;
    if gone > 0 {
        tx.exec(
            "UPDATE edges SET events_pruned = events_pruned + $2 WHERE edge_id = $1",
            params![name, i64::try_from(gone).unwrap_or(i64::MAX)],
        )?;
    }
    Ok(gone)
}
