//! Edges and their units: claiming an edge id, retiring a history, leases and the fence that
//! refuses superseded processes, grants and returns of units, and the SKUs edges want back.

use crate::db::{Tx, params};
use crate::time::Millis;
use crate::{CentralError, Claim, Claimed, GrantRequest, SkuKey, UnitReturn, WANTED_FOR_MS};

/// Claims an edge id for a process: records its history, incarnation, URL and lease. Refused
/// while another process holds the lease, and when this folder's history is not the one
/// central has applied (unless the operator takes over, writing the old history off).
pub fn claim_edge(tx: &mut dyn Tx, claim: &Claim, now: Millis) -> Result<Claimed, CentralError> {
    let current = tx.query_opt(
        "UPDATE edges SET last_seen = last_seen WHERE edge_id = $1 \
         RETURNING history_id, incarnation, lease_until, high_water",
        params![&claim.edge_id],
    )?;
    let mut retired = None;
    if let Some(row) = current {
        let (history, incarnation, lease_until, high_water) =
            (row.text(0)?, row.text(1)?, row.int(2)?, row.int(3)?);
        let ours = incarnation == claim.incarnation
            || claim.previous_incarnation.as_deref() == Some(incarnation.as_str());
        if !ours && lease_until > now {
            return Err(CentralError::EdgeRunning {
                edge_id: claim.edge_id.clone(),
                incarnation,
                lease_until,
            });
        }
        let same_history = history == claim.history_id && claim.local_seq >= high_water;
        if same_history {
            // A drained edge that starts again is back in the registry.
            tx.exec(
                "UPDATE edges SET url = $2, incarnation = $3, lease_until = $4, last_seen = $5, \
                   drained_at = NULL WHERE edge_id = $1",
                params![
                    &claim.edge_id,
                    &claim.url,
                    &claim.incarnation,
                    now + claim.lease_ms,
                    now
                ],
            )?;
            return Ok(Claimed {
                high_water,
                retired: None,
            });
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
    tx.exec(
        "INSERT INTO edges (edge_id, url, history_id, incarnation, lease_until, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        params![
            &claim.edge_id,
            &claim.url,
            &claim.history_id,
            &claim.incarnation,
            now + claim.lease_ms,
            now
        ],
    )?;
    Ok(Claimed {
        high_water: 0,
        retired,
    })
}

/// Writes a history off: its ledger moves to a retired id, the holds of its lost carts are
/// released and its unsold units return to central; its orders stay sold. The retired id.
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
    let unsold = tx.query(
        "SELECT sale_id, sku, CAST(SUM(n) AS BIGINT) FROM (\
           SELECT sale_id, sku, granted AS n FROM grants WHERE edge_id = $1 \
           UNION ALL SELECT sale_id, sku, -quantity FROM unit_returns WHERE edge_id = $1 \
           UNION ALL SELECT sale_id, sku, -quantity FROM unit_moves WHERE from_edge = $1 \
           UNION ALL SELECT sale_id, sku, quantity FROM unit_moves WHERE to_edge = $1 \
           UNION ALL SELECT l.sale_id, l.sku, -l.quantity FROM order_lines l \
             JOIN orders o ON o.order_id = l.order_id WHERE o.edge_id = $1) AS units \
         GROUP BY sale_id, sku",
        params![&retired],
    )?;
    for r in unsold {
        let (sale_id, sku, n) = (r.text(0)?, r.text(1)?, r.int(2)?);
        if n <= 0 {
            continue;
        }
        tx.exec(
            "INSERT INTO unit_returns (return_id, edge_id, sale_id, sku, quantity, returned_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                &format!("retired:{retired}:{sale_id}:{sku}"),
                &retired,
                &sale_id,
                &sku,
                n,
                now
            ],
        )?;
        tx.exec(
            "UPDATE skus SET unallocated = unallocated + $3 WHERE sale_id = $1 AND sku = $2",
            params![&sale_id, &sku, n],
        )?;
    }
    tx.exec(
        "UPDATE edges SET edge_id = $2, url = '', lease_until = 0, retired_at = $3 \
         WHERE edge_id = $1",
        params![edge_id, &retired, now],
    )?;
    Ok(retired)
}

/// Extends a process's lease on its edge id; refused once another process has the id.
pub fn renew_lease(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    until: Millis,
    now: Millis,
) -> Result<(), CentralError> {
    let renewed = tx.exec(
        "UPDATE edges SET lease_until = $3, last_seen = $4 WHERE edge_id = $1 AND incarnation = $2",
        params![edge_id, incarnation, until, now],
    )?;
    if renewed == 0 {
        return Err(CentralError::Superseded(edge_id.to_owned()));
    }
    Ok(())
}

/// Refuses calls from a process that no longer holds its edge id.
pub(super) fn fence(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    now: Millis,
) -> Result<(), CentralError> {
    let current = tx.exec(
        "UPDATE edges SET last_seen = $3 WHERE edge_id = $1 AND incarnation = $2",
        params![edge_id, incarnation, now],
    )?;
    if current == 0 {
        return Err(CentralError::Superseded(edge_id.to_owned()));
    }
    Ok(())
}

/// Grants up to the requested units from what is unallocated; the same grant id always gets
/// the same answer. A sale that has ended grants nothing.
pub fn grant(tx: &mut dyn Tx, req: &GrantRequest, now: Millis) -> Result<u32, CentralError> {
    fence(tx, &req.edge_id, &req.incarnation, now)?;
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
        return earlier.count(0);
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
    let granted = if now >= ends_at {
        0
    } else {
        requested.min(unallocated)
    };
    // Asked for more than was left: others should give back what they are not selling.
    tx.exec(
        "UPDATE skus SET unallocated = unallocated - $3, \
           wanted_at = CASE WHEN $4 THEN $5 ELSE wanted_at END \
         WHERE sale_id = $1 AND sku = $2",
        params![
            &req.sale_id,
            &req.sku,
            granted,
            granted < requested && now < ends_at,
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
    u32::try_from(granted).map_err(|_| CentralError::Decode(format!("granted {granted}")))
}

/// Takes back units an edge returns; the same return id is taken once.
pub fn return_units(tx: &mut dyn Tx, ret: &UnitReturn, now: Millis) -> Result<(), CentralError> {
    fence(tx, &ret.edge_id, &ret.incarnation, now)?;
    let inserted = tx.exec(
        "INSERT INTO unit_returns (return_id, edge_id, sale_id, sku, quantity, returned_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (return_id) DO NOTHING",
        params![
            &ret.return_id,
            &ret.edge_id,
            &ret.sale_id,
            &ret.sku,
            ret.quantity,
            now
        ],
    )?;
    if inserted == 1 {
        tx.exec(
            "UPDATE skus SET unallocated = unallocated + $3 WHERE sale_id = $1 AND sku = $2",
            params![&ret.sale_id, &ret.sku, ret.quantity],
        )?;
    }
    Ok(())
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
