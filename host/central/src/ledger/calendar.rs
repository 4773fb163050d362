//! The calendar of sales: loading, replacing and ending sales, reading them back, and the
//! catalog's version.

use std::collections::BTreeMap;

use crate::db::{Dialect, Row, Tx, clock, params};
use crate::sale::{Sale, SkuEntry};
use crate::time::Millis;
use crate::{CentralError, Loaded};

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
        // An operator's `sale end` is final, whether the sale had started or not.
        let ended_early = tx
            .query_opt(
                "SELECT 1 FROM sales WHERE sale_id = $1 AND ended_early_at IS NOT NULL",
                params![&sale.sale_id],
            )?
            .is_some();
        if ended_early {
            return Err(CentralError::SaleEnded(sale.sale_id.clone()));
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

/// Ends a sale (or leaves an ended or ending one as it is); when it ends. Not at once: at a
/// moment every edge that may sell knows of before it comes. An edge sells only on a lease,
/// which it extends only with the calendar current (a renewal says the catalog's version), so
/// an edge that has not heard of the end stops when its lease runs out, and the end comes after
/// every lease granted so far, and a moment more for the edges to follow.
pub fn end_sale(tx: &mut dyn Tx, sale_id: &str) -> Result<Millis, CentralError> {
    let ends_at = tx
        .query_opt(
            "SELECT ends_at FROM sales WHERE sale_id = $1",
            params![sale_id],
        )?
        .ok_or_else(|| CentralError::UnknownSale(sale_id.to_owned()))?
        .int(0)?;
    let now = clock(tx)?;
    let leases = tx
        .query_opt(
            "SELECT CAST(COALESCE(MAX(lease_until), 0) AS BIGINT) FROM edges \
             WHERE retired_at IS NULL AND drained_at IS NULL",
            &[],
        )?
        .map_or(Ok(0), |r| r.int(0))?;
    let at = now.max(leases) + END_NOTICE_MS;
    if ends_at <= at {
        return Ok(ends_at);
    }
    tx.exec(
        "UPDATE sales SET ends_at = $2, ended_early_at = $3 WHERE sale_id = $1",
        params![sale_id, at, now],
    )?;
    bump_catalog(tx)?;
    Ok(at)
}

/// How long after the last lease an early end comes: time for the edges to follow.
const END_NOTICE_MS: Millis = 1_000;
