//! A central restored from a backup. Units granted since the backup look unallocated to it
//! until the edges that hold them send their grants again, and a grant made from them meanwhile
//! would sell them twice. So a restore is noticed as soon as an edge finds central behind what
//! it had acknowledged (or an operator says so), and from then on central grants nothing new
//! until every edge that may be selling has sent its grants again.

use crate::db::{Tx, clock, params};
use crate::time::Millis;
use crate::{CentralError, Known};

/// An edge whose lease lapsed longer ago than this before now is not selling and is not waited
/// for: it sends its grants again before it sells on (see [`to_reconcile`]). The grace keeps an
/// edge that missed a renewal or two among those waited for.
const LAPSED_FOR_MS: Millis = 60_000;

/// How long after a restore is noticed central waits for the edges to send their grants again
/// (each does at its next renewal, a fifth of its lease): an edge that never does (a release
/// from before this one, mid-rollout, or one that misbehaves) holds the fleet's grants back no
/// longer than this.
const WAIT_AT_MOST_MS: Millis = 120_000;

/// Whether central has lost something the edge it knows as `name` had acknowledged: the events
/// up to its delivered mark, or its newest grant.
pub(super) fn lost(tx: &mut dyn Tx, name: &str, known: &Known) -> Result<bool, CentralError> {
    if let Some(delivered) = known.delivered {
        let high_water = tx
            .query_opt(
                "SELECT high_water FROM edges WHERE edge_id = $1",
                params![name],
            )?
            .map_or(Ok(0), |r| r.int(0))?;
        if high_water < delivered {
            return Ok(true);
        }
    }
    match &known.newest_grant {
        Some(id) => Ok(tx
            .query_opt("SELECT 1 FROM grants WHERE grant_id = $1", params![id])?
            .is_none()),
        None => Ok(false),
    }
}

/// Records that central was found restored, now, by the edge known as `by` (or by an operator):
/// every edge must send its grants again. An edge that has not yet sent its grants again since
/// the restore last noticed finds that one, and changes nothing: only an edge that had, or an
/// operator, can tell of another.
pub fn noticed(tx: &mut dyn Tx, by: Option<&str>) -> Result<(), CentralError> {
    let now = clock(tx)?;
    match by {
        None => tx.exec(
            "UPDATE restores SET restored_at = $1 WHERE id = 1 AND restored_at < $1",
            params![now],
        )?,
        Some(name) => tx.exec(
            "UPDATE restores SET restored_at = $1 WHERE id = 1 AND restored_at < $1 \
               AND restored_at <= (SELECT reconciled_at FROM edges WHERE edge_id = $2)",
            params![now, name],
        )?,
    };
    Ok(())
}

/// When the restore the edge known as `name` has not yet sent its grants again since was
/// noticed, if there is one.
pub(super) fn to_reconcile(tx: &mut dyn Tx, name: &str) -> Result<Option<Millis>, CentralError> {
    tx.query_opt(
        "SELECT r.restored_at FROM restores r, edges e \
         WHERE e.edge_id = $1 AND e.reconciled_at < r.restored_at",
        params![name],
    )?
    .map(|r| r.int(0))
    .transpose()
}

/// Records that the edge known as `name` has sent every grant it holds again since the restore
/// noticed at `restored_at`.
pub(super) fn reconciled(
    tx: &mut dyn Tx,
    name: &str,
    restored_at: Millis,
) -> Result<(), CentralError> {
    tx.exec(
        "UPDATE edges SET reconciled_at = $2 WHERE edge_id = $1 AND reconciled_at < $2",
        params![name, restored_at],
    )?;
    Ok(())
}

/// An edge that may be selling and has not sent its grants again since the last restore:
/// central grants nothing new until there is none, or until [`WAIT_AT_MOST_MS`] has passed.
pub(super) fn waited_for(tx: &mut dyn Tx, now: Millis) -> Result<Option<String>, CentralError> {
    tx.query_opt(
        "SELECT e.edge_id FROM edges e, restores r \
         WHERE e.reconciled_at < r.restored_at AND r.restored_at > $2 \
           AND e.retired_at IS NULL AND e.drained_at IS NULL AND e.lease_until > $1 \
         ORDER BY e.edge_id LIMIT 1",
        params![now - LAPSED_FOR_MS, now - WAIT_AT_MOST_MS],
    )?
    .map(|r| r.text(0))
    .transpose()
}
