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
use crate::db::clock;
use crate::db::{Tx, params};
use crate::time::Millis;
use crate::{CentralError, Forgotten};

/// Receipts deleted per statement, so that no delivery waits long behind a prune.
pub const BATCH: u64 = 1_000;

/// Deletes up to [`BATCH`] receipts of the caller's history applied before `before` (never
/// later than central's clock), of events it has marked delivered (`delivered`); then as many
/// of one drained edge's that has not been seen since `before`; then the cart lists of the
/// hand-offs the caller took before `before`. How many receipts went.
///
/// A drained edge delivered its whole outbox before it left, so none of its receipts is still
/// to be compared. A history retired by a take-over is not so: its folder may come back with
/// events central applied that it never marked delivered. Only its own process forgets its
/// receipts, as any caller does, up to what it marked.
pub fn forget(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    delivered: i64,
    before: Millis,
    now: Millis,
) -> Result<Forgotten, CentralError> {
    let caller = fence(tx, edge_id, incarnation, now, true)?;
    let before = before.min(clock(tx)?);
    let mut forgotten = Forgotten {
        receipts: forget_receipts(tx, &caller.name, delivered, before)?,
        ..Forgotten::default()
    };
    let gone = tx.query_opt(
        "SELECT edge_id FROM edges \
         WHERE drained_at IS NOT NULL AND retired_at IS NULL AND last_seen < $1 \
           AND high_water > events_pruned \
         ORDER BY edge_id LIMIT 1",
        params![before],
    )?;
    if let Some(gone) = gone {
        // Its row first, as a claim of the id takes it, and still drained under the lock: an
        // edge that came back under the id since is no longer gone.
        let gone_id = gone.text(0)?;
        let locked = tx.query_opt(
            "UPDATE edges SET events_pruned = events_pruned \
             WHERE edge_id = $1 AND drained_at IS NOT NULL AND retired_at IS NULL \
               AND last_seen < $2 \
             RETURNING high_water",
            params![&gone_id, before],
        )?;
        if let Some(row) = locked {
            forgotten.gone_receipts = forget_receipts(tx, &gone_id, row.int(0)?, before)?;
        }
    }
    forgotten.handoff_carts = tx.exec(
        "DELETE FROM handoff_carts WHERE handoff_id IN (\
           SELECT handoff_id FROM handoffs WHERE to_edge = $1 AND taken_at < $2)",
        params![&caller.name, before],
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
