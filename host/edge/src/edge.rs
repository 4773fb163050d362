//! One edge host: its configuration, its start-up (schema, catalog, module, writer), and the
//! background work that keeps it stocked, swept and in sync with central.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::Connection;
use tokio::sync::watch;

use crate::clock::{Clock, Millis};
use crate::edge_db::{self, StockLine};
use crate::escrow::Allotments;
use crate::metrics::Metrics;
use crate::modules::{self, Modules, Trust};
use crate::rules::{ActiveRules, CartRules, FixedRules};
use crate::wasm::{Runtime, SandboxLimits, sha256_hex};
use crate::writer::{WriterConfig, WriterHandle};
use cart_central::events::{Delivery, OutboxEvent};
use cart_central::sale::{Catalog, Sale};
use cart_central::{Central, SkuKey};

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
    /// Rules to start on instead of the stored module (the benchmarks' native baseline).
    pub fixed_rules: Option<FixedRules>,
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
            fixed_rules: None,
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
    /// The rules cart updates run on.
    pub rules: Arc<ActiveRules>,
    pub writer: WriterHandle,
    pub central: Arc<Central>,
    pub allotments: Arc<Allotments>,
    pub modules: Modules,
    pub metrics: Arc<Metrics>,
    pub sync: Mutex<SyncStatus>,
    readers: Arc<edge_db::Readers>,
}

impl Edge {
    /// Opens the edge's database, learns the sale, loads the module and starts the writer.
    pub async fn start(config: EdgeConfig, url: String) -> anyhow::Result<Arc<Self>> {
        let central = Arc::new(
            Central::connect(&config.central_url)
                .await
                .with_context(|| format!("opening central {}", config.central_url))?,
        );
        // Central's sales if it answers; else the copy this edge stored last time.
        let sales = match central.sales_ending_after(config.clock.now()).await {
            Ok(sales) => sales,
            Err(e) => {
                tracing::warn!("central unreachable at start, using the stored catalog: {e}");
                Vec::new()
            }
        };
        let initial = std::fs::read(&config.module)
            .with_context(|| format!("reading the module {}", config.module.display()))?;
        let trust = Trust {
            keys: config.trusted_keys.clone(),
            started_with: sha256_hex(&initial),
        };
        let runtime = Runtime::new(config.sandbox)?;
        let (dir, now) = (config.data_dir.clone(), config.clock.now());
        let (conn, catalog, first) = {
            let (runtime, trust) = (runtime.clone(), trust.clone());
            tokio::task::spawn_blocking(move || {
                let conn = edge_db::open_writer(&dir)?;
                for sale in &sales {
                    store_catalog(&conn, sale)?;
                }
                let catalog = load_catalog(&conn)?;
                let first = modules::start_module(&conn, &runtime, &initial, &trust, now)?;
                anyhow::Ok((conn, catalog, Arc::new(first)))
            })
            .await??
        };
        if catalog.skus.is_empty() {
            anyhow::bail!("no sale to serve: load one with `cart-host sale load` first");
        }
        let catalog = Arc::new(catalog);
        let rules = Arc::new(ActiveRules::new(match &config.fixed_rules {
            Some(FixedRules(rules)) => Arc::clone(rules),
            None => Arc::clone(&first) as Arc<dyn CartRules>,
        }));
        let metrics = Arc::new(Metrics::default());
        let writer = WriterHandle::spawn(conn, config.writer, Arc::clone(&metrics))?;
        let readers = Arc::new(edge_db::Readers::new(&config.data_dir));
        let modules = Modules::new(
            runtime,
            Arc::clone(&rules),
            first,
            writer.clone(),
            config.clock.clone(),
            trust,
        );
        let allotments = Arc::new(Allotments::new(
            config.edge_id.clone(),
            catalog.skus.values().cloned(),
            Arc::clone(&central),
            writer.clone(),
            config.clock.clone(),
            Arc::clone(&metrics),
        ));
        Ok(Arc::new(Self {
            url,
            clock: config.clock.clone(),
            catalog,
            rules,
            writer,
            central,
            allotments,
            modules,
            metrics,
            sync: Mutex::default(),
            readers,
            config,
        }))
    }

    /// Runs a read on one of the edge's read-only connections, off the async workers. It sees
    /// the last commit and never waits for the writer.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(self.readers.read(f).await??)
    }

    /// [`Self::read`] for reads with their own errors, which come back as they are.
    pub async fn read_with<T: Send + 'static, E: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> anyhow::Result<Result<T, E>> {
        self.readers.read(f).await
    }

    pub async fn stock(&self) -> anyhow::Result<Vec<StockLine>> {
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
    for s in &sale.skus {
        tx.execute(
            "INSERT INTO catalog (sale_id, sku, name, price_cents, limit_per_customer, starts_at, \
               ends_at, hold_ttl_ms, stock_total) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (sale_id, sku) DO UPDATE SET \
               name = excluded.name, price_cents = excluded.price_cents, \
               limit_per_customer = excluded.limit_per_customer, starts_at = excluded.starts_at, \
               ends_at = excluded.ends_at, hold_ttl_ms = excluded.hold_ttl_ms, \
               stock_total = excluded.stock_total",
            rusqlite::params![
                s.sale_id,
                s.sku,
                s.name,
                s.price_cents,
                s.limit_per_customer,
                s.sale_starts_at,
                s.ends_at,
                s.hold_ttl_ms,
                s.stock_total
            ],
        )?;
        edge_db::add_stock(&tx, &s.sale_id, &s.sku)?;
    }
    tx.commit()
}

fn load_catalog(conn: &Connection) -> rusqlite::Result<Catalog> {
    let mut stmt = conn.prepare(
        "SELECT sale_id, sku, name, price_cents, limit_per_customer, starts_at, ends_at, \
           hold_ttl_ms, stock_total FROM catalog",
    )?;
    let entries = stmt
        .query_map([], |r| {
            Ok(cart_central::sale::SkuEntry {
                sale_id: r.get(0)?,
                sku: r.get(1)?,
                name: r.get(2)?,
                price_cents: r.get(3)?,
                limit_per_customer: r.get(4)?,
                sale_starts_at: r.get(5)?,
                ends_at: r.get(6)?,
                hold_ttl_ms: r.get(7)?,
                stock_total: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Catalog::new(entries))
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

/// Releases lapsed holds on a timer, a batch per transaction, until none are left.
async fn sweep_holds(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    while pause(edge.config.sweep_every, &mut shutdown).await {
        loop {
            let now = edge.clock.now();
            match edge
                .writer
                .host(move |c| crate::carts::sweep(c, now, SWEEP_BATCH))
                .await
            {
                Ok(n) if n >= SWEEP_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("sweep failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Lapsed holds released per transaction.
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
    for StockLine {
        sale_id,
        sku,
        units: row,
    } in stock
    {
        let Some(entry) = edge.catalog.entry(&sale_id, &sku) else {
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
        } else if wanted.contains(&SkuKey::new(&sale_id, &sku)) && row.free > demand {
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
