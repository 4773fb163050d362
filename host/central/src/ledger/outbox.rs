//! The outbox: an edge's events applied once, in sequence, and whether a history was retired.

use crate::db::{Tx, params};
use crate::events::{Delivery, Order, OutboxEvent};
use crate::time::Millis;
use crate::{CentralError, Marks};

/// Applies a batch of an edge's outbox in one transaction: each event after the edge's
/// high-water mark, strictly in sequence (a gap stops the batch there), once. The mark before
/// and after.
pub fn apply(
    tx: &mut dyn Tx,
    edge_id: &str,
    history_id: &str,
    batch: &[Delivery],
    now: Millis,
) -> Result<Marks, CentralError> {
    // The edge's row lock orders its batches: a redelivery waits, then skips. Events of a
    // history central no longer keeps under this id are refused.
    let mark = tx
        .query_opt(
            "UPDATE edges SET last_seen = $3 WHERE edge_id = $1 AND history_id = $2 \
             RETURNING high_water",
            params![edge_id, history_id, now],
        )?
        .ok_or_else(|| CentralError::UnknownEdge(edge_id.to_owned()))?
        .int(0)?;
    let mut high = mark;
    for d in batch.iter().filter(|d| d.seq > mark) {
        if d.seq != high + 1 {
            break;
        }
        tx.exec(
            "INSERT INTO applied_events (edge_id, seq, kind, applied_at) VALUES ($1, $2, $3, $4)",
            params![edge_id, d.seq, d.event.kind(), now],
        )?;
        apply_event(tx, edge_id, &d.event)?;
        high = d.seq;
    }
    if high != mark {
        tx.exec(
            "UPDATE edges SET high_water = $2 WHERE edge_id = $1",
            params![edge_id, high],
        )?;
    }
    Ok(Marks {
        before: mark,
        after: high,
    })
}

/// Whether `history_id` is one a take-over wrote off.
pub fn retired(tx: &mut dyn Tx, history_id: &str) -> Result<bool, CentralError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM edges WHERE history_id = $1 AND retired_at IS NOT NULL",
            params![history_id],
        )?
        .is_some())
}

fn apply_event(tx: &mut dyn Tx, edge_id: &str, event: &OutboxEvent) -> Result<(), CentralError> {
    match event {
        OutboxEvent::HoldChanged {
            cart_id,
            sale_id,
            sku,
            quantity: 0,
            ..
        } => {
            tx.exec(
                "DELETE FROM holds WHERE cart_id = $1 AND sale_id = $2 AND sku = $3",
                params![cart_id, sale_id, sku],
            )?;
        }
        OutboxEvent::HoldChanged {
            cart_id,
            customer_id,
            sale_id,
            sku,
            quantity,
            expires_at,
        } => {
            tx.exec(
                "INSERT INTO holds (cart_id, sale_id, sku, edge_id, customer_id, quantity, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (cart_id, sale_id, sku) DO UPDATE SET edge_id = excluded.edge_id, \
                   quantity = excluded.quantity, expires_at = excluded.expires_at",
                params![
                    cart_id,
                    sale_id,
                    sku,
                    edge_id,
                    customer_id,
                    *quantity,
                    *expires_at
                ],
            )?;
        }
        OutboxEvent::OrderPlaced(Order {
            order_id,
            cart_id,
            customer_id,
            lines,
            total_cents,
            placed_at,
        }) => {
            tx.exec(
                "INSERT INTO orders (order_id, edge_id, cart_id, customer_id, total_cents, placed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                params![
                    order_id,
                    edge_id,
                    cart_id,
                    customer_id,
                    *total_cents,
                    *placed_at
                ],
            )?;
            for l in lines {
                tx.exec(
                    "INSERT INTO order_lines (order_id, sale_id, sku, quantity, unit_price_cents) \
                     VALUES ($1, $2, $3, $4, $5)",
                    params![order_id, &l.sale_id, &l.sku, l.quantity, l.unit_price_cents],
                )?;
            }
            // The cart's holds became this order.
            tx.exec("DELETE FROM holds WHERE cart_id = $1", params![cart_id])?;
        }
    }
    Ok(())
}
