//! The audit's view: the snapshot of what central knows, stock levels and sell-through, the
//! registry of edges, customers' home edges and each edge's orders.

use super::calendar::sales_ending_after;
use crate::db::{Tx, params};
use crate::events::{EventLine, Order};
use crate::time::Millis;
use crate::{
    CentralError, EdgeLedger, LateOrder, OverLimit, PerEdge, RetiredUnits, SaleLedger, SellThrough,
    SkuKey, Snapshot, StockLevel,
};

/// Sales that ended longer ago than this have no sell-through to chart.
const CHARTED_AFTER_END_MS: Millis = 24 * 3_600_000;
/// The shortest step of a sell-through chart.
const SHORTEST_STEP_MS: Millis = 1_000;

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
           CASE WHEN e.drained_at IS NULL THEN 0 ELSE 1 END, \
           e.events_pruned \
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
                events_pruned: r.int(7)?,
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

/// How each SKU of every sale started, and not ended more than a day ago, sold from its start:
/// units sold by the end of each of at most `steps` equal steps of the sale's time so far (at
/// least a second each), by the time each order was placed, as central has the orders.
pub fn sell_through(
    tx: &mut dyn Tx,
    now: Millis,
    steps: i64,
) -> Result<Vec<SellThrough>, CentralError> {
    let sales = tx.query(
        "SELECT sale_id, starts_at, ends_at FROM sales WHERE starts_at <= $1 AND ends_at > $2 \
         ORDER BY sale_id",
        params![now, now - CHARTED_AFTER_END_MS],
    )?;
    let mut charted = Vec::new();
    for sale in &sales {
        let (sale_id, starts_at) = (sale.text(0)?, sale.int(1)?);
        let until = now.min(sale.int(2)?);
        let step_ms = ((until - starts_at) / steps.max(1) + 1).max(SHORTEST_STEP_MS);
        let last = usize::try_from((until - starts_at) / step_ms).unwrap_or(0);
        let skus = tx.query(
            "SELECT sku, stock_total FROM skus WHERE sale_id = $1 ORDER BY sku",
            params![sale_id.as_str()],
        )?;
        let sold = tx.query(
            "SELECT l.sku, CAST((o.placed_at - $2) / $3 AS BIGINT), \
               CAST(SUM(l.quantity) AS BIGINT) \
             FROM order_lines l JOIN orders o ON o.order_id = l.order_id \
             WHERE l.sale_id = $1 GROUP BY 1, 2",
            params![sale_id.as_str(), starts_at, step_ms],
        )?;
        for sku in &skus {
            let code = sku.text(0)?;
            let mut by_step = vec![0i64; last + 1];
            for row in sold.iter().filter(|r| r.text(0).is_ok_and(|c| c == code)) {
                let at = usize::try_from(row.int(1)?.max(0)).unwrap_or(0).min(last);
                by_step[at] += row.int(2)?;
            }
            let sold = by_step
                .iter()
                .scan(0, |total, units| {
                    *total += units;
                    Some(*total)
                })
                .collect();
            charted.push(SellThrough {
                sale_id: sale_id.clone(),
                sku: code,
                stock_total: sku.int(1)?,
                starts_at,
                step_ms,
                until,
                sold,
            });
        }
    }
    Ok(charted)
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

/// A customer's home edge: the one recorded, or else `proposed`, recorded now. One round trip:
/// the insert, which does nothing if a home is recorded (the first edge to commit is the home
/// when two propose at once: the insert waits for the other's), then the home, read by a
/// statement that sees either. An edge that drains forgets its customers' homes: one forgotten
/// between the two statements is proposed again.
pub fn home_of(
    tx: &mut dyn Tx,
    customer_id: &str,
    proposed: &str,
    now: Millis,
) -> Result<String, CentralError> {
    for _ in 0..2 {
        let answers = tx.query_all(&[
            (
                "INSERT INTO customers (customer_id, edge_id, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (customer_id) DO NOTHING",
                params![customer_id, proposed, now].to_vec(),
            ),
            (
                "SELECT edge_id FROM customers WHERE customer_id = $1",
                params![customer_id].to_vec(),
            ),
        ])?;
        if let Some(home) = answers
            .into_iter()
            .nth(1)
            .and_then(|rows| rows.into_iter().next())
        {
            return home.text(0);
        }
    }
    Err(CentralError::Decode(format!(
        "no home recorded for {customer_id}"
    )))
}

/// The orders central holds for an edge, with their lines, by order id.
pub fn orders_of(tx: &mut dyn Tx, edge_id: &str) -> Result<Vec<Order>, CentralError> {
    orders_where(tx, "o.edge_id = $1", edge_id)
}

/// Orders, with their lines, by order id, of those matching `filter` on `o` with `$1`.
pub(super) fn orders_where(
    tx: &mut dyn Tx,
    filter: &str,
    value: &str,
) -> Result<Vec<Order>, CentralError> {
    let mut out: Vec<Order> = Vec::new();
    for r in tx.query(
        &format!(
            "SELECT o.order_id, o.cart_id, o.customer_id, o.total_cents, o.placed_at, \
               l.sale_id, l.sku, l.quantity, l.unit_price_cents \
             FROM orders o JOIN order_lines l ON l.order_id = o.order_id \
             WHERE {filter} ORDER BY o.order_id, l.sale_id, l.sku"
        ),
        params![value],
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

/// What customers bought and hold in the histories a take-over retired of `edge_id`, per SKU:
/// the edge that serves the id now counts it against their limits.
pub fn retired_units(tx: &mut dyn Tx, edge_id: &str) -> Result<Vec<RetiredUnits>, CentralError> {
    let retired = "e.retired_at IS NOT NULL AND substr(e.edge_id, 1, length($1) + 1) = $1 || '~'";
    tx.query(
        &format!(
            "SELECT customer_id, sale_id, sku, CAST(SUM(n) AS BIGINT) FROM (\
               SELECT o.customer_id, l.sale_id, l.sku, l.quantity AS n FROM orders o \
                 JOIN order_lines l ON l.order_id = o.order_id \
                 JOIN edges e ON e.edge_id = o.edge_id WHERE {retired} \
               UNION ALL SELECT h.customer_id, h.sale_id, h.sku, h.quantity FROM holds h \
                 JOIN edges e ON e.edge_id = h.edge_id WHERE {retired}) AS units \
             GROUP BY customer_id, sale_id, sku ORDER BY customer_id, sale_id, sku"
        ),
        params![edge_id],
    )?
    .iter()
    .map(|r| {
        Ok(RetiredUnits {
            customer_id: r.text(0)?,
            sku: SkuKey::new(r.text(1)?, r.text(2)?),
            units: r.int(3)?,
        })
    })
    .collect()
}

/// Customers whose units of a SKU, bought and held unexpired at `now`, across every edge and
/// every history, exceed its limit.
pub fn over_limit(tx: &mut dyn Tx, now: Millis) -> Result<Vec<OverLimit>, CentralError> {
    tx.query(
        "SELECT u.customer_id, u.sale_id, u.sku, CAST(SUM(u.n) AS BIGINT), k.limit_per_customer \
         FROM (SELECT o.customer_id, l.sale_id, l.sku, l.quantity AS n FROM orders o \
                 JOIN order_lines l ON l.order_id = o.order_id \
               UNION ALL SELECT customer_id, sale_id, sku, quantity FROM holds \
                 WHERE expires_at > $1) AS u \
         JOIN skus k ON k.sale_id = u.sale_id AND k.sku = u.sku \
         GROUP BY u.customer_id, u.sale_id, u.sku, k.limit_per_customer \
         HAVING SUM(u.n) > k.limit_per_customer ORDER BY u.customer_id, u.sale_id, u.sku",
        params![now],
    )?
    .iter()
    .map(|r| {
        Ok(OverLimit {
            customer_id: r.text(0)?,
            sku: SkuKey::new(r.text(1)?, r.text(2)?),
            units: r.int(3)?,
            limit: r.int(4)?,
        })
    })
    .collect()
}

/// Orders with a line of a sale placed at or after its end.
pub fn late_orders(tx: &mut dyn Tx) -> Result<Vec<LateOrder>, CentralError> {
    tx.query(
        "SELECT DISTINCT o.order_id, o.edge_id, l.sale_id, o.placed_at, s.ends_at FROM orders o \
         JOIN order_lines l ON l.order_id = o.order_id JOIN sales s ON s.sale_id = l.sale_id \
         WHERE o.placed_at >= s.ends_at ORDER BY o.order_id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(LateOrder {
            order_id: r.text(0)?,
            edge_id: r.text(1)?,
            sale_id: r.text(2)?,
            placed_at: r.int(3)?,
            ends_at: r.int(4)?,
        })
    })
    .collect()
}
