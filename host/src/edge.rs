//! One edge host: its configuration, its start-up (schema, catalog, module, writer), and the
//! background work that keeps it stocked, swept and in sync with central.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::Connection;
use tokio::sync::watch;

use crate::allotment::Allotments;
use crate::central::Central;
use crate::clock::{Clock, Millis};
use crate::edge_db::{self, StockRow};
use crate::events::{Delivery, OutboxEvent};
use crate::metrics::Metrics;
use crate::modules::{self, Modules};
use crate::sale::{Catalog, Sale};
use crate::wasm::{Runtime, SandboxLimits};
use crate::writer::{GuestCall, GuestOutcome, WriterConfig, WriterHandle};

/// Everything `cart-host serve` is told. Tests fill in what they need and default the rest.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub edge_id: String,
    pub data_dir: PathBuf,
    pub central_url: String,
    /// The module used when the edge has none stored yet.
    pub module: PathBuf,
    /// The operator token; without one the operator API answers `403`.
    pub admin_token: Option<String>,
    /// The URL central records for this edge; by default `http://` and the listener's address.
    pub public_url: Option<String>,
    pub sandbox: SandboxLimits,
    pub writer: WriterConfig,
    pub clock: Clock,
    pub sweep_every: Duration,
    pub sync_every: Duration,
    /// Outbox events per central transaction.
    pub sync_batch: usize,
    /// How long a shopper who found too few units may wait for a grant before `sold_out`.
    pub shortage_wait: Duration,
    /// With any, only modules signed by one of these keys are deployed.
    pub trusted_keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            edge_id: "edge-1".into(),
            data_dir: "data/edge-1".into(),
            central_url: "sqlite:data/central.db".into(),
            module: "target/wasm32-wasip2/release/cart_guest.wasm".into(),
            admin_token: None,
            public_url: None,
            sandbox: SandboxLimits::default(),
            writer: WriterConfig::default(),
            clock: Clock::default(),
            sweep_every: Duration::from_secs(1),
            sync_every: Duration::from_millis(50),
            sync_batch: 500,
            shortage_wait: Duration::from_millis(150),
            trusted_keys: Vec::new(),
        }
    }
}

/// How the outbox delivery is doing, for `/admin/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncStatus {
    pub last_sync_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// A running edge's shared parts.
pub struct Edge {
    pub config: EdgeConfig,
    pub url: String,
    pub clock: Clock,
    pub catalog: Arc<Catalog>,
    pub runtime: Arc<Runtime>,
    pub writer: WriterHandle,
    pub central: Arc<Central>,
    pub allotments: Arc<Allotments>,
    pub modules: Modules,
    pub metrics: Arc<Metrics>,
    pub sync: Mutex<SyncStatus>,
    reader: Arc<Mutex<Connection>>,
}

impl Edge {
    /// Opens the edge's database, learns the sale, loads the module and starts the writer.
    pub async fn start(config: EdgeConfig, url: String) -> anyhow::Result<Arc<Self>> {
        let central = Arc::new(
            Central::connect(&config.central_url)
                .await
                .with_context(|| format!("opening central {}", config.central_url))?,
        );
        // Central's sale if it answers; else the copy this edge stored last time.
        let sale = match central.sale().await {
            Ok(sale) => sale,
            Err(e) => {
                tracing::warn!("central unreachable at start, using the stored catalog: {e}");
                None
            }
        };
        let (dir, module, sandbox, now) = (
            config.data_dir.clone(),
            config.module.clone(),
            config.sandbox,
            config.clock.now(),
        );
        let (conn, fence, catalog, runtime) = tokio::task::spawn_blocking(move || {
            let (conn, fence) = edge_db::open_writer(&dir)?;
            if let Some(sale) = &sale {
                store_catalog(&conn, sale)?;
            }
            let catalog = load_catalog(&conn)?;
            let runtime = modules::start_runtime(&conn, &module, sandbox, now)?;
            anyhow::Ok((conn, fence, catalog, runtime))
        })
        .await??;
        if catalog.skus.is_empty() {
            anyhow::bail!("no sale to serve: load one with `cart-host sale load` first");
        }
        let catalog = Arc::new(catalog);
        let runtime = Arc::new(runtime);
        let metrics = Arc::new(Metrics::default());
        let writer = WriterHandle::spawn(
            conn,
            fence,
            Arc::clone(&runtime),
            Arc::clone(&catalog),
            config.writer,
            Arc::clone(&metrics),
        )?;
        let reader = Arc::new(Mutex::new(edge_db::open_reader(&config.data_dir)?));
        let modules = Modules::new(
            Arc::clone(&runtime),
            writer.clone(),
            Arc::clone(&catalog),
            config.clock.clone(),
            config.trusted_keys.clone(),
        );
        let allotments = Arc::new(Allotments::new(
            config.edge_id.clone(),
            catalog.skus.keys().cloned(),
            Arc::clone(&central),
            writer.clone(),
            config.clock.clone(),
            Arc::clone(&metrics),
        ));
        Ok(Arc::new(Self {
            url,
            clock: config.clock.clone(),
            catalog,
            runtime,
            writer,
            central,
            allotments,
            modules,
            metrics,
            sync: Mutex::default(),
            reader,
            config,
        }))
    }

    /// Runs a read on the edge's read-only connection, off the async workers.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let reader = Arc::clone(&self.reader);
        Ok(tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await??)
    }

    pub async fn stock(&self) -> anyhow::Result<Vec<(String, StockRow)>> {
        self.read(edge_db::stock_rows).await
    }

    /// Starts the background tasks; they stop when `shutdown` turns true.
    pub fn spawn_tasks(self: &Arc<Self>, shutdown: &watch::Receiver<bool>) {
        tokio::spawn(deliver_outbox(Arc::clone(self), shutdown.clone()));
        tokio::spawn(sweep_holds(Arc::clone(self), shutdown.clone()));
        tokio::spawn(keep_stocked(Arc::clone(self), shutdown.clone()));
    }
}

fn store_catalog(conn: &Connection, sale: &Sale) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    edge_db::set_meta(&tx, "sale_id", &sale.sale_id)?;
    edge_db::set_meta(&tx, "hold_ttl_ms", &sale.hold_ttl_ms.to_string())?;
    for s in &sale.skus {
        tx.execute(
            "INSERT INTO catalog (sku, name, price_cents, limit_per_customer, sale_starts_at, stock_total) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (sku) DO UPDATE SET name = excluded.name, \
             price_cents = excluded.price_cents, limit_per_customer = excluded.limit_per_customer, \
             sale_starts_at = excluded.sale_starts_at, stock_total = excluded.stock_total",
            rusqlite::params![
                s.sku,
                s.name,
                s.price_cents,
                s.limit_per_customer,
                s.sale_starts_at,
                s.stock_total
            ],
        )?;
        tx.execute("INSERT OR IGNORE INTO stock (sku) VALUES (?1)", [&s.sku])?;
    }
    tx.commit()
}

fn load_catalog(conn: &Connection) -> rusqlite::Result<Catalog> {
    let mut stmt = conn.prepare(
        "SELECT sku, name, price_cents, limit_per_customer, sale_starts_at, stock_total FROM catalog",
    )?;
    let skus = stmt
        .query_map([], |r| {
            Ok(crate::sale::SkuEntry {
                sku: r.get(0)?,
                name: r.get(1)?,
                price_cents: r.get(2)?,
                limit_per_customer: r.get(3)?,
                sale_starts_at: r.get(4)?,
                stock_total: r.get(5)?,
            })
        })?
        .map(|s| s.map(|s| (s.sku.clone(), s)))
        .collect::<rusqlite::Result<_>>()?;
    Ok(Catalog {
        sale_id: edge_db::meta(conn, "sale_id")?.unwrap_or_default(),
        hold_ttl_ms: edge_db::meta(conn, "hold_ttl_ms")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(600_000),
        skus,
    })
}

/// Waits `period`, or returns false when shutdown was asked for.
async fn pause(period: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}

/// A grant request unanswered this long was interrupted, not slow.
const STALE_GRANT_MS: Millis = 5_000;

/// Delivers the outbox to central in order, in batches, each applied in one central
/// transaction; retries with backoff while central is away.
async fn deliver_outbox(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let mut registered = false;
    let mut backoff = edge.config.sync_every;
    let max_backoff = Duration::from_secs(5);
    loop {
        let result = async {
            if !registered {
                edge.central
                    .register_edge(&edge.config.edge_id, &edge.url)
                    .await?;
                registered = true;
            }
            // Grant requests a crash or an outage interrupted (not the ones in flight now).
            let before = edge.clock.now() - STALE_GRANT_MS;
            let (grants, returns) = edge
                .read(move |c| {
                    let grants = edge_db::pending_grants(c, before)?;
                    Ok((grants, edge_db::pending_returns(c, before)?))
                })
                .await?;
            edge.allotments.resume(grants).await?;
            edge.allotments.resume_returns(returns).await?;
            deliver_once(&edge).await
        }
        .await;
        let period = match result {
            Ok(delivered) => {
                backoff = edge.config.sync_every;
                if delivered > 0 {
                    Duration::ZERO
                } else {
                    edge.config.sync_every
                }
            }
            Err(e) => {
                tracing::warn!("outbox delivery failed, retrying in {backoff:?}: {e:#}");
                edge.sync
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some(format!("{e:#}"));
                backoff = (backoff * 2).min(max_backoff);
                backoff
            }
        };
        if !pause(period, &mut shutdown).await {
            return;
        }
    }
}

/// Delivers one batch; returns how many events central applied.
async fn deliver_once(edge: &Edge) -> anyhow::Result<usize> {
    let limit = edge.config.sync_batch;
    let (rows, backlog) = edge
        .read(move |c| {
            let after = edge_db::delivered_seq(c)?;
            Ok((
                edge_db::outbox_after(c, after, limit)?,
                edge_db::outbox_backlog(c)?,
            ))
        })
        .await?;
    edge.metrics.outbox_backlog.set(backlog);
    let Some(last) = rows.last().map(|r| r.seq) else {
        return Ok(0);
    };
    let batch = rows
        .iter()
        .map(|r| {
            let event: OutboxEvent = serde_json::from_str(&r.event)
                .with_context(|| format!("outbox event {} is not readable", r.seq))?;
            Ok(Delivery { seq: r.seq, event })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let high_water = edge.central.apply(&edge.config.edge_id, &batch).await?;
    // Central may be ahead of us (a crash after its commit, before ours): skip to its mark.
    let mark = high_water.max(last);
    edge.writer
        .host(move |c| edge_db::mark_delivered(c, mark))
        .await?;
    edge.metrics.events_delivered.inc_by(batch.len() as u64);
    let mut status = edge.sync.lock().unwrap_or_else(|p| p.into_inner());
    *status = SyncStatus {
        last_sync_at: Some(edge.clock.now()),
        last_error: None,
    };
    Ok(batch.len())
}

/// Calls the guest's `sweep` on a timer so lapsed holds give their units back.
async fn sweep_holds(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    while pause(edge.config.sweep_every, &mut shutdown).await {
        loop {
            match edge.writer.guest(GuestCall::Sweep, edge.clock.now()).await {
                Ok(a) => match a.outcome {
                    GuestOutcome::Swept(n) if n >= SWEEP_BATCH => continue,
                    _ => break,
                },
                Err(e) => {
                    tracing::warn!("sweep failed: {e}");
                    break;
                }
            }
        }
    }
}

/// The guest expires at most this many holds per `sweep` call (its `rules::SWEEP_BATCH`); a
/// full batch means there may be more.
const SWEEP_BATCH: u32 = 500;

/// Keeps each SKU's free units near its demand: a first grant per SKU, top-ups when free units
/// fall below about a second of demand, and units given back when this edge is not selling
/// them, or when another edge is out and central has none left.
async fn keep_stocked(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let mut first = true;
    loop {
        if let Err(e) = balance(&edge, first).await {
            tracing::warn!("keeping stock balanced: {e:#}");
        } else {
            first = false;
        }
        if !pause(Duration::from_millis(200), &mut shutdown).await {
            return;
        }
    }
}

async fn balance(edge: &Edge, first: bool) -> anyhow::Result<()> {
    let stock = edge.stock().await?;
    let wanted = edge.central.wanted_skus().await?;
    for (sku, row) in stock {
        let Some(entry) = edge.catalog.sku(&sku) else {
            continue;
        };
        let demand = edge.allotments.recent_demand(&sku);
        let reserve = initial_grant(entry.stock_total);
        if first && row.free + row.held + row.sold == 0 {
            edge.allotments.top_up(&sku, reserve).await?;
        } else if row.free < demand {
            edge.allotments
                .top_up(&sku, demand.saturating_mul(2))
                .await?;
        } else if wanted.contains(&sku) && row.free > demand {
            // Another edge's shoppers are refused while these units sit here.
            edge.allotments.give_back(&sku, row.free - demand).await?;
        } else if demand == 0 && row.free > reserve {
            edge.allotments.give_back(&sku, row.free - reserve).await?;
        }
    }
    Ok(())
}

/// An edge's first grant of a SKU: a tenth of the stock, at least one unit.
fn initial_grant(stock_total: u32) -> u32 {
    (stock_total / 10).max(1).min(stock_total)
}
