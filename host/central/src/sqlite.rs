//! The central database in one SQLite file, shared by every edge process on the machine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{CentralError, EdgeLedger, GrantRequest, Snapshot, UnitReturn, WANTED_FOR_MS};
use crate::events::{Delivery, OutboxEvent};
use crate::sale::{Sale, SkuEntry};
use crate::time::wall_ms;

mod migrations {
    refinery::embed_migrations!("../../schema/central/sqlite");
}

pub struct SqliteCentral {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteCentral {
    pub async fn open(path: PathBuf) -> Result<Self, CentralError> {
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, CentralError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut conn = Connection::open(&path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Several edge processes share the file: wait for each other's transactions.
            conn.busy_timeout(Duration::from_secs(10))?;
            migrations::migrations::runner().run(&mut conn)?;
            Ok(conn)
        })
        .await??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the async workers.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await?
    }

    pub async fn load_sale(&self, sale: &Sale) -> Result<(), CentralError> {
        let sale = sale.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .query_row("SELECT sale_id FROM sales LIMIT 1", [], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                return Err(CentralError::SaleExists(id));
            }
            tx.execute(
                "INSERT INTO sales (sale_id, starts_at, hold_ttl_seconds, loaded_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    sale.sale_id,
                    sale.starts_at,
                    sale.hold_ttl_ms / 1000,
                    wall_ms()
                ],
            )?;
            for s in &sale.skus {
                tx.execute(
                    "INSERT INTO skus (sku, sale_id, name, price_cents, limit_per_customer, \
                     sale_starts_at, stock_total, unallocated) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                    params![
                        s.sku,
                        sale.sale_id,
                        s.name,
                        s.price_cents,
                        s.limit_per_customer,
                        s.sale_starts_at,
                        s.stock_total
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn sale(&self) -> Result<Option<Sale>, CentralError> {
        self.with(|conn| {
            let head: Option<(String, i64, i64)> = conn
                .query_row(
                    "SELECT sale_id, starts_at, hold_ttl_seconds FROM sales LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((sale_id, starts_at, ttl_s)) = head else {
                return Ok(None);
            };
            let mut stmt = conn.prepare(
                "SELECT sku, name, price_cents, limit_per_customer, sale_starts_at, stock_total \
                 FROM skus WHERE sale_id = ?1 ORDER BY sku",
            )?;
            let skus = stmt
                .query_map([&sale_id], |r| {
                    Ok(SkuEntry {
                        sale_id: sale_id.clone(),
                        ends_at: crate::time::Millis::MAX,
                        hold_ttl_ms: ttl_s * 1000,
                        sku: r.get(0)?,
                        name: r.get(1)?,
                        price_cents: r.get(2)?,
                        limit_per_customer: r.get(3)?,
                        sale_starts_at: r.get(4)?,
                        stock_total: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Sale {
                sale_id,
                starts_at,
                hold_ttl_ms: ttl_s * 1000,
                skus,
            }))
        })
        .await
    }

    pub async fn register_edge(&self, edge_id: &str, url: &str) -> Result<(), CentralError> {
        let (edge_id, url) = (edge_id.to_owned(), url.to_owned());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO edges (edge_id, url, last_seen) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (edge_id) DO UPDATE SET url = excluded.url, last_seen = excluded.last_seen",
                params![edge_id, url, wall_ms()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn grant(&self, req: &GrantRequest) -> Result<u32, CentralError> {
        let req = req.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let earlier: Option<u32> = tx
                .query_row(
                    "SELECT granted FROM grants WHERE grant_id = ?1",
                    [&req.grant_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(granted) = earlier {
                return Ok(granted);
            }
            let unallocated: u32 = tx
                .query_row(
                    "SELECT unallocated FROM skus WHERE sku = ?1",
                    [&req.sku],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let granted = req.requested.min(unallocated);
            // Asked for more than was left: others should give back what they are not selling.
            tx.execute(
                "UPDATE skus SET unallocated = unallocated - ?2, \
                 wanted_at = CASE WHEN ?3 THEN ?4 ELSE wanted_at END WHERE sku = ?1",
                params![req.sku, granted, granted < req.requested, wall_ms()],
            )?;
            tx.execute(
                "INSERT INTO grants (grant_id, edge_id, sku, requested, granted, granted_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    req.grant_id,
                    req.edge_id,
                    req.sku,
                    req.requested,
                    granted,
                    wall_ms()
                ],
            )?;
            touch_edge(&tx, &req.edge_id)?;
            tx.commit()?;
            Ok(granted)
        })
        .await
    }

    pub async fn apply(&self, edge_id: &str, batch: &[Delivery]) -> Result<i64, CentralError> {
        let (edge_id, batch) = (edge_id.to_owned(), batch.to_vec());
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mark: i64 = tx
                .query_row("SELECT high_water FROM edges WHERE edge_id = ?1", [&edge_id], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| CentralError::UnknownEdge(edge_id.clone()))?;
            let now = wall_ms();
            let mut high = mark;
            for d in batch.iter().filter(|d| d.seq > mark) {
                tx.prepare_cached(
                    "INSERT INTO applied_events (edge_id, seq, kind, applied_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![edge_id, d.seq, d.event.kind(), now])?;
                apply_event(&tx, &edge_id, &d.event)?;
                high = high.max(d.seq);
            }
            tx.execute(
                "UPDATE edges SET high_water = ?2, last_seen = ?3 WHERE edge_id = ?1",
                params![edge_id, high, now],
            )?;
            tx.commit()?;
            Ok(high)
        })
        .await
    }

    pub async fn return_units(&self, ret: &UnitReturn) -> Result<(), CentralError> {
        let ret = ret.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = tx.execute(
                "INSERT INTO unit_returns (return_id, edge_id, sku, quantity, returned_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (return_id) DO NOTHING",
                params![ret.return_id, ret.edge_id, ret.sku, ret.quantity, wall_ms()],
            )?;
            if inserted == 1 {
                tx.execute(
                    "UPDATE skus SET unallocated = unallocated + ?2 WHERE sku = ?1",
                    params![ret.sku, ret.quantity],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn wanted_skus(&self) -> Result<Vec<String>, CentralError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sku FROM skus WHERE wanted_at > ?1 AND unallocated = 0 ORDER BY sku",
            )?;
            let skus = stmt
                .query_map([wall_ms() - WANTED_FOR_MS], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(skus)
        })
        .await
    }

    pub async fn snapshot(&self) -> Result<Snapshot, CentralError> {
        self.with(|conn| {
            let mut snap = Snapshot::default();
            let mut stmt = conn.prepare("SELECT sku, stock_total, unallocated FROM skus")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (sku, total, unallocated) = row?;
                let ledger = snap.skus.entry(sku).or_default();
                ledger.stock_total = u64::try_from(total).unwrap_or(0);
                ledger.unallocated = u64::try_from(unallocated).unwrap_or(0);
            }
            for (sql, which) in super::PER_EDGE_SUMS {
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
                for row in rows {
                    let (sku, edge, n) = row?;
                    let ledger = snap.skus.entry(sku).or_default();
                    ledger
                        .per_edge(*which)
                        .insert(edge, u64::try_from(n).unwrap_or(0));
                }
            }
            let mut stmt = conn.prepare(super::EDGE_LEDGER_SQL)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    EdgeLedger {
                        url: r.get(1)?,
                        high_water: r.get(2)?,
                        events_applied: r.get(3)?,
                        orders: r.get(4)?,
                    },
                ))
            })?;
            for row in rows {
                let (edge, ledger) = row?;
                snap.edges.insert(edge, ledger);
            }
            Ok(snap)
        })
        .await
    }
}

fn touch_edge(conn: &Connection, edge_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE edges SET last_seen = ?2 WHERE edge_id = ?1")?
        .execute(params![edge_id, wall_ms()])?;
    Ok(())
}

fn apply_event(conn: &Connection, edge_id: &str, event: &OutboxEvent) -> rusqlite::Result<()> {
    match event {
        OutboxEvent::HoldChanged {
            cart_id,
            customer_id,
            sku,
            quantity,
            expires_at,
            ..
        } => {
            if *quantity == 0 {
                conn.prepare_cached(
                    "DELETE FROM holds WHERE edge_id = ?1 AND cart_id = ?2 AND sku = ?3",
                )?
                .execute(params![edge_id, cart_id, sku])?;
            } else {
                conn.prepare_cached(
                    "INSERT INTO holds (edge_id, cart_id, sku, customer_id, quantity, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (edge_id, cart_id, sku) DO UPDATE SET \
                     quantity = excluded.quantity, expires_at = excluded.expires_at",
                )?
                .execute(params![
                    edge_id,
                    cart_id,
                    sku,
                    customer_id,
                    quantity,
                    expires_at
                ])?;
            }
        }
        OutboxEvent::OrderPlaced {
            order_id,
            cart_id,
            customer_id,
            lines,
            total_cents,
            placed_at,
        } => {
            conn.prepare_cached(
                "INSERT INTO orders (order_id, edge_id, cart_id, customer_id, total_cents, placed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![order_id, edge_id, cart_id, customer_id, total_cents, placed_at])?;
            for l in lines {
                conn.prepare_cached(
                    "INSERT INTO order_lines (order_id, sku, quantity, unit_price_cents) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    order_id,
                    l.sku,
                    l.quantity,
                    l.unit_price_cents
                ])?;
            }
            // The cart's holds became this order.
            conn.prepare_cached("DELETE FROM holds WHERE edge_id = ?1 AND cart_id = ?2")?
                .execute(params![edge_id, cart_id])?;
        }
    }
    Ok(())
}
