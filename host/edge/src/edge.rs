//! One edge host: the parts it is made of (its books, its rules, its writer, central, its place
//! in the fleet) and its start-up: open the books, choose the module, claim the edge id. Its
//! background loops are [`crate::tasks`]'; its HTTP face is [`crate::http`].

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use cart_central::sale::{Catalog, Sale};
use cart_central::{Central, CentralError, RetiredUnits};
use rusqlite::Connection;

use crate::asked::Sample;
use crate::calendar::{self, CatalogCell};
use crate::clock::{Clock, Millis};
pub use crate::config::{EdgeConfig, ModuleBytes};
use crate::customer::CreateLimit;
use crate::escrow::Allotments;
use crate::fleet::{Fleet, edge_tag};
use crate::handoff;
use crate::identity::{Identity, Standing};
use crate::lifecycle::Drain;
use crate::locks;
use crate::metrics::Metrics;
use crate::modules::{self, FleetCopy, Modules, Trust};
use crate::rules::{ActiveRules, CartRules, FixedRules};
use crate::store::db::{self, Readers, StockLine};
use crate::store::writer::WriterHandle;
use crate::tls::EdgeTls;
use crate::wasm::{LoadedModule, Runtime, sha256_hex};
use crate::wire::SyncStatus;

/// Why an edge that cannot renew its lease does not sell.
pub const NO_LEASE: &str = "this edge cannot renew its lease at central, so it has stopped \
    selling before central could give its id to another process; it sells again once central \
    answers";

/// How long start-up waits for central to answer the claim before going on without it.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// A running edge's shared parts.
pub struct Edge {
    pub config: EdgeConfig,
    pub url: String,
    pub clock: Clock,
    /// The calendar of sales, as requests read it (see [`crate::calendar`]).
    catalog: CatalogCell,
    /// The rules cart updates run on.
    pub rules: Arc<ActiveRules>,
    /// The requests they were asked most recently, for `rules diff --edge`.
    pub asked: Arc<Sample>,
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
    /// What the edge serves HTTPS with, if it does.
    pub tls: Option<EdgeTls>,
    /// How many carts each client address may make (`None`: no limit).
    pub create_limit: Option<CreateLimit>,
    /// Whether the edge is leaving the fleet (see [`crate::drain`]).
    pub drain: Drain,
    standing: Mutex<Standing>,
    /// The version of central's calendar this edge last loaded (0: none yet).
    calendar_version: AtomicI64,
    /// What customers bought and hold in this edge id's retired histories, as last stored.
    retired_units: Mutex<Vec<RetiredUnits>>,
    readers: Arc<Readers>,
}

/// What the edge's folder holds when it starts, read in one go off the async workers.
struct Books {
    conn: Connection,
    identity: Identity,
    /// Whether this folder has ever been claimed at central.
    own_history: bool,
    catalog: Catalog,
    /// The module the edge starts on.
    first: Arc<LoadedModule>,
    /// Why it is not the fleet's, when the fleet's cannot run here.
    not_the_fleets: Option<String>,
    /// Carts this edge handed off, and carts it keeps for other edges.
    moved: Vec<(String, Option<String>)>,
    adopted: Vec<String>,
}

impl Edge {
    /// Opens the edge's books, learns the sale, chooses the module, starts the writer and claims
    /// the edge id at central.
    pub async fn start(config: EdgeConfig, url: String) -> anyhow::Result<Arc<Self>> {
        let tls = config.tls.as_ref().map(EdgeTls::load).transpose()?;
        // Through the queue, central answers only grants, returns and leases: one connection.
        let connections = match &config.queue_url {
            Some(_) => 1,
            None => cart_central::PG_CONNECTIONS,
        };
        let central =
            Central::connect_with(&config.central_url, connections, config.central_schema).await;
        let central = Arc::new(central.with_context(|| {
            format!(
                "opening central {}",
                cart_central::redacted(&config.central_url)
            )
        })?);
        let queue = match &config.queue_url {
            Some(url) => Some(
                cart_queue::Publisher::connect(url, &config.queue_auth, &config.edge_id).await?,
            ),
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
        let books = {
            let (runtime, trust, config) = (runtime.clone(), trust.clone(), config.clone());
            tokio::task::spawn_blocking(move || {
                open_books(&config, &sales, &runtime, &trust, fleet_module, &initial)
            })
            .await??
        };
        let rules = Arc::new(ActiveRules::new(match &config.fixed_rules {
            Some(FixedRules(rules)) => Arc::clone(rules),
            None => Arc::clone(&books.first) as Arc<dyn CartRules>,
        }));
        let mut metrics = Metrics::default();
        metrics.register_instances(runtime.counters());
        let metrics = Arc::new(metrics);
        let writer = WriterHandle::spawn(books.conn, config.writer, Arc::clone(&metrics))?;
        let readers = Arc::new(Readers::new(&config.data_dir, Arc::clone(writer.mark())));
        let modules = Modules::new(
            runtime,
            Arc::clone(&rules),
            books.first,
            books.not_the_fleets,
            writer.clone(),
            config.clock.clone(),
            trust,
        );
        let identity = books.identity;
        let allotments = Arc::new(Allotments::new(
            config.edge_id.clone(),
            identity.incarnation.clone(),
            Arc::clone(&central),
            writer.clone(),
            config.clock.clone(),
            Arc::clone(&metrics),
        ));
        let standing = claim(
            &identity,
            &central,
            &writer,
            &url,
            &config,
            books.own_history,
        )
        .await?;
        let fleet = Fleet::new(
            &config.edge_id,
            &url,
            config.fleet_secret.clone(),
            tls.as_ref(),
            Arc::clone(&central),
        );
        fleet.note_moved(books.moved);
        fleet.note_adopted(books.adopted);
        if standing == Standing::Claimed {
            // An edge whose carts the fleet could not tell from another's does not start.
            fleet
                .learn(central.registry().await?)
                .map_err(anyhow::Error::msg)?;
        }
        let edge = Arc::new(Self {
            identity,
            fleet,
            tls,
            create_limit: CreateLimit::new(config.create_rate.per_second, config.create_rate.burst),
            standing: Mutex::new(standing),
            calendar_version: AtomicI64::new(0),
            retired_units: Mutex::default(),
            url,
            clock: config.clock.clone(),
            catalog: CatalogCell::new(books.catalog),
            rules,
            asked: Arc::default(),
            writer,
            central,
            allotments,
            modules,
            metrics,
            sync: Mutex::default(),
            queue,
            drain: Drain::default(),
            readers,
            config,
        });
        // A claimed edge sells at once: with central's calendar and what its customers bought
        // in the histories a take-over retired, which their limits count.
        if edge.standing() == Standing::Claimed
            && let Err(e) = edge.follow_calendar(None).await
        {
            tracing::warn!("reading central's calendar after the claim: {e:#}");
        }
        Ok(edge)
    }

    /// The calendar of sales now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.get()
    }

    /// Reads the calendar again from the edge's database.
    async fn reload_catalog(&self) -> anyhow::Result<()> {
        let catalog = self.read(calendar::load).await?;
        self.catalog.set(catalog);
        Ok(())
    }

    /// The version of central's calendar this edge has loaded.
    pub fn calendar_version(&self) -> i64 {
        self.calendar_version.load(Ordering::Acquire)
    }

    /// Brings the calendar up to central's `version` (read now when `None`): the sales loaded,
    /// replaced or ended there since; and drops the ended sales this edge has settled, a day
    /// after their end (until then their SKUs answer `sale_ended`).
    pub async fn follow_calendar(&self, version: Option<i64>) -> anyhow::Result<()> {
        let now = self.clock.now();
        let keep_ended =
            Millis::try_from(self.config.keep_ended.as_millis()).unwrap_or(Millis::MAX);
        let version = match version {
            Some(v) => v,
            None => self.central.catalog_version().await?,
        };
        let mut changed = false;
        if self.calendar_version() != version {
            let sales = self
                .central
                .sales_ending_after(now.saturating_sub(keep_ended))
                .await?;
            self.writer
                .host(move |c| {
                    for sale in &sales {
                        calendar::store_sale(c, sale)?;
                    }
                    Ok(())
                })
                .await?;
            changed = true;
        }
        let settled_before = now.saturating_sub(keep_ended);
        if self.catalog().sales().any(|s| s.ends_at <= settled_before) {
            let dropped = self
                .writer
                .host(move |c| calendar::drop_finished(c, settled_before, now))
                .await?;
            for sale_id in &dropped {
                tracing::info!(sale_id, "sale ended a day ago and settled here: dropped");
            }
            changed |= !dropped.is_empty();
        }
        if changed {
            self.reload_catalog().await?;
        }
        self.calendar_version.fetch_max(version, Ordering::AcqRel);
        self.follow_retired_units().await
    }

    /// Keeps what customers bought and hold in this edge id's retired histories (a take-over
    /// wrote them off) in the books, so that their limits count it.
    async fn follow_retired_units(&self) -> anyhow::Result<()> {
        let units = self.central.retired_units(&self.config.edge_id).await?;
        if *locks::lock(&self.retired_units) == units {
            return Ok(());
        }
        let stored = units.clone();
        self.writer
            .host(move |c| crate::carts::set_retired_units(c, &stored))
            .await?;
        *locks::lock(&self.retired_units) = units;
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
            Standing::Refused(why) | Standing::Superseded(why) => return Err(why),
        }
        if !self.identity.holds_lease() {
            return Err(NO_LEASE.into());
        }
        if !self.writer.pulse().healthy(self.config.writer.stuck_after) {
            return Err("the writer is stopped or stuck".into());
        }
        if let Some(why) = self.modules.not_the_fleets() {
            return Err(why);
        }
        Ok(())
    }

    /// Whether this edge may sell now.
    pub fn standing(&self) -> Standing {
        locks::lock(&self.standing).clone()
    }

    pub(crate) fn set_standing(&self, standing: Standing) {
        *locks::lock(&self.standing) = standing;
    }

    /// Runs a read on one of the edge's read-only connections, off the async workers. It sees
    /// the last commit and never waits for the writer, but its answer waits for the disk to
    /// have what it saw.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(self.readers.read(f).await??)
    }

    /// A read with its own errors, which come back as they are, run on this thread: for a read
    /// by key, such as a cart's, which takes less time than handing it to a blocking thread.
    pub async fn read_here<T, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> anyhow::Result<Result<T, E>> {
        self.readers.read_here(f).await
    }

    pub async fn stock(&self) -> anyhow::Result<Vec<StockLine>> {
        self.read(db::stock_rows).await
    }
}

/// Opens the folder's books: its database (migrated), its identity and history, the sales
/// central answered with, the module to start on, and where its carts went.
fn open_books(
    config: &EdgeConfig,
    sales: &[Sale],
    runtime: &Runtime,
    trust: &Trust,
    fleet_module: Option<FleetCopy>,
    initial: &[u8],
) -> anyhow::Result<Books> {
    let (dir, now) = (&config.data_dir, config.clock.now());
    let conn = db::open_writer(dir)?;
    let identity = Identity::open(dir, &config.edge_id, &conn, config.take_over)?;
    let own_history = Identity::own_history(&conn)?;
    let tx = conn.unchecked_transaction()?;
    for sale in sales {
        calendar::store_sale(&tx, sale)?;
    }
    tx.commit()?;
    let catalog = calendar::load(&conn)?;
    let (first, not_the_fleets) = choose_module(&conn, runtime, trust, fleet_module, initial, now)?;
    let moved = handoff::moved(&conn)?;
    let adopted = handoff::adopted(&conn, &edge_tag(&config.edge_id))?;
    Ok(Books {
        conn,
        identity,
        own_history,
        catalog,
        first: Arc::new(first),
        not_the_fleets,
        moved,
        adopted,
    })
}

/// The module an edge starts on: the fleet's when it can run it, else the one it stored last
/// (or was started with), and why it is not the fleet's. An edge on other rules than the
/// fleet's is not ready until an operator deploys or activates a module on it.
fn choose_module(
    conn: &Connection,
    runtime: &Runtime,
    trust: &Trust,
    fleet_module: Option<FleetCopy>,
    initial: &[u8],
    now: i64,
) -> anyhow::Result<(LoadedModule, Option<String>)> {
    let mut not_the_fleets = None;
    if let Some(fleet_module) = fleet_module {
        match modules::adopt_fleet_module(conn, runtime, &fleet_module, trust, now) {
            Ok(module) => return Ok((module, None)),
            Err(e) => {
                let why = format!(
                    "this edge cannot run the fleet's cart rules ({e:#}): deploy or activate a \
                     module it can run"
                );
                tracing::warn!("{why}");
                not_the_fleets = Some(why);
            }
        }
    }
    Ok((
        modules::start_module(conn, runtime, initial, trust, now)?,
        not_the_fleets,
    ))
}

/// Claims the edge id at central: refusals end the start; an unreachable central does not.
async fn claim(
    identity: &Identity,
    central: &Central,
    writer: &WriterHandle,
    url: &str,
    config: &EdgeConfig,
    own_history: bool,
) -> anyhow::Result<Standing> {
    let claimed = tokio::time::timeout(
        CLAIM_WAIT,
        identity.claim(central, writer, url, config.lease, config.take_over),
    )
    .await;
    Ok(match claimed {
        Ok(Ok(_)) => Standing::Claimed,
        // A folder whose history a take-over wrote off: it delivers and gives back, no more.
        Ok(Err(e @ CentralError::Retired { .. })) => {
            tracing::warn!("{e}");
            Standing::Superseded(e.to_string())
        }
        // A take-over waits for the old process's lease to lapse.
        Ok(Err(e @ CentralError::EdgeRunning { .. })) if config.take_over => {
            tracing::warn!("{e}: taking it over once that lease has lapsed");
            Standing::Unclaimed { own_history }
        }
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
    })
}

/// The fleet's module as central records it: `Stored` when this edge has it already, `None`
/// when central records none or does not answer.
async fn fleet_module(central: &Central, dir: &Path) -> Option<FleetCopy> {
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
        let conn = db::open_writer(&dir)?;
        anyhow::Ok(modules::stores(&conn, &sha)?)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or(false);
    if stored {
        return Some(FleetCopy::Stored { version, sha256 });
    }
    match central.fleet_module().await {
        Ok(m) => m.map(FleetCopy::Fetched),
        Err(e) => {
            tracing::warn!("reading the fleet's module from central: {e}");
            None
        }
    }
}
