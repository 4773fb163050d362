//! A central restored from a backup. Units granted since the backup look unallocated to it
//! until the edges that hold them send their grants again, and a grant made from them meanwhile
//! would sell them twice. So a restore is noticed as soon as an edge finds central behind what
//! it had acknowledged (or an operator says so), and from then on central grants nothing new
//! until every edge has sent its grants again, or [`WAIT_AT_MOST_MS`] has passed.

use crate::db::{Tx, clock, params};
use crate::time::Millis;
use crate::{CentralError, Known};

/// How long after a restore is noticed central waits for the edges to send their grants again
/// (each does at its next renewal, a fifth of its lease). It cannot tell which edges are still
/// selling (their leases are as old as the backup), so it waits for every edge in service; one
/// that never sends them (gone without draining, of a release from before this one, or one that
/// misbehaves) holds the fleet's grants back no longer than this.
pub const WAIT_AT_MOST_MS: Millis = 120_000;

/// Whether central has lost something an edge whose history it has applied up to `high_water`
/// had acknowledged: the events up to its delivered mark, or its newest grant.
pub(super) fn lost(tx: &mut dyn Tx, known: &Known, high_water: i64) -> Result<bool, CentralError> {
    Ok(known.delivered.is_some_and(|d| d > high_water)
        || grant_lost(tx, known.newest_grant.as_deref())?)
}

/// Whether central lacks a grant an edge had been answered.
pub(super) fn grant_lost(tx: &mut dyn Tx, grant_id: Option<&str>) -> Result<bool, CentralError> {
    match grant_id {
        Some(id) => Ok(tx
            .query_opt("SELECT 1 FROM grants WHERE grant_id = $1", params![id])?
            .is_none()),
        None => Ok(false),
    }
}

/// Who found central restored.
pub enum NoticedBy<'a> {
    /// An operator, who always tells of a new restore.
    Operator,
    /// The edge central knows by this name.
    Edge(&'a str),
    /// The process serving this history.
    History(&'a str),
}

/// Records that central was found restored, now: every edge must send its grants again. An
/// edge tells of a new restore only if it has sent its grants again since the last one (it
/// finds that one otherwise), and not while central still waits for the last one: an edge
/// that keeps finding something missing cannot keep the fleet's grants held back.
pub fn noticed(tx: &mut dyn Tx, by: NoticedBy<'_>) -> Result<(), CentralError> {
    let now = clock(tx)?;
    let edge = "SELECT reconciled_at FROM edges WHERE retired_at IS NULL AND";
    let (whose, who) = match by {
        NoticedBy::Operator => {
            tx.exec(
                "UPDATE restores SET restored_at = $1 WHERE id = 1 AND restored_at < $1",
                params![now],
            )?;
            return Ok(());
        }
        NoticedBy::Edge(name) => (format!("{edge} edge_id = $3"), name),
        NoticedBy::History(history) => (format!("{edge} history_id = $3"), history),
    };
    tx.exec(
        &format!(
            "UPDATE restores SET restored_at = $1 WHERE id = 1 AND restored_at < $2 \
               AND restored_at <= ({whose})"
        ),
        params![now, now - WAIT_AT_MOST_MS, who],
    )?;
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
/// noticed at `restored_at` (never a later one than central has noticed).
pub(super) fn reconciled(
    tx: &mut dyn Tx,
    name: &str,
    restored_at: Millis,
) -> Result<(), CentralError> {
    tx.exec(
        "UPDATE edges SET reconciled_at = $2 WHERE edge_id = $1 AND reconciled_at < $2 \
           AND $2 <= (SELECT restored_at FROM restores WHERE id = 1)",
        params![name, restored_at],
    )?;
    Ok(())
}

/// An edge in service that has not sent its grants again since the last restore: central
/// grants nothing new until there is none, or until [`WAIT_AT_MOST_MS`] has passed.
pub(super) fn waited_for(tx: &mut dyn Tx) -> Result<Option<String>, CentralError> {
    let Some(row) = tx.query_opt(
        "SELECT e.edge_id, r.restored_at FROM edges e, restores r \
         WHERE e.reconciled_at < r.restored_at AND e.retired_at IS NULL \
           AND e.drained_at IS NULL \
         ORDER BY e.edge_id LIMIT 1",
        params![],
    )?
    else {
        return Ok(None);
    };
    // Central's clock is read only while a restore is being made whole.
    if row.int(1)? <= clock(tx)? - WAIT_AT_MOST_MS {
        return Ok(None);
    }
    row.text(0).map(Some)
}
