//! Edges and their units: claiming an edge id, retiring a history, leases and the fence that
//! refuses superseded processes, grants and returns of units, and the SKUs edges want back.

use super::restores::{self, NoticedBy};
use crate::db::{Statement, Tx, clock, params};
use crate::time::Millis;
use crate::{
    CentralError, Claim, Claimed, GrantRequest, Known, Renewed, SkuKey, UnitReturn, WANTED_FOR_MS,
};

/// Claims an edge id for a process: records its history, incarnation, folder, key, URL and
/// lease. Refused while another process holds the lease (the same process claiming again, or
/// the next process on the very database file its predecessor ran on, after a crash, is no
/// other), and when this folder's history is not the one central has applied (unless the
/// operator takes over, writing the old history off once its lease has certainly lapsed).
pub fn claim_edge(tx: &mut dyn Tx, claim: &Claim) -> Result<Claiming, CentralError> {
    let now = clock(tx)?;
    // The folder of a history a take-over wrote off, started again: it may deliver what it
    // holds and give its units back, under the retired id, and nothing more.
    let retired_row = tx.query_opt(
        "SELECT edge_id, folder FROM edges WHERE history_id = $1 AND retired_at IS NOT NULL",
        params![&claim.history_id],
    )?;
    if let Some(row) = retired_row {
        let (name, folder) = (row.text(0)?, row.text(1)?);
        if !is_retired_name(&name, &claim.edge_id) || (folder != claim.folder && !folder.is_empty())
        {
            return Err(CentralError::HistoryMismatch {
                edge_id: claim.edge_id.clone(),
                central_history: String::new(),
                central_seq: 0,
                local_history: claim.history_id.clone(),
                local_seq: claim.local_seq,
            });
        }
        tx.exec(
            "UPDATE edges SET incarnation = $2, last_seen = $3 WHERE history_id = $1",
            params![&claim.history_id, &claim.incarnation, now],
        )?;
        register_key(tx, claim)?;
        return Ok(Claiming::WrittenOff { retired: name });
    }
    let current = tx.query_opt(
        "UPDATE edges SET last_seen = last_seen WHERE edge_id = $1 \
         RETURNING history_id, incarnation, lease_until, high_water, folder",
        params![&claim.edge_id],
    )?;
    let mut retired = None;
    if let Some(row) = current {
        let (history, incarnation, lease_until, high_water, folder) = (
            row.text(0)?,
            row.text(1)?,
            row.int(2)?,
            row.int(3)?,
            row.text(4)?,
        );
        // A copy of the folder names the same previous process, but not the same file.
        let successor = claim.previous_incarnation.as_deref() == Some(incarnation.as_str())
            && (folder == claim.folder || folder.is_empty());
        let ours = incarnation == claim.incarnation || successor;
        if !ours && lease_until > now {
            if claim.taking_over {
                // Once the lease lapses, its holder may not renew it while this one waits.
                tx.exec(
                    "UPDATE edges SET take_over_asked_at = $2 WHERE edge_id = $1",
                    params![&claim.edge_id, now],
                )?;
            }
            return Ok(Claiming::Waiting(CentralError::EdgeRunning {
                edge_id: claim.edge_id.clone(),
                incarnation,
                lease_until,
                left_ms: lease_until - now,
            }));
        }
        let same_history = history == claim.history_id && claim.local_seq >= high_water;
        if same_history {
            // A drained edge that starts again is back in the registry.
            tx.exec(
                "UPDATE edges SET url = $2, incarnation = $3, lease_until = $4, last_seen = $5, \
                   drained_at = NULL, folder = $6 WHERE edge_id = $1",
                params![
                    &claim.edge_id,
                    &claim.url,
                    &claim.incarnation,
                    now + claim.lease_ms,
                    now,
                    &claim.folder
                ],
            )?;
            register_key(tx, claim)?;
            return Ok(Claiming::Claimed(Claimed {
                high_water,
                retired: None,
                lease_until: now + claim.lease_ms,
                catalog_version: super::calendar::catalog_version(tx)?,
            }));
        }
        if !claim.take_over {
            return Err(CentralError::HistoryMismatch {
                edge_id: claim.edge_id.clone(),
                central_history: history,
                central_seq: high_water,
                local_history: claim.history_id.clone(),
                local_seq: claim.local_seq,
            });
        }
        retired = Some(retire(tx, &claim.edge_id, &history, now)?);
    }
    // A new history has been granted nothing central could have lost.
    tx.exec(
        "INSERT INTO edges (edge_id, url, history_id, incarnation, lease_until, last_seen, \
           folder, reconciled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $6)",
        params![
            &claim.edge_id,
            &claim.url,
            &claim.history_id,
            &claim.incarnation,
            now + claim.lease_ms,
            now,
            &claim.folder
        ],
    )?;
    register_key(tx, claim)?;
    Ok(Claiming::Claimed(Claimed {
        high_water: 0,
        retired,
        lease_until: now + claim.lease_ms,
        catalog_version: super::calendar::catalog_version(tx)?,
    }))
}

/// What a claim that central answers comes to. A written-off history's folder is let in to
/// deliver and give back: its new key and incarnation must be stored, and so must a waiting
/// take-over's asking, so neither is an error that rolls the transaction back (the caller
/// turns them into [`CentralError::Retired`] and the `EdgeRunning` carried).
pub enum Claiming {
    Claimed(Claimed),
    WrittenOff { retired: String },
    Waiting(CentralError),
}

/// How long a take-over's asking keeps a lapsed lease from being renewed: a waiting take-over
/// asks again at least every five seconds.
const TAKE_OVER_ASKS_WITHIN_MS: Millis = 10_000;

/// Records the claiming process's event key among its history's.
fn register_key(tx: &mut dyn Tx, claim: &Claim) -> Result<(), CentralError> {
    tx.exec(
        "INSERT INTO history_keys (history_id, public_key) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
        params![&claim.history_id, &claim.public_key],
    )?;
    Ok(())
}

/// Writes a history off: its ledger moves to a retired id and the holds of its lost carts are
/// released. Its units stay with it: the process that served it may have sold some of them in
/// the moments before its lease lapsed, on the far side of a partition, and those orders reach
/// central only when that process, or its folder, delivers them. A retired history still
/// delivers its outbox and gives units back; it is never granted more. The retired id.
fn retire(
    tx: &mut dyn Tx,
    edge_id: &str,
    history: &str,
    now: Millis,
) -> Result<String, CentralError> {
    let retired = format!("{edge_id}~{}", &history[..history.len().min(12)]);
    for table in [
        "grants",
        "unit_returns",
        "applied_events",
        "holds",
        "orders",
    ] {
        tx.exec(
            &format!("UPDATE {table} SET edge_id = $2 WHERE edge_id = $1"),
            params![edge_id, &retired],
        )?;
    }
    for column in ["from_edge", "to_edge"] {
        tx.exec(
            &format!("UPDATE unit_moves SET {column} = $2 WHERE {column} = $1"),
            params![edge_id, &retired],
        )?;
    }
    tx.exec("DELETE FROM holds WHERE edge_id = $1", params![&retired])?;
    tx.exec(
        "UPDATE edge_units SET edge_id = $2, held = 0 WHERE edge_id = $1",
        params![edge_id, &retired],
    )?;
    tx.exec(
        "UPDATE edges SET edge_id = $2, url = '', lease_until = 0, retired_at = $3 \
         WHERE edge_id = $1",
        params![edge_id, &retired, now],
    )?;
    Ok(retired)
}

/// Extends a process's lease on its edge id by `lease_ms` from now; refused once another
/// process has the id, and once the lease has lapsed while a take-over waits for it. The catalog's version, so that the edge knows whether its calendar is
/// current before it sells on under the new lease, and the history's high-water mark, so that
/// it notices a central restored from a backup that lost events it had applied. A central that
/// has lost what the edge `known`s it had notices that it was restored; the answer says whether
/// the edge must send its grants again.
pub fn renew_lease(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    lease_ms: Millis,
    known: &Known,
) -> Result<Renewed, CentralError> {
    let now = clock(tx)?;
    let high_water = tx
        .query_opt(
            "UPDATE edges SET lease_until = $3, last_seen = $4 \
             WHERE edge_id = $1 AND incarnation = $2 AND retired_at IS NULL \
               AND NOT (lease_until <= $4 AND take_over_asked_at > $5) \
             RETURNING high_water",
            params![
                edge_id,
                incarnation,
                now + lease_ms,
                now,
                now - TAKE_OVER_ASKS_WITHIN_MS
            ],
        )?
        .ok_or_else(|| CentralError::Superseded(edge_id.to_owned()))?
        .int(0)?;
    if restores::lost(tx, known, high_water)? {
        restores::noticed(tx, NoticedBy::Edge(edge_id))?;
    }
    Ok(Renewed {
        catalog_version: super::calendar::catalog_version(tx)?,
        high_water,
        reconcile: restores::to_reconcile(tx, edge_id)?,
    })
}

/// The process serving `edge_id` has sent every grant it holds again since the restore noticed
/// at `restored_at`: central may grant again once every edge in service has.
pub fn reconciled(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    restored_at: Millis,
) -> Result<(), CentralError> {
    let now = clock(tx)?;
    let caller = fence(tx, edge_id, incarnation, now, false)?;
    restores::reconciled(tx, &caller.name, restored_at)
}

/// Who is calling, as the fence finds it: the name its ledger rows carry (a retired history's
/// is `<edge_id>~<history>`), whether it still holds the edge id, and how far central has
/// applied its history's outbox.
pub(super) struct Caller {
    pub name: String,
    pub retired: bool,
    pub high_water: i64,
}

/// Refuses calls from a process that is not the one serving `edge_id`'s current history, or
/// (`may_be_retired`) the last one that served a history since written off, which may still
/// deliver what it holds and give units back.
pub(super) fn fence(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    now: Millis,
    may_be_retired: bool,
) -> Result<Caller, CentralError> {
    let row = tx.query_opt(
        "UPDATE edges SET last_seen = $2 WHERE incarnation = $1 \
         RETURNING edge_id, CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, high_water",
        params![incarnation, now],
    )?;
    let caller = match row {
        Some(r) => Caller {
            name: r.text(0)?,
            retired: r.int(1)? == 1,
            high_water: r.int(2)?,
        },
        None => return Err(CentralError::Superseded(edge_id.to_owned())),
    };
    let named = caller.name == edge_id || is_retired_name(&caller.name, edge_id);
    if !named || (caller.retired && !may_be_retired) {
        return Err(CentralError::Superseded(edge_id.to_owned()));
    }
    Ok(caller)
}

/// Whether `name` is a retired history of `edge_id`.
pub(super) fn is_retired_name(name: &str, edge_id: &str) -> bool {
    name.strip_prefix(edge_id)
        .is_some_and(|rest| rest.starts_with('~'))
}

/// What central answers a grant request that it may answer.
pub enum Granting {
    Granted(u32),
    /// Central was restored from a backup, and this edge (the first of those it waits for) has
    /// not sent its grants again yet: nothing new is granted until it has. An answer, not an
    /// error, so that a restore this request noticed stays noticed.
    WaitingFor(String),
}

/// Grants up to the requested units from what is unallocated; the same grant id always gets
/// the same answer. A sale that has ended grants nothing, and after a restore nothing new is
/// granted until every edge in service has sent its grants again (see [`restores`]); a grant
/// an edge told to sends again is granted as it was, from what is unallocated, ended sale or
/// not.
pub fn grant(tx: &mut dyn Tx, req: &GrantRequest, now: Millis) -> Result<Granting, CentralError> {
    let caller = fence(tx, &req.edge_id, &req.incarnation, now, false)?;
    // The grant alone: an edge's delivered mark is read at its renewal.
    if restores::grant_lost(tx, req.known.newest_grant.as_deref())? {
        restores::noticed(tx, NoticedBy::Edge(&caller.name))?;
    }
    // Sent again only by an edge central has told to: from any other, a grant like any other.
    let again = req.again && restores::to_reconcile(tx, &caller.name)?.is_some();
    // The SKU's row lock orders every grant of it, retries of the same id included.
    let locked = tx.exec(
        "UPDATE skus SET wanted_at = wanted_at WHERE sale_id = $1 AND sku = $2",
        params![&req.sale_id, &req.sku],
    )?;
    if locked == 0 {
        return Err(CentralError::UnknownSku(
            req.sale_id.clone(),
            req.sku.clone(),
        ));
    }
    if let Some(earlier) = tx.query_opt(
        "SELECT granted FROM grants WHERE grant_id = $1",
        params![&req.grant_id],
    )? {
        return earlier.count(0).map(Granting::Granted);
    }
    if !again && let Some(edge) = restores::waited_for(tx)? {
        return Ok(Granting::WaitingFor(edge));
    }
    let row = tx
        .query_opt(
            "SELECT k.unallocated, s.ends_at FROM skus k JOIN sales s ON s.sale_id = k.sale_id \
             WHERE k.sale_id = $1 AND k.sku = $2",
            params![&req.sale_id, &req.sku],
        )?
        .ok_or_else(|| CentralError::UnknownSku(req.sale_id.clone(), req.sku.clone()))?;
    let (unallocated, ends_at) = (row.int(0)?, row.int(1)?);
    let requested = i64::from(req.requested);
    let ended = now >= ends_at && !again;
    let granted = if ended { 0 } else { requested.min(unallocated) };
    // Asked for more than was left: others should give back what they are not selling.
    tx.exec(
        "UPDATE skus SET unallocated = unallocated - $3, \
           wanted_at = CASE WHEN $4 THEN $5 ELSE wanted_at END \
         WHERE sale_id = $1 AND sku = $2",
        params![
            &req.sale_id,
            &req.sku,
            granted,
            granted < requested && now < ends_at && !again,
            now
        ],
    )?;
    tx.exec(
        "INSERT INTO grants (grant_id, edge_id, sale_id, sku, requested, granted, granted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params![
            &req.grant_id,
            &req.edge_id,
            &req.sale_id,
            &req.sku,
            requested,
            granted,
            now
        ],
    )?;
    count_units(tx, &req.edge_id, &req.sale_id, &req.sku, granted, 0, 0)?;
    u32::try_from(granted)
        .map(Granting::Granted)
        .map_err(|_| CentralError::Decode(format!("granted {granted}")))
}

/// Takes back units an edge returns; the same return id is taken once. An edge gives back at
/// most what it was allotted and has not sold or does not hold, as central knows it: units
/// that were never its own are refused.
///
/// A return is taken only once central has applied the outbox events the edge wrote before
/// it (`after_seq`): the edge's free units are what is left after its holds and sales, and
/// central's count of what it holds and sold is right only from there on. Taken earlier, a
/// hold central has not seen yet could be counted against units already given back: central
/// would refuse that hold for ever, and the edge's order behind it with it.
pub fn return_units(tx: &mut dyn Tx, ret: &UnitReturn, now: Millis) -> Result<(), CentralError> {
    let caller = fence(tx, &ret.edge_id, &ret.incarnation, now, true)?;
    // Before the SKU's lock, which every grant of it waits for: an early return is asked again.
    // (A return taken already was taken once central had its events, and a restored central
    // that has the return has them too.)
    if caller.high_water < ret.after_seq {
        return Err(CentralError::ReturnEarly {
            edge_id: caller.name,
            applied: caller.high_water,
            needed: ret.after_seq,
        });
    }
    // The SKU's row lock orders this against grants and other returns of it.
    tx.exec(
        "UPDATE skus SET wanted_at = wanted_at WHERE sale_id = $1 AND sku = $2",
        params![&ret.sale_id, &ret.sku],
    )?;
    if tx
        .query_opt(
            "SELECT 1 FROM unit_returns WHERE return_id = $1",
            params![&ret.return_id],
        )?
        .is_some()
    {
        return Ok(());
    }
    let spare = spare_units(tx, &caller.name, &ret.sale_id, &ret.sku)?;
    if i64::from(ret.quantity) > spare {
        return Err(CentralError::ReturnRefused {
            edge_id: caller.name,
            sku: format!("{}/{}", ret.sale_id, ret.sku),
            quantity: ret.quantity,
            spare,
        });
    }
    tx.exec(
        "INSERT INTO unit_returns (return_id, edge_id, sale_id, sku, quantity, returned_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        params![
            &ret.return_id,
            &caller.name,
            &ret.sale_id,
            &ret.sku,
            ret.quantity,
            now
        ],
    )?;
    tx.exec(
        "UPDATE skus SET unallocated = unallocated + $3 WHERE sale_id = $1 AND sku = $2",
        params![&ret.sale_id, &ret.sku, ret.quantity],
    )?;
    count_units(
        tx,
        &caller.name,
        &ret.sale_id,
        &ret.sku,
        -i64::from(ret.quantity),
        0,
        0,
    )
}

/// Units of a SKU allotted to an edge that it neither holds nor sold, as central knows them.
pub(super) fn spare_units(
    tx: &mut dyn Tx,
    edge: &str,
    sale_id: &str,
    sku: &str,
) -> Result<i64, CentralError> {
    tx.query_opt(
        "SELECT allotted - held - sold FROM edge_units \
         WHERE edge_id = $1 AND sale_id = $2 AND sku = $3",
        params![edge, sale_id, sku],
    )?
    .map_or(Ok(0), |r| r.int(0))
}

/// Moves an edge's counters of one SKU (see `edge_units` in the schema, whose CHECK refuses
/// holding and selling more than was allotted).
pub(super) fn count_units(
    tx: &mut dyn Tx,
    edge: &str,
    sale_id: &str,
    sku: &str,
    allotted: i64,
    held: i64,
    sold: i64,
) -> Result<(), CentralError> {
    if (allotted, held, sold) == (0, 0, 0) {
        return Ok(());
    }
    tx.exec_all(&counting(edge, sale_id, sku, [allotted, held, sold]))
}

/// The statements that move an edge's counters of one SKU by `[allotted, held, sold]`, for
/// [`Tx::exec_all`]: a row of zeros first, which the CHECK takes (an insert's proposed row is
/// checked before its conflict is found), so that the move is one update, checked as a whole.
pub(super) fn counting<'a>(
    edge: &'a str,
    sale_id: &'a str,
    sku: &'a str,
    [allotted, held, sold]: [i64; 3],
) -> [Statement<'a>; 2] {
    [
        (
            "INSERT INTO edge_units (edge_id, sale_id, sku) VALUES ($1, $2, $3) \
             ON CONFLICT (edge_id, sale_id, sku) DO NOTHING",
            params![edge, sale_id, sku].to_vec(),
        ),
        (
            "UPDATE edge_units SET allotted = allotted + $4, held = held + $5, \
               sold = sold + $6 WHERE edge_id = $1 AND sale_id = $2 AND sku = $3",
            params![edge, sale_id, sku, allotted, held, sold].to_vec(),
        ),
    ]
}

/// What is left to sell of each SKU of every sale not ended: units no edge has been granted,
/// and units live edges were granted and neither hold nor sold, as central counts them (an
/// edge's newest holds reach it with its outbox). A written-off history's units are in doubt,
/// not left.
pub fn left_in_sales(tx: &mut dyn Tx, now: Millis) -> Result<Vec<(SkuKey, i64)>, CentralError> {
    tx.query(
        "SELECT k.sale_id, k.sku, CAST(k.unallocated + COALESCE(SUM(CASE \
           WHEN e.retired_at IS NULL THEN u.allotted - u.held - u.sold ELSE 0 END), 0) AS BIGINT) \
         FROM skus k JOIN sales s ON s.sale_id = k.sale_id \
         LEFT JOIN edge_units u ON u.sale_id = k.sale_id AND u.sku = k.sku \
         LEFT JOIN edges e ON e.edge_id = u.edge_id \
         WHERE s.ends_at > $1 \
         GROUP BY k.sale_id, k.sku, k.unallocated ORDER BY k.sale_id, k.sku",
        params![now],
    )?
    .iter()
    .map(|r| Ok((SkuKey::new(r.text(0)?, r.text(1)?), r.int(2)?)))
    .collect()
}

/// SKUs some edge recently asked for when none were left: spare units should come back.
pub fn wanted(tx: &mut dyn Tx, now: Millis) -> Result<Vec<SkuKey>, CentralError> {
    tx.query(
        "SELECT sale_id, sku FROM skus WHERE wanted_at > $1 AND unallocated = 0 \
         ORDER BY sale_id, sku",
        params![now - WANTED_FOR_MS],
    )?
    .iter()
    .map(|r| Ok(SkuKey::new(r.text(0)?, r.text(1)?)))
    .collect()
}
