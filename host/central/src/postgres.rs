//! The central database on PostgreSQL: the same ledger as the SQLite default, through a pooled
//! async client. Row locks (`FOR UPDATE`) serialize what SQLite's single writer serializes.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Transaction};

use super::{CentralError, EdgeLedger, GrantRequest, Snapshot, UnitReturn, WANTED_FOR_MS};
use crate::events::{Delivery, OutboxEvent};
use crate::sale::{Sale, SkuEntry};
use crate::time::wall_ms;

mod migrations {
    refinery::embed_migrations!("../../schema/central/postgres");
}

/// Key of the advisory lock edges take to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x00ca_47ed;

pub struct PgCentral {
    pool: Pool,
}

impl PgCentral {
    pub async fn open(url: &str) -> Result<Self, CentralError> {
        let config = tokio_postgres::Config::from_str(url)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            // While PostgreSQL is down, fail fast: the caller retries with backoff.
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| CentralError::Pool(e.to_string()))?;
        let central = Self { pool };
        central.migrate().await?;
        Ok(central)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CentralError> {
        self.pool
            .get()
            .await
            .map_err(|e| CentralError::Pool(e.to_string()))
    }

    async fn migrate(&self) -> Result<(), CentralError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let raw: &mut tokio_postgres::Client = &mut client;
        let migrated = migrations::migrations::runner().run_async(raw).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        migrated?;
        Ok(())
    }

    pub async fn load_sale(&self, sale: &Sale) -> Result<(), CentralError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("LOCK TABLE sales IN EXCLUSIVE MODE", &[])
            .await?;
        if let Some(row) = tx
            .query_opt("SELECT sale_id FROM sales LIMIT 1", &[])
            .await?
        {
            return Err(CentralError::SaleExists(row.get(0)));
        }
        tx.execute(
            "INSERT INTO sales (sale_id, starts_at, hold_ttl_seconds, loaded_at) VALUES ($1, $2, $3, $4)",
            &[&sale.sale_id, &sale.starts_at, &(sale.hold_ttl_ms / 1000), &wall_ms()],
        )
        .await?;
        for s in &sale.skus {
            tx.execute(
                "INSERT INTO skus (sku, sale_id, name, price_cents, limit_per_customer, \
                 sale_starts_at, stock_total, unallocated) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                &[
                    &s.sku,
                    &sale.sale_id,
                    &s.name,
                    &s.price_cents,
                    &i64::from(s.limit_per_customer),
                    &s.sale_starts_at,
                    &i64::from(s.stock_total),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn sale(&self) -> Result<Option<Sale>, CentralError> {
        let client = self.client().await?;
        let Some(head) = client
            .query_opt(
                "SELECT sale_id, starts_at, hold_ttl_seconds FROM sales LIMIT 1",
                &[],
            )
            .await?
        else {
            return Ok(None);
        };
        let sale_id: String = head.get(0);
        let rows = client
            .query(
                "SELECT sku, name, price_cents, limit_per_customer, sale_starts_at, stock_total \
                 FROM skus WHERE sale_id = $1 ORDER BY sku",
                &[&sale_id],
            )
            .await?;
        let skus = rows
            .iter()
            .map(|r| SkuEntry {
                sale_id: sale_id.clone(),
                ends_at: crate::time::Millis::MAX,
                hold_ttl_ms: head.get::<_, i64>(2) * 1000,
                sku: r.get(0),
                name: r.get(1),
                price_cents: r.get(2),
                limit_per_customer: u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX),
                sale_starts_at: r.get(4),
                stock_total: u32::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            })
            .collect();
        Ok(Some(Sale {
            sale_id,
            starts_at: head.get(1),
            hold_ttl_ms: head.get::<_, i64>(2) * 1000,
            skus,
        }))
    }

    pub async fn register_edge(&self, edge_id: &str, url: &str) -> Result<(), CentralError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO edges (edge_id, url, last_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (edge_id) DO UPDATE SET url = excluded.url, last_seen = excluded.last_seen",
                &[&edge_id, &url, &wall_ms()],
            )
            .await?;
        Ok(())
    }

    pub async fn grant(&self, req: &GrantRequest) -> Result<u32, CentralError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The SKU's row lock orders every grant of it, retries of the same id included.
        let unallocated: i64 = tx
            .query_opt(
                "SELECT unallocated FROM skus WHERE sku = $1 FOR UPDATE",
                &[&req.sku],
            )
            .await?
            .map_or(0, |r| r.get(0));
        if let Some(row) = tx
            .query_opt(
                "SELECT granted FROM grants WHERE grant_id = $1",
                &[&req.grant_id],
            )
            .await?
        {
            return Ok(u32::try_from(row.get::<_, i64>(0)).unwrap_or(0));
        }
        let requested = i64::from(req.requested);
        let granted = requested.min(unallocated);
        let now = wall_ms();
        tx.execute(
            "UPDATE skus SET unallocated = unallocated - $2, \
             wanted_at = CASE WHEN $3 THEN $4 ELSE wanted_at END WHERE sku = $1",
            &[&req.sku, &granted, &(granted < requested), &now],
        )
        .await?;
        tx.execute(
            "INSERT INTO grants (grant_id, edge_id, sku, requested, granted, granted_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &req.grant_id,
                &req.edge_id,
                &req.sku,
                &requested,
                &granted,
                &now,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE edges SET last_seen = $2 WHERE edge_id = $1",
            &[&req.edge_id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(u32::try_from(granted).unwrap_or(0))
    }

    pub async fn return_units(&self, ret: &UnitReturn) -> Result<(), CentralError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO unit_returns (return_id, edge_id, sku, quantity, returned_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (return_id) DO NOTHING",
                &[
                    &ret.return_id,
                    &ret.edge_id,
                    &ret.sku,
                    &i64::from(ret.quantity),
                    &wall_ms(),
                ],
            )
            .await?;
        if inserted == 1 {
            tx.execute(
                "UPDATE skus SET unallocated = unallocated + $2 WHERE sku = $1",
                &[&ret.sku, &i64::from(ret.quantity)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn wanted_skus(&self) -> Result<Vec<String>, CentralError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT sku FROM skus WHERE wanted_at > $1 AND unallocated = 0 ORDER BY sku",
                &[&(wall_ms() - WANTED_FOR_MS)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn apply(&self, edge_id: &str, batch: &[Delivery]) -> Result<i64, CentralError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The edge's row lock orders its batches: a redelivery waits, then skips.
        let mark: i64 = tx
            .query_opt(
                "SELECT high_water FROM edges WHERE edge_id = $1 FOR UPDATE",
                &[&edge_id],
            )
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| CentralError::UnknownEdge(edge_id.to_owned()))?;
        let now = wall_ms();
        let mut high = mark;
        for d in batch.iter().filter(|d| d.seq > mark) {
            tx.execute(
                "INSERT INTO applied_events (edge_id, seq, kind, applied_at) VALUES ($1, $2, $3, $4)",
                &[&edge_id, &d.seq, &d.event.kind(), &now],
            )
            .await?;
            apply_event(&tx, edge_id, &d.event).await?;
            high = high.max(d.seq);
        }
        tx.execute(
            "UPDATE edges SET high_water = $2, last_seen = $3 WHERE edge_id = $1",
            &[&edge_id, &high, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(high)
    }

    pub async fn snapshot(&self) -> Result<Snapshot, CentralError> {
        let client = self.client().await?;
        let mut snap = Snapshot::default();
        for r in client
            .query("SELECT sku, stock_total, unallocated FROM skus", &[])
            .await?
        {
            let ledger = snap.skus.entry(r.get(0)).or_default();
            ledger.stock_total = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
            ledger.unallocated = u64::try_from(r.get::<_, i64>(2)).unwrap_or(0);
        }
        for (sql, which) in super::PER_EDGE_SUMS {
            for r in client.query(*sql, &[]).await? {
                let ledger = snap.skus.entry(r.get(0)).or_default();
                let n = u64::try_from(r.get::<_, i64>(2)).unwrap_or(0);
                ledger.per_edge(*which).insert(r.get(1), n);
            }
        }
        for r in client.query(super::EDGE_LEDGER_SQL, &[]).await? {
            snap.edges.insert(
                r.get(0),
                EdgeLedger {
                    url: r.get(1),
                    high_water: r.get(2),
                    events_applied: r.get(3),
                    orders: r.get(4),
                },
            );
        }
        Ok(snap)
    }
}

async fn apply_event(
    tx: &Transaction<'_>,
    edge_id: &str,
    event: &OutboxEvent,
) -> Result<(), tokio_postgres::Error> {
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
                tx.execute(
                    "DELETE FROM holds WHERE edge_id = $1 AND cart_id = $2 AND sku = $3",
                    &[&edge_id, cart_id, sku],
                )
                .await?;
            } else {
                tx.execute(
                    "INSERT INTO holds (edge_id, cart_id, sku, customer_id, quantity, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (edge_id, cart_id, sku) DO UPDATE \
                     SET quantity = excluded.quantity, expires_at = excluded.expires_at",
                    &[
                        &edge_id,
                        cart_id,
                        sku,
                        customer_id,
                        &i64::from(*quantity),
                        expires_at,
                    ],
                )
                .await?;
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
            tx.execute(
                "INSERT INTO orders (order_id, edge_id, cart_id, customer_id, total_cents, placed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[order_id, &edge_id, cart_id, customer_id, total_cents, placed_at],
            )
            .await?;
            for l in lines {
                tx.execute(
                    "INSERT INTO order_lines (order_id, sku, quantity, unit_price_cents) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        order_id,
                        &l.sku,
                        &i64::from(l.quantity),
                        &l.unit_price_cents,
                    ],
                )
                .await?;
            }
            tx.execute(
                "DELETE FROM holds WHERE edge_id = $1 AND cart_id = $2",
                &[&edge_id, cart_id],
            )
            .await?;
        }
    }
    Ok(())
}
