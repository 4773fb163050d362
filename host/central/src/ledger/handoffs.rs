//! Hand-offs: carts, their holds, orders and units moving from a draining edge to another, and
//! the drained edge leaving the registry.

use super::units::fence;
use crate::db::{Tx, params};
use crate::time::Millis;
use crate::{CentralError, Handoff};

/// Records a hand-off: its carts are kept by `to_edge` from now on, with their holds and orders,
/// their customers' home moves with them, and the units they hold and sold leave the draining
/// edge's allotment for the receiver's. Recorded once: the same id again changes nothing.
/// Refused until central has applied the draining edge's outbox up to the carts' last event,
/// so that no late event of the old owner lands after the move.
pub fn record_handoff(tx: &mut dyn Tx, h: &Handoff, now: Millis) -> Result<(), CentralError> {
    fence(tx, &h.from_edge, &h.incarnation, now)?;
    let recorded = tx.query_opt(
        "SELECT from_edge, to_edge FROM handoffs WHERE handoff_id = $1",
        params![&h.handoff_id],
    )?;
    if let Some(r) = recorded {
        let (from, to) = (r.text(0)?, r.text(1)?);
        if from != h.from_edge || to != h.to_edge {
            return Err(CentralError::HandoffConflict(h.handoff_id.clone()));
        }
        return Ok(());
    }
    let high_water = tx
        .query_opt(
            "SELECT high_water FROM edges WHERE edge_id = $1",
            params![&h.from_edge],
        )?
        .ok_or_else(|| CentralError::UnknownEdge(h.from_edge.clone()))?
        .int(0)?;
    if high_water < h.frozen_seq {
        return Err(CentralError::OutboxBehind {
            edge_id: h.from_edge.clone(),
            applied: high_water,
            needed: h.frozen_seq,
        });
    }
    let receiver = tx.query_opt(
        "SELECT 1 FROM edges WHERE edge_id = $1 AND retired_at IS NULL AND drained_at IS NULL",
        params![&h.to_edge],
    )?;
    if receiver.is_none() || h.to_edge == h.from_edge {
        return Err(CentralError::UnknownEdge(h.to_edge.clone()));
    }
    tx.exec(
        "INSERT INTO handoffs (handoff_id, from_edge, to_edge, carts, moved_at) \
         VALUES ($1, $2, $3, $4, $5)",
        params![
            &h.handoff_id,
            &h.from_edge,
            &h.to_edge,
            i64::try_from(h.carts.len()).unwrap_or(i64::MAX),
            now
        ],
    )?;
    for u in &h.units {
        tx.exec(
            "INSERT INTO unit_moves (handoff_id, from_edge, to_edge, sale_id, sku, quantity) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                &h.handoff_id,
                &h.from_edge,
                &h.to_edge,
                &u.sale_id,
                &u.sku,
                u.quantity
            ],
        )?;
    }
    for cart_id in &h.carts {
        tx.exec(
            "INSERT INTO cart_owners (cart_id, edge_id, since) VALUES ($1, $2, $3) \
             ON CONFLICT (cart_id) DO UPDATE SET edge_id = excluded.edge_id, since = excluded.since",
            params![cart_id, &h.to_edge, now],
        )?;
        for table in ["holds", "orders"] {
            tx.exec(
                &format!("UPDATE {table} SET edge_id = $2 WHERE cart_id = $1 AND edge_id = $3"),
                params![cart_id, &h.to_edge, &h.from_edge],
            )?;
        }
    }
    for customer_id in &h.customers {
        tx.exec(
            "UPDATE customers SET edge_id = $2, since = $4 WHERE customer_id = $1 AND edge_id = $3",
            params![customer_id, &h.to_edge, &h.from_edge, now],
        )?;
    }
    Ok(())
}

/// The edge that keeps a handed-off cart; `None` for a cart never handed off (its id names its
/// edge).
pub fn cart_owner(tx: &mut dyn Tx, cart_id: &str) -> Result<Option<String>, CentralError> {
    tx.query_opt(
        "SELECT edge_id FROM cart_owners WHERE cart_id = $1",
        params![cart_id],
    )?
    .map(|r| r.text(0))
    .transpose()
}

/// How far central has applied an edge's outbox (0 for an edge it does not know).
pub fn applied_up_to(tx: &mut dyn Tx, edge_id: &str) -> Result<i64, CentralError> {
    tx.query_opt(
        "SELECT high_water FROM edges WHERE edge_id = $1",
        params![edge_id],
    )?
    .map_or(Ok(0), |r| r.int(0))
}

/// Whether a hand-off was recorded.
pub fn handoff_recorded(tx: &mut dyn Tx, handoff_id: &str) -> Result<bool, CentralError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM handoffs WHERE handoff_id = $1",
            params![handoff_id],
        )?
        .is_some())
}

/// Takes a drained edge out of the registry (its process, still holding the id, asks).
pub fn drained(
    tx: &mut dyn Tx,
    edge_id: &str,
    incarnation: &str,
    now: Millis,
) -> Result<(), CentralError> {
    fence(tx, edge_id, incarnation, now)?;
    tx.exec(
        "UPDATE edges SET drained_at = $2, lease_until = $2 WHERE edge_id = $1",
        params![edge_id, now],
    )?;
    // Its carts all moved, and their customers' homes with them: those left have no cart here
    // and get a new home with their next one.
    tx.exec("DELETE FROM customers WHERE edge_id = $1", params![edge_id])?;
    Ok(())
}
