//! Hand-offs: carts, their holds, orders and units moving from a draining edge to another, and
//! the drained edge leaving the registry.

use std::collections::BTreeMap;

use super::audit::orders_where;
use super::units::{count_units, fence};
use crate::db::{Tx, params};
use crate::time::Millis;
use crate::{CentralError, Handoff, RecordedHandoff, RecordedHold};

/// Records a hand-off: its carts are kept by `to_edge` from now on, with their holds and orders,
/// their customers' home moves with them, and the units they hold and sold leave the draining
/// edge's allotment for the receiver's. The units are what central itself holds for those carts
/// (the draining edge's outbox is applied up to the freeze first), never what a batch says.
/// Recorded once: the same id again changes nothing. The receiving edge takes the carts only
/// once this is recorded, and takes their units from here ([`handoff_record`]).
pub fn record_handoff(tx: &mut dyn Tx, h: &Handoff, now: Millis) -> Result<(), CentralError> {
    fence(tx, &h.from_edge, &h.incarnation, now, false)?;
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
    // Held and sold units per SKU, from central's own holds and orders of these carts.
    let mut units: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for cart_id in &h.carts {
        tx.exec(
            "INSERT INTO handoff_carts (handoff_id, cart_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            params![&h.handoff_id, cart_id],
        )?;
        for r in tx.query(
            "SELECT sale_id, sku, quantity FROM holds WHERE cart_id = $1 AND edge_id = $2",
            params![cart_id, &h.from_edge],
        )? {
            units.entry((r.text(0)?, r.text(1)?)).or_default().0 += r.int(2)?;
        }
        for r in tx.query(
            "SELECT l.sale_id, l.sku, l.quantity FROM order_lines l \
             JOIN orders o ON o.order_id = l.order_id WHERE o.cart_id = $1 AND o.edge_id = $2",
            params![cart_id, &h.from_edge],
        )? {
            units.entry((r.text(0)?, r.text(1)?)).or_default().1 += r.int(2)?;
        }
    }
    for ((sale_id, sku), (held, sold)) in &units {
        let quantity = held + sold;
        if quantity == 0 {
            continue;
        }
        tx.exec(
            "INSERT INTO unit_moves (handoff_id, from_edge, to_edge, sale_id, sku, quantity) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                &h.handoff_id,
                &h.from_edge,
                &h.to_edge,
                sale_id,
                sku,
                quantity
            ],
        )?;
        count_units(tx, &h.from_edge, sale_id, sku, -quantity, -held, -sold)?;
        count_units(tx, &h.to_edge, sale_id, sku, quantity, *held, *sold)?;
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

/// A recorded hand-off as the receiving edge takes it: who it came from, and the holds and
/// orders of its carts as central has them. `None`: no such hand-off was recorded to `to_edge`.
pub fn handoff_record(
    tx: &mut dyn Tx,
    handoff_id: &str,
    to_edge: &str,
) -> Result<Option<RecordedHandoff>, CentralError> {
    let Some(row) = tx.query_opt(
        "SELECT from_edge FROM handoffs WHERE handoff_id = $1 AND to_edge = $2",
        params![handoff_id, to_edge],
    )?
    else {
        return Ok(None);
    };
    let mut recorded = RecordedHandoff {
        from_edge: row.text(0)?,
        carts: Vec::new(),
        holds: Vec::new(),
        orders: Vec::new(),
    };
    recorded.carts = tx
        .query(
            "SELECT cart_id FROM handoff_carts WHERE handoff_id = $1 ORDER BY cart_id",
            params![handoff_id],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_, _>>()?;
    for cart_id in &recorded.carts {
        for r in tx.query(
            "SELECT sale_id, sku, quantity, expires_at FROM holds WHERE cart_id = $1 \
             ORDER BY sale_id, sku",
            params![cart_id],
        )? {
            recorded.holds.push(RecordedHold {
                cart_id: cart_id.clone(),
                sale_id: r.text(0)?,
                sku: r.text(1)?,
                quantity: r.count(2)?,
                expires_at: r.int(3)?,
            });
        }
        recorded
            .orders
            .extend(orders_where(tx, "o.cart_id = $1", cart_id)?);
    }
    Ok(Some(recorded))
}

/// The receiving edge has the carts of a hand-off in its books.
pub fn handoff_taken(
    tx: &mut dyn Tx,
    handoff_id: &str,
    to_edge: &str,
    incarnation: &str,
    now: Millis,
) -> Result<(), CentralError> {
    fence(tx, to_edge, incarnation, now, true)?;
    tx.exec(
        "UPDATE handoffs SET taken_at = $3 WHERE handoff_id = $1 AND to_edge = $2 \
         AND taken_at IS NULL",
        params![handoff_id, to_edge, now],
    )?;
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
    fence(tx, edge_id, incarnation, now, false)?;
    let untaken = tx.query_opt(
        "SELECT handoff_id FROM handoffs WHERE to_edge = $1 AND taken_at IS NULL",
        params![edge_id],
    )?;
    if let Some(r) = untaken {
        return Err(CentralError::HandoffUntaken(r.text(0)?));
    }
    tx.exec(
        "UPDATE edges SET drained_at = $2, lease_until = $2 WHERE edge_id = $1",
        params![edge_id, now],
    )?;
    // Its carts all moved, and their customers' homes with them: those left have no cart here
    // and get a new home with their next one.
    tx.exec("DELETE FROM customers WHERE edge_id = $1", params![edge_id])?;
    Ok(())
}
