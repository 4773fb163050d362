//! One edge host: its shared parts, its start-up (schema, catalog, module, writer), and the
//! background tasks that keep it in sync ([`crate::sync`]), stocked ([`crate::escrow`]) and
//! swept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::calendar::{self, CatalogCell};
use crate::clock::Clock;
pub use crate::config::{EdgeConfig, ModuleBytes};
use crate::customer::CreateLimit;
use crate::edge_db::{self, StockLine};
use crate::escrow::Allotments;
use crate::fleet::{Fleet, Peer};
use crate::identity::{Identity, Standing};
use crate::metrics::Metrics;
use crate::modules::{self, Modules, Trust};
use crate::rules::{ActiveRules, CartRules, FixedRules};
use crate::sync::SyncStatus;
use crate::wasm::{Runtime, sha256_hex};
use crate::writer::WriterHandle;
use cart_central::Central;
use cart_central::sale::Catalog;

/// A running edge's shared parts.
pub struct Edge {
    pub config: EdgeConfig,
    pub url: String,
    pub clock: Clock,
    /// The calendar of sales, as requests read it (see [`crate::calendar`]).
    catalog: CatalogCell,
    /// The rules cart updates run on.
    pub rules: Arc<ActiveRules>,
    pub writer: WriterHandle,
    pub central: Arc<Central>,
    pub allotments: Arc<Allotments>,
    pub modules: Modules,
    pub metrics: Arc<Metrics>,
    pub sync: Mutex<SyncStatus>,
    /// Where the outbox goes when not straight to central.
    pub queue: Option<cart_queue::Publisher>,
    /// Who this process is to central, and whether it may sell.
    pub identity: Identity,
    /// The other edges, and where a cart's requests go.
    pub fleet: Fleet,
    /// How many carts each client address may make (`None`: no limit).
    pub create_limit: Option<CreateLimit>,
    /// What the operator dashboard reads, gathered at most once a second.
    pub dashboard: crate::dashboard::Dashboard,
    /// Whether the edge is leaving the fleet (see [`crate::drain`]).
    pub drain: crate::drain::Drain,
    standing: Mutex<Standing>,
    readers: Arc<edge_db::Readers>,
}

impl Edge {
    /// Opens the edge's database, learns the sale, loads the module and starts the writer.
    pub async fn start(config: EdgeConfig, url: String) -> anyhow::Result<Arc<Self>> {
        // Through the queue, central answers only grants, returns and leases: one connection.
        let central = match &config.queue_url {
            Some(_) => Central::connect_with(&config.central_url, 1).await,
            None => Central::connect(&config.central_url).await,
        };
        let central =
            Arc::new(central.with_context(|| format!("opening central {}", config.central_url))?);
        let queue = match &config.queue_url {
            Some(url) => Some(cart_queue::Publisher::connect(url, &config.edge_id).await?),
            None => None,
        };
        // Central's sales if it answers; else the copy this edge stored last time.
        let sales = match central.sales_ending_after(config.clock.now()).await {
            Ok(sales) => sales,
            Err(e) => {
                tracing::warn!("central unreachable at start, using the stored catalog: {e}");
                Vec::new()
            }
        };
        // The module the fleet runs, which a joining edge runs too: its bytes are read only
        // when this edge does not store it already.
        let fleet_module = fleet_module(&central, &config.data_dir).await;
        let initial = Arc::clone(&config.module.0);
        anyhow::ensure!(!initial.is_empty(), "no cart module given to start on");
        let trust = Trust {
            keys: config.trusted_keys.clone(),
            started_with: sha256_hex(&initial),
        };
        let runtime = Runtime::new(config.sandbox)?;
        let (dir, edge_id, now) = (
            config.data_dir.clone(),
            config.edge_id.clone(),
            config.clock.now(),
        );
        let tag = crate::fleet::edge_tag(&config.edge_id);
        let (conn, identity, own_history, catalog, first, moved, adopted) = {
            let (runtime, trust) = (runtime.clone(), trust.clone());
            tokio::task::spawn_blocking(move || {
                let conn = edge_db::open_writer(&dir)?;
                let identity = Identity::open(&dir, &edge_id, &conn)?;
                let own_history = Identity::own_history(&conn)?;
                let tx = conn.unchecked_transaction()?;
                for sale in &sales {
                    calendar::store_sale(&tx, sale)?;
                }
                tx.commit()?;
                let catalog = calendar::load(&conn)?;
                let adopted = fleet_module
                    .as_ref()
                    .map(|m| modules::adopt_fleet_module(&conn, &runtime, m, &trust, now));
                let first = match adopted {
                    Some(Ok(module)) => module,
                    Some(Err(e)) => {
                        tracing::warn!("not running the fleet's module: {e:#}");
                        modules::start_module(&conn, &runtime, &initial, &trust, now)?
                    }
                    None => modules::start_module(&conn, &runtime, &initial, &trust, now)?,
                };
                let moved = crate::handoff::moved(&conn)?;
                let adopted = crate::handoff::adopted(&conn, &tag)?;
                anyhow::Ok((
                    conn,
                    identity,
                    own_history,
                    catalog,
                    Arc::new(first),
                    moved,
                    adopted,
                ))
            })
            .await??
        };
        let rules = Arc::new(ActiveRules::new(match &config.fixed_rules {
            Some(FixedRules(rules)) => Arc::clone(rules),
            None => Arc::clone(&first) as Arc<dyn CartRules>,
        }));
        let mut metrics = Metrics::default();
        metrics.register_instances(runtime.counters());
        let metrics = Arc::new(metrics);
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
            identity.incarnation.clone(),
            Arc::clone(&central),
            writer.clone(),
            config.clock.clone(),
            Arc::clone(&metrics),
        ));
        // Claim the edge id now: refusals end the start; an unreachable central does not.
        let claimed = tokio::time::timeout(
            CLAIM_WAIT,
            identity.claim(&central, &writer, &url, config.lease_ms(), config.take_over),
        )
        .await;
        let standing = match claimed {
            Ok(Ok(())) => Standing::Claimed,
            Ok(Err(e)) if e.is_refusal() => return Err(e.into()),
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".into(),
                };
                tracing::warn!(
                    "central is unreachable ({why}): {}",
                    if own_history {
                        "selling from this edge's own units until it answers"
                    } else {
                        "this new edge sells nothing until it answers"
                    }
                );
                Standing::Unclaimed { own_history }
            }
        };
        let fleet = Fleet::new(&config.edge_id, config.fleet_secret.clone());
        fleet.note_moved(moved);
        fleet.note_adopted(adopted);
        if standing == Standing::Claimed {
            // An edge whose carts the fleet could not tell from another's does not start.
            let registry = central.registry().await?;
            fleet
                .learn(
                    registry
                        .into_iter()
                        .map(|(edge_id, url)| Peer { edge_id, url })
                        .collect(),
                )
                .map_err(anyhow::Error::msg)?;
        }
        Ok(Arc::new(Self {
            identity,
            fleet,
            create_limit: CreateLimit::new(config.create_rate.per_second, config.create_rate.burst),
            standing: Mutex::new(standing),
            url,
            clock: config.clock.clone(),
            catalog: CatalogCell::new(catalog),
            rules,
            writer,
            central,
            allotments,
            modules,
            metrics,
            sync: Mutex::default(),
            queue,
            dashboard: crate::dashboard::Dashboard::default(),
            drain: crate::drain::Drain::default(),
            readers,
            config,
        }))
    }

    /// The calendar of sales now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.get()
    }

    /// Reads the calendar again from the edge's database.
    pub(crate) async fn reload_catalog(&self) -> anyhow::Result<()> {
        let catalog = self.read(calendar::load).await?;
        self.catalog.set(catalog);
        Ok(())
    }

    /// Whether this edge takes new carts (`/readyz`): it is not draining, central knows this
    /// process holds its edge id, and the writer is alive and moving. Otherwise, why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.drain.draining() {
            return Err("draining: handing its carts to other edges".into());
        }
        match self.standing() {
            Standing::Claimed => {}
            Standing::Unclaimed { .. } => {
                return Err("central has not confirmed this process's claim on its edge id".into());
            }
            Standing::Refused(why) => return Err(why),
        }
        if !self.writer.pulse().healthy(self.config.writer.stuck_after) {
            return Err("the writer is stopped or stuck".into());
        }
        Ok(())
    }

    /// Whether this edge may sell now.
    pub fn standing(&self) -> Standing {
        self.standing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_standing(&self, standing: Standing) {
        *self.standing.lock().unwrap_or_else(|p| p.into_inner()) = standing;
    }

    /// Runs a read on one of the edge's read-only connections, off the async workers. It sees
    /// the last commit and never waits for the writer.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(self.readers.read(f).await??)
    }

    /// A read with its own errors, which come back as they are, run on this thread: for a read
    /// by key, such as a cart's, which takes less time than handing it to a blocking thread.
    pub fn read_now<T, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> anyhow::Result<Result<T, E>> {
        self.readers.read_now(f)
    }

    pub async fn stock(&self) -> anyhow::Result<Vec<StockLine>> {
        self.read(edge_db::stock_rows).await
    }

    /// Starts the background tasks; they end when `shutdown` turns true.
    pub fn spawn_tasks(self: &Arc<Self>, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(crate::sync::deliver_outbox(
                Arc::clone(self),
                shutdown.clone(),
            )),
            tokio::spawn(sweep_holds(Arc::clone(self), shutdown.clone())),
            tokio::spawn(calendar::follow(Arc::clone(self), shutdown.clone())),
            tokio::spawn(crate::escrow::keep_stocked(
                Arc::clone(self),
                shutdown.clone(),
            )),
            tokio::spawn(crate::drain::resume_unfinished(
                Arc::clone(self),
                shutdown.clone(),
            )),
        ]
    }
}

/// The fleet's module as central records it: `Stored` when this edge has it already, `None`
/// when central records none or does not answer.
async fn fleet_module(central: &Central, dir: &std::path::Path) -> Option<modules::FleetCopy> {
    let (version, sha256) = match central.fleet_module_id().await {
        Ok(id) => id?,
        Err(e) => {
            tracing::warn!("central unreachable at start, not reading the fleet's module: {e}");
            return None;
        }
    };
    let dir = dir.to_owned();
    let sha = sha256.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let conn = edge_db::open_writer(&dir)?;
        anyhow::Ok(modules::stores(&conn, &sha)?)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or(false);
    if stored {
        return Some(modules::FleetCopy::Stored { version, sha256 });
    }
    match central.fleet_module().await {
        Ok(m) => m.map(modules::FleetCopy::Fetched),
        Err(e) => {
            tracing::warn!("reading the fleet's module from central: {e}");
            None
        }
    }
}

/// How long start-up waits for central to answer the claim before going on without it.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Waits `period`, or returns false when shutdown was asked for.
pub(crate) async fn pause(period: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}

/// Releases lapsed holds, and the holds of sales that have ended, on a timer: a batch per
/// transaction, until none are left.
async fn sweep_holds(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    while pause(edge.config.sweep_every, &mut shutdown).await {
        let now = edge.clock.now();
        let ended: Vec<String> = edge
            .catalog()
            .sales()
            .filter(|s| s.ends_at <= now)
            .map(|s| s.sale_id.clone())
            .collect();
        loop {
            let ended = ended.clone();
            match edge
                .writer
                .host(move |c| crate::carts::sweep(c, now, &ended, SWEEP_BATCH))
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
