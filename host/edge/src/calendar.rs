//! The calendar of sales at an edge: kept in its database (so it restarts without central),
//! held in memory as the [`Catalog`] requests read, and followed while the edge runs (by
//! [`crate::tasks`]): a sale loaded, replaced or ended at central reaches the edge within
//! seconds. A sale that has ended is kept for a day (`keep_ended`), and then until this edge
//! holds nothing of it (its holds released, its free units returned), then dropped.

use std::sync::{Arc, RwLock};

use cart_central::sale::{Catalog, Sale, SkuEntry};
use rusqlite::{Connection, params};

use crate::clock::Millis;
use crate::locks;
use crate::store::{db, retention};

/// The catalog requests read; replaced whole when the calendar changes.
#[derive(Default)]
pub struct CatalogCell(RwLock<Arc<Catalog>>);

impl CatalogCell {
    pub fn new(catalog: Catalog) -> Self {
        Self(RwLock::new(Arc::new(catalog)))
    }

    pub fn get(&self) -> Arc<Catalog> {
        Arc::clone(&locks::read(&self.0))
    }

    pub fn set(&self, catalog: Catalog) {
        *locks::write(&self.0) = Arc::new(catalog);
    }
}

/// Stores a sale as central has it (its end may have moved), with a stock row per SKU. Runs in
/// the caller's transaction.
pub fn store_sale(conn: &Connection, sale: &Sale) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sales (sale_id, starts_at, ends_at, hold_ttl_ms) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (sale_id) DO UPDATE SET starts_at = excluded.starts_at, \
           ends_at = excluded.ends_at, hold_ttl_ms = excluded.hold_ttl_ms",
        params![sale.sale_id, sale.starts_at, sale.ends_at, sale.hold_ttl_ms],
    )?;
    // A scheduled sale may have been replaced: its SKUs are the new ones.
    conn.execute("DELETE FROM catalog WHERE sale_id = ?1", [&sale.sale_id])?;
    for s in &sale.skus {
        conn.execute(
            "INSERT INTO catalog (sale_id, sku, name, price_cents, limit_per_customer, starts_at, \
               stock_total) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                s.sale_id,
                s.sku,
                s.name,
                s.price_cents,
                s.limit_per_customer,
                s.sale_starts_at,
                s.stock_total
            ],
        )?;
        db::add_stock(conn, &s.sale_id, &s.sku)?;
    }
    Ok(())
}

/// The calendar as this edge stored it.
pub fn load(conn: &Connection) -> rusqlite::Result<Catalog> {
    let mut sales: Vec<Sale> = conn
        .prepare("SELECT sale_id, starts_at, ends_at, hold_ttl_ms FROM sales ORDER BY sale_id")?
        .query_map([], |r| {
            Ok(Sale {
                sale_id: r.get(0)?,
                starts_at: r.get(1)?,
                ends_at: r.get(2)?,
                hold_ttl_ms: r.get(3)?,
                skus: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare(
        "SELECT sku, name, price_cents, limit_per_customer, starts_at, stock_total FROM catalog \
         WHERE sale_id = ?1 ORDER BY sku",
    )?;
    for sale in &mut sales {
        sale.skus = stmt
            .query_map([&sale.sale_id], |r| {
                Ok(SkuEntry {
                    sale_id: sale.sale_id.clone(),
                    sku: r.get(0)?,
                    name: r.get(1)?,
                    price_cents: r.get(2)?,
                    limit_per_customer: r.get(3)?,
                    sale_starts_at: r.get(4)?,
                    ends_at: sale.ends_at,
                    hold_ttl_ms: sale.hold_ttl_ms,
                    stock_total: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(Catalog::new(sales))
}

/// Drops sales that ended at or before `ended_by` of which this edge holds nothing any more
/// (every unit sold or returned); their stock rows, carts and orders stay until retention
/// deletes them ([`retention`]). The sales dropped.
pub fn drop_finished(
    conn: &Connection,
    ended_by: Millis,
    now: Millis,
) -> rusqlite::Result<Vec<String>> {
    let finished: Vec<String> = conn
        .prepare(
            "SELECT s.sale_id FROM sales s WHERE s.ends_at <= ?1 AND NOT EXISTS (\
               SELECT 1 FROM stock k WHERE k.sale_id = s.sale_id AND (k.free > 0 OR k.held > 0)) \
             AND NOT EXISTS (SELECT 1 FROM unit_returns r \
               WHERE r.sale_id = s.sale_id AND r.confirmed_at IS NULL)",
        )?
        .query_map([ended_by], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sale_id in &finished {
        conn.execute("DELETE FROM catalog WHERE sale_id = ?1", [sale_id])?;
        conn.execute("DELETE FROM sales WHERE sale_id = ?1", [sale_id])?;
        retention::finished(conn, sale_id, now)?;
    }
    Ok(finished)
}
