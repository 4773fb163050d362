//! The stock ledger, written once for both databases: the calendar of sales, grants and returns
//! of units, outbox events applied exactly once, and the snapshot the audit reads.

use std::collections::BTreeMap;

use crate::db::{Dialect, Row, Tx, params};
use crate::events::{Delivery, EventLine, Order, OutboxEvent};
use crate::sale::{Sale, SkuEntry};
use crate::time::Millis;
use crate::{
    CentralError, Claim, Claimed, EdgeLedger, FleetModule, GrantRequest, Handoff, Loaded, Marks,
    PerEdge, SaleLedger, SkuKey, Snapshot, StockLevel, UnitReturn, WANTED_FOR_MS,
};

// ---- the calendar ----------------------------------------------------------------------------

/// Adds a sale to the calendar, or replaces one that has not started yet.
pub fn load_sale(tx: &mut dyn Tx, sale: &Sale, now: Millis) -> Result<Loaded, CentralError> {
    if tx.dialect() == Dialect::Postgres {
        // One load at a time: the overlap check must see every other load's sale.
        tx.exec("LOCK TABLE sales IN SHARE ROW EXCLUSIVE MODE", &[])?;
    }
    let existing = read_sale(tx, &sale.sale_id)?;
    if let Some(old) = &existing {
        let differences = old.differences(sale);
        if differences.is_empty() {
            return Ok(Loaded::Unchanged);
        }
        if now >= old.starts_at {
            return Err(CentralError::SaleChanged {
                sale_id: sale.sale_id.clone(),
                differences,
            });
        }
    }
    check_overlaps(tx, sale)?;
    let ttl_s = sale.hold_ttl_ms / 1000;
    let loaded = if existing.is_some() {
        tx.exec(
            "UPDATE sales SET starts_at = $2, ends_at = $3, hold_ttl_seconds = $4, loaded_at = $5 \
             WHERE sale_id = $1",
            params![&sale.sale_id, sale.starts_at, sale.ends_at, ttl_s, now],
        )?;
        replace_skus(tx, sale)?;
        Loaded::Replaced
    } else {
        tx.exec(
            "INSERT INTO sales (sale_id, starts_at, ends_at, hold_ttl_seconds, loaded_at) \
             VALUES ($1, $2, $3, $4, $5)",
            params![&sale.sale_id, sale.starts_at, sale.ends_at, ttl_s, now],
        )?;
        for s in &sale.skus {
            insert_sku(tx, s)?;
        }
        Loaded::New
    };
    bump_catalog(tx)?;
    Ok(loaded)
}

/// Refuses a sale sharing a SKU code with another sale whose window meets its own.
fn check_overlaps(tx: &mut dyn Tx, sale: &Sale) -> Result<(), CentralError> {
    let rows = tx.query(
        "SELECT s.sale_id, k.sku FROM sales s JOIN skus k ON k.sale_id = s.sale_id \
         WHERE s.sale_id <> $1 AND s.starts_at < $3 AND $2 < s.ends_at ORDER BY s.sale_id, k.sku",
        params![&sale.sale_id, sale.starts_at, sale.ends_at],
    )?;
    let mut clashes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        let (other, sku) = (r.text(0)?, r.text(1)?);
        if sale.skus.iter().any(|s| s.sku == sku) {
            clashes.entry(other).or_default().push(sku);
        }
    }
    match clashes.into_iter().next() {
        None => Ok(()),
        Some((other, skus)) => Err(CentralError::SaleOverlaps {
            sale_id: sale.sale_id.clone(),
            other,
            skus,
        }),
    }
}

fn insert_sku(tx: &mut dyn Tx, s: &SkuEntry) -> Result<(), CentralError> {
    tx.exec(
        "INSERT INTO skus (sale_id, sku, name, price_cents, limit_per_customer, starts_at, \
           stock_total, unallocated) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        params![
            &s.sale_id,
            &s.sku,
            &s.name,
            s.price_cents,
            s.limit_per_customer,
            s.sale_starts_at,
            s.stock_total
        ],
    )?;
    Ok(())
}

/// Replaces a scheduled sale's SKUs; units already granted ahead of its start stay granted.
fn replace_skus(tx: &mut dyn Tx, sale: &Sale) -> Result<(), CentralError> {
    let allotted: BTreeMap<String, i64> = tx
        .query(
            "SELECT sku, CAST(SUM(n) AS BIGINT) FROM (\
               SELECT sku, granted AS n FROM grants WHERE sale_id = $1 \
               UNION ALL SELECT sku, -quantity FROM unit_returns WHERE sale_id = $1) AS moves \
             GROUP BY sku",
            params![&sale.sale_id],
        )?
        .iter()
        .map(|r| Ok((r.text(0)?, r.int(1)?)))
        .collect::<Result<_, CentralError>>()?;
    let current: Vec<String> = tx
        .query(
            "SELECT sku FROM skus WHERE sale_id = $1",
            params![&sale.sale_id],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_, _>>()?;
    for sku in current
        .iter()
        .filter(|c| !sale.skus.iter().any(|s| &s.sku == *c))
    {
        let out = allotted.get(sku).copied().unwrap_or(0);
        if out > 0 {
            return Err(CentralError::Granted {
                sku: sku.clone(),
                granted: out,
                stock: 0,
            });
        }
        tx.exec(
            "DELETE FROM skus WHERE sale_id = $1 AND sku = $2",
            params![&sale.sale_id, sku],
        )?;
    }
    for s in &sale.skus {
        let out = allotted.get(&s.sku).copied().unwrap_or(0);
        if out > i64::from(s.stock_total) {
            return Err(CentralError::Granted {
                sku: s.sku.clone(),
                granted: out,
                stock: s.stock_total,
            });
        }
        let changed = tx.exec(
            "UPDATE skus SET name = $3, price_cents = $4, limit_per_customer = $5, starts_at = $6, \
               stock_total = $7, \
               unallocated = CAST($7 AS BIGINT) - CAST($8 AS BIGINT) WHERE sale_id = $1 AND sku = $2",
            params![
                &s.sale_id,
                &s.sku,
                &s.name,
                s.price_cents,
                s.limit_per_customer,
                s.sale_starts_at,
                s.stock_total,
                out
            ],
        )?;
        if changed == 0 {
            insert_sku(tx, s)?;
        }
    }
    Ok(())
}

fn bump_catalog(tx: &mut dyn Tx) -> Result<(), CentralError> {
    tx.exec(
        "UPDATE versions SET value = value + 1 WHERE name = 'catalog'",
        &[],
    )?;
    Ok(())
}

/// The catalog's version: it changes whenever a sale is loaded, replaced or ended.
pub fn catalog_version(tx: &mut dyn Tx) -> Result<i64, CentralError> {
    tx.query_opt("SELECT value FROM versions WHERE name = 'catalog'", &[])?
        .map_or(Ok(0), |r| r.int(0))
}

/// Which sales to read.
enum Which<'a> {
    One(&'a str),
    EndingAfter(Millis),
}

/// A sale as loaded (with its end as it stands now).
pub fn read_sale(tx: &mut dyn Tx, sale_id: &str) -> Result<Option<Sale>, CentralError> {
    Ok(read_sales(tx, Which::One(sale_id))?.pop())
}

/// Sales that end after `after`: running, scheduled, and those ended since; by start.
pub fn sales_ending_after(tx: &mut dyn Tx, after: Millis) -> Result<Vec<Sale>, CentralError> {
    read_sales(tx, Which::EndingAfter(after))
}

fn read_sales(tx: &mut dyn Tx, which: Which<'_>) -> Result<Vec<Sale>, CentralError> {
    const SELECT: &str = "SELECT s.sale_id, s.starts_at, s.ends_at, s.hold_ttl_seconds, k.sku, \
          k.name, k.price_cents, k.limit_per_customer, k.starts_at, k.stock_total \
        FROM sales s JOIN skus k ON k.sale_id = s.sale_id";
    let rows = match which {
        Which::One(id) => tx.query(
            &format!("{SELECT} WHERE s.sale_id = $1 ORDER BY k.sku"),
            params![id],
        )?,
        Which::EndingAfter(after) => tx.query(
            &format!("{SELECT} WHERE s.ends_at > $1 ORDER BY s.starts_at, s.sale_id, k.sku"),
            params![after],
        )?,
    };
    let mut sales: Vec<Sale> = Vec::new();
    for r in rows {
        let sale_id = r.text(0)?;
        if sales.last().is_none_or(|s| s.sale_id != sale_id) {
            sales.push(Sale {
                sale_id: sale_id.clone(),
                starts_at: r.int(1)?,
                ends_at: r.int(2)?,
                hold_ttl_ms: r.int(3)? * 1000,
                skus: Vec::new(),
            });
        }
        if let Some(sale) = sales.last_mut() {
            let entry = sku_entry(&r, sale)?;
            sale.skus.push(entry);
        }
    }
    Ok(sales)
}

fn sku_entry(r: &Row, sale: &Sale) -> Result<SkuEntry, CentralError> {
    Ok(SkuEntry {
        sale_id: sale.sale_id.clone(),
        sku: r.text(4)?,
        name: r.text(5)?,
        price_cents: r.int(6)?,
        limit_per_customer: r.count(7)?,
        sale_starts_at: r.int(8)?,
        ends_at: sale.ends_at,
        hold_ttl_ms: sale.hold_ttl_ms,
        stock_total: r.count(9)?,
    })
}

/// Ends a sale now (or leaves an ended one as it is); when it ends.
pub fn end_sale(tx: &mut dyn Tx, sale_id: &str, now: Millis) -> Result<Millis, CentralError> {
    let ends_at = tx
        .query_opt(
            "SELECT ends_at FROM sales WHERE sale_id = $1",
            params![sale_id],
        )?
        .ok_or_else(|| CentralError::UnknownSale(sale_id.to_owned()))?
        .int(0)?;
    if ends_at <= now {
        return Ok(ends_at);
    }
    tx.exec(
        "UPDATE sales SET ends_at = $2 WHERE sale_id = $1",
        params![sale_id, now],
    )?;
    bump_catalog(tx)?;
    Ok(now)
}

// ---- edges and units -------------------------------------------------------------------------

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
fn fence(
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

// ---- the outbox ------------------------------------------------------------------------------

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

// ---- the audit's view ------------------------------------------------------------------------

/// The audit's per-edge sums `(sale_id, sku, edge_id, n)`.
const PER_EDGE_SUMS: &[(&str, PerEdge)] = &[
    (
        "SELECT sale_id, sku, edge_id, CAST(SUM(n) AS BIGINT) FROM (\
           SELECT sale_id, sku, edge_id, granted AS n FROM grants \
           UNION ALL SELECT sale_id, sku, edge_id, -quantity FROM unit_returns \
           UNION ALL SELECT sale_id, sku, from_edge, -quantity FROM unit_moves \
           UNION ALL SELECT sale_id, sku, to_edge, quantity FROM unit_moves) AS moves \
         GROUP BY sale_id, sku, edge_id",
        PerEdge::Allotted,
    ),
    (
        "SELECT sale_id, sku, edge_id, CAST(SUM(quantity) AS BIGINT) FROM holds \
         GROUP BY sale_id, sku, edge_id",
        PerEdge::Held,
    ),
    (
        "SELECT l.sale_id, l.sku, o.edge_id, CAST(SUM(l.quantity) AS BIGINT) FROM order_lines l \
         JOIN orders o ON o.order_id = l.order_id GROUP BY l.sale_id, l.sku, o.edge_id",
        PerEdge::Sold,
    ),
];

/// What central knows, for the audit.
pub fn snapshot(tx: &mut dyn Tx) -> Result<Snapshot, CentralError> {
    let mut snap = Snapshot::default();
    for sale in sales_ending_after(tx, Millis::MIN)? {
        snap.sales.insert(
            sale.sale_id.clone(),
            SaleLedger {
                starts_at: sale.starts_at,
                ends_at: sale.ends_at,
            },
        );
    }
    for r in tx.query(
        "SELECT sale_id, sku, stock_total, unallocated, limit_per_customer FROM skus",
        &[],
    )? {
        let ledger = snap
            .skus
            .entry(SkuKey::new(r.text(0)?, r.text(1)?))
            .or_default();
        ledger.stock_total = r.int(2)?;
        ledger.unallocated = r.int(3)?;
        ledger.limit_per_customer = r.int(4)?;
    }
    for (sql, which) in PER_EDGE_SUMS {
        for r in tx.query(sql, &[])? {
            let ledger = snap
                .skus
                .entry(SkuKey::new(r.text(0)?, r.text(1)?))
                .or_default();
            ledger.per_edge(*which).insert(r.text(2)?, r.int(3)?);
        }
    }
    for r in tx.query(
        "SELECT e.edge_id, e.url, e.high_water, \
           (SELECT COUNT(*) FROM applied_events a WHERE a.edge_id = e.edge_id), \
           (SELECT COUNT(*) FROM orders o WHERE o.edge_id = e.edge_id), \
           CASE WHEN e.retired_at IS NULL THEN 0 ELSE 1 END, \
           CASE WHEN e.drained_at IS NULL THEN 0 ELSE 1 END \
         FROM edges e",
        &[],
    )? {
        snap.edges.insert(
            r.text(0)?,
            EdgeLedger {
                url: r.text(1)?,
                high_water: r.int(2)?,
                events_applied: r.int(3)?,
                orders: r.int(4)?,
                retired: r.int(5)? == 1,
                drained: r.int(6)? == 1,
            },
        );
    }
    Ok(snap)
}

/// Each SKU's stock and the units no edge holds yet, for the operator dashboard: one cheap read,
/// unlike [`snapshot`].
pub fn stock_levels(tx: &mut dyn Tx) -> Result<Vec<StockLevel>, CentralError> {
    tx.query(
        "SELECT sale_id, sku, stock_total, unallocated FROM skus ORDER BY sale_id, sku",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(StockLevel {
            sale_id: r.text(0)?,
            sku: r.text(1)?,
            stock_total: r.int(2)?,
            unallocated: r.int(3)?,
        })
    })
    .collect()
}

/// Each edge id in service (not retired, not drained), with the URL it registered.
pub fn registry(tx: &mut dyn Tx) -> Result<Vec<(String, String)>, CentralError> {
    tx.query(
        "SELECT edge_id, url FROM edges WHERE retired_at IS NULL AND drained_at IS NULL \
         ORDER BY edge_id",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.text(0)?, r.text(1)?)))
    .collect()
}

/// A customer's home edge: the one recorded, or else `proposed`, recorded now.
pub fn home_of(
    tx: &mut dyn Tx,
    customer_id: &str,
    proposed: &str,
    now: Millis,
) -> Result<String, CentralError> {
    let select = "SELECT edge_id FROM customers WHERE customer_id = $1";
    if let Some(home) = tx.query_opt(select, &[customer_id.into()])? {
        return home.text(0);
    }
    // Two edges may propose at once: the first to commit is the home.
    tx.exec(
        "INSERT INTO customers (customer_id, edge_id, since) VALUES ($1, $2, $3) \
         ON CONFLICT (customer_id) DO NOTHING",
        &[customer_id.into(), proposed.into(), now.into()],
    )?;
    tx.query_opt(
        "SELECT edge_id FROM customers WHERE customer_id = $1",
        &[customer_id.into()],
    )?
    .ok_or_else(|| CentralError::Decode(format!("no home recorded for {customer_id}")))?
    .text(0)
}

/// The orders central holds for an edge, with their lines, by order id.
pub fn orders_of(tx: &mut dyn Tx, edge_id: &str) -> Result<Vec<Order>, CentralError> {
    let mut out: Vec<Order> = Vec::new();
    for r in tx.query(
        "SELECT o.order_id, o.cart_id, o.customer_id, o.total_cents, o.placed_at, \
           l.sale_id, l.sku, l.quantity, l.unit_price_cents \
         FROM orders o JOIN order_lines l ON l.order_id = o.order_id \
         WHERE o.edge_id = $1 ORDER BY o.order_id, l.sale_id, l.sku",
        params![edge_id],
    )? {
        let order_id = r.text(0)?;
        if out.last().is_none_or(|o| o.order_id != order_id) {
            out.push(Order {
                order_id,
                cart_id: r.text(1)?,
                customer_id: r.text(2)?,
                total_cents: r.int(3)?,
                placed_at: r.int(4)?,
                lines: Vec::new(),
            });
        }
        if let Some(order) = out.last_mut() {
            order.lines.push(EventLine {
                sale_id: r.text(5)?,
                sku: r.text(6)?,
                quantity: r.count(7)?,
                unit_price_cents: r.int(8)?,
            });
        }
    }
    Ok(out)
}

// ---- hand-offs -------------------------------------------------------------------------------

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

// ---- the fleet's module ----------------------------------------------------------------------

/// Records the module the fleet runs (the one an operator last deployed or activated).
pub fn set_fleet_module(tx: &mut dyn Tx, m: &FleetModule, now: Millis) -> Result<(), CentralError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.encode(&m.bytes);
    tx.exec(
        "INSERT INTO fleet_module (name, version, sha256, bytes, signature, set_at) \
         VALUES ('active', $1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, \
           bytes = excluded.bytes, signature = excluded.signature, set_at = excluded.set_at",
        params![
            &m.version,
            &m.sha256,
            &bytes,
            m.signature.as_deref().unwrap_or_default(),
            now
        ],
    )?;
    Ok(())
}

/// The fleet's module's version and sha256, if one was recorded.
pub fn fleet_module_id(tx: &mut dyn Tx) -> Result<Option<(String, String)>, CentralError> {
    tx.query_opt(
        "SELECT version, sha256 FROM fleet_module WHERE name = 'active'",
        &[],
    )?
    .map(|r| Ok((r.text(0)?, r.text(1)?)))
    .transpose()
}

/// The fleet's module, if one was recorded.
pub fn fleet_module(tx: &mut dyn Tx) -> Result<Option<FleetModule>, CentralError> {
    use base64::Engine as _;
    let Some(r) = tx.query_opt(
        "SELECT version, sha256, bytes, signature FROM fleet_module WHERE name = 'active'",
        &[],
    )?
    else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r.text(2)?)
        .map_err(|e| CentralError::Decode(format!("the fleet's module: {e}")))?;
    Ok(Some(FleetModule {
        version: r.text(0)?,
        sha256: r.text(1)?,
        bytes,
        signature: Some(r.text(3)?).filter(|s| !s.is_empty()),
    }))
}
