//! The outbox: an edge's events, signed by the key of the process that serves its history,
//! applied once, in sequence, and their digests.

use super::units::{count_units, is_retired_name};
use crate::db::{Tx, params};
use crate::events::{self, Delivery, Order, OutboxEvent};
use crate::time::Millis;
use crate::{CentralError, Marks};

/// Applies a batch of an edge's outbox in one transaction: each event after the history's
/// high-water mark, strictly in sequence (a gap stops the batch there), once, if the key of
/// the process that serves the history signed it. A history a take-over wrote off still
/// applies what its process delivers, under its retired id: the orders it took before its
/// lease lapsed are real. The mark before and after.
pub fn apply(
    tx: &mut dyn Tx,
    edge_id: &str,
    history_id: &str,
    batch: &[Delivery],
    now: Millis,
) -> Result<Marks, CentralError> {
    // The history's row lock orders its batches: a redelivery waits, then skips.
    let row = tx
        .query_opt(
            "UPDATE edges SET last_seen = $2 WHERE history_id = $1 \
             RETURNING edge_id, high_water",
            params![history_id, now],
        )?
        .ok_or_else(|| CentralError::UnknownEdge(edge_id.to_owned()))?;
    let (name, mark) = (row.text(0)?, row.int(1)?);
    if name != edge_id && !is_retired_name(&name, edge_id) {
        return Err(CentralError::UnknownEdge(edge_id.to_owned()));
    }
    let keys = history_keys(tx, history_id)?;
    let mut high = mark;
    for d in batch.iter().filter(|d| d.seq > mark) {
        if d.seq != high + 1 {
            break;
        }
        if !keys.iter().any(|key| events::verify(key, history_id, d)) {
            return Err(CentralError::BadSignature {
                edge_id: edge_id.to_owned(),
                seq: d.seq,
            });
        }
        tx.exec(
            "INSERT INTO applied_events (edge_id, seq, kind, applied_at, digest) \
             VALUES ($1, $2, $3, $4, $5)",
            params![&name, d.seq, d.event.kind(), now, &events::digest(&d.event)],
        )?;
        apply_event(tx, &name, &d.event)?;
        high = d.seq;
    }
    if high != mark {
        tx.exec(
            "UPDATE edges SET high_water = $2 WHERE history_id = $1",
            params![history_id, high],
        )?;
    }
    Ok(Marks {
        before: mark,
        after: high,
    })
}

/// The digests of the events of `history_id` central applied with sequence numbers `from` to
/// `to`, in order.
pub fn applied_digests(
    tx: &mut dyn Tx,
    history_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String)>, CentralError> {
    tx.query(
        "SELECT a.seq, a.digest FROM applied_events a JOIN edges e ON e.edge_id = a.edge_id \
         WHERE e.history_id = $1 AND a.seq >= $2 AND a.seq <= $3 ORDER BY a.seq",
        params![history_id, from, to],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.text(1)?)))
    .collect()
}

/// The keys of the processes that have served `history_id` (none: central does not know it).
pub fn history_keys(tx: &mut dyn Tx, history_id: &str) -> Result<Vec<String>, CentralError> {
    tx.query(
        "SELECT public_key FROM history_keys WHERE history_id = $1 ORDER BY public_key",
        params![history_id],
    )?
    .iter()
    .map(|r| r.text(0))
    .collect()
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
            release_hold(tx, cart_id, sale_id, sku)?;
        }
        OutboxEvent::HoldChanged {
            cart_id,
            customer_id,
            sale_id,
            sku,
            quantity,
            expires_at,
        } => {
            release_hold(tx, cart_id, sale_id, sku)?;
            count_units(tx, edge_id, sale_id, sku, 0, i64::from(*quantity), 0)?;
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
            // The cart's holds became this order.
            for hold in tx.query(
                "SELECT sale_id, sku FROM holds WHERE cart_id = $1",
                params![cart_id],
            )? {
                release_hold(tx, cart_id, &hold.text(0)?, &hold.text(1)?)?;
            }
            for l in lines {
                tx.exec(
                    "INSERT INTO order_lines (order_id, sale_id, sku, quantity, unit_price_cents) \
                     VALUES ($1, $2, $3, $4, $5)",
                    params![order_id, &l.sale_id, &l.sku, l.quantity, l.unit_price_cents],
                )?;
                count_units(tx, edge_id, &l.sale_id, &l.sku, 0, 0, i64::from(l.quantity))?;
            }
        }
    }
    Ok(())
}

/// Takes a cart's hold of a SKU off the books, if there is one, and off its edge's count.
fn release_hold(
    tx: &mut dyn Tx,
    cart_id: &str,
    sale_id: &str,
    sku: &str,
) -> Result<(), CentralError> {
    let held = tx.query_opt(
        "DELETE FROM holds WHERE cart_id = $1 AND sale_id = $2 AND sku = $3 \
         RETURNING edge_id, quantity",
        params![cart_id, sale_id, sku],
    )?;
    if let Some(h) = held {
        count_units(tx, &h.text(0)?, sale_id, sku, 0, -h.int(1)?, 0)?;
    }
    Ok(())
}
