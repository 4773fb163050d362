//! The central database: owns the stock, grants units to edges, and applies their outboxes
//! exactly once by `(edge_id, seq)`. SQLite ([`sqlite`]) is the embedded default; PostgreSQL
//! ([`postgres`]) the production one. Both keep the same ledger with the same SQL where they can.
//!
//! - [`sale`]: the sale file and the catalog edges serve from; [`events`]: the outbox's events;
//!   [`time`]: milliseconds and RFC 3339.

// Server code answers errors; it does not panic on them.
#![warn(clippy::expect_used)]

mod db;
mod ledger;
mod pg_connect;
mod postgres;
mod schema;
mod sqlite;

pub mod events;
pub mod sale;
pub mod time;

pub use ledger::FORGET_BATCH;
pub use pg_connect::{read_roots, redacted, with_password};
pub use schema::{Release, SchemaPolicy};

use std::collections::BTreeMap;
use std::fmt;

use crate::db::{Tx, params};
use crate::events::{Delivery, Sender};
use crate::sale::Sale;
use crate::time::{Millis, wall_ms};

/// How long after an edge asked for more than was left central keeps asking others to give
/// their spare units back.
pub const WANTED_FOR_MS: i64 = 2_000;

/// An error and every cause under it, once each (some errors print their cause themselves).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("unusable central URL {0}: use sqlite:PATH or postgres://user@host:port/db")]
    BadUrl(String),
    #[error("central URL {url}: {why}")]
    PostgresUrl { url: String, why: String },
    #[error("sale {sale_id} has started and differs from the one loaded: {}", differences.join("; "))]
    SaleChanged {
        sale_id: String,
        differences: Vec<String>,
    },
    #[error(
        "sale {sale_id} shares SKU codes with sale {other}, which runs at the same time: {}",
        skus.join(", ")
    )]
    SaleOverlaps {
        sale_id: String,
        other: String,
        skus: Vec<String>,
    },
    #[error("{granted} units of {sku} are granted to edges already; its stock cannot be {stock}")]
    Granted {
        sku: String,
        granted: i64,
        stock: u32,
    },
    #[error("no sale {0:?}")]
    UnknownSale(String),
    #[error("sale {0} was ended by an operator and stays ended: load the sale under another id")]
    SaleEnded(String),
    #[error("no SKU {1:?} in sale {0:?}")]
    UnknownSku(String, String),
    #[error("edge {0:?} has not registered with central (or not with this history)")]
    UnknownEdge(String),
    #[error("hand-off {0} was recorded between other edges")]
    HandoffConflict(String),
    #[error(
        "edge {edge_id}'s outbox is applied up to seq {applied}; the hand-off needs {needed} \
         first"
    )]
    OutboxBehind {
        edge_id: String,
        applied: i64,
        needed: i64,
    },
    #[error(
        "edge {edge_id} is being served by another process (incarnation {incarnation}, lease \
         until {}): stop that one first, or give this one another --edge-id",
        crate::time::rfc3339(*lease_until)
    )]
    EdgeRunning {
        edge_id: String,
        incarnation: String,
        lease_until: Millis,
        /// How long the lease had to run when central answered, by central's clock.
        left_ms: Millis,
    },
    #[error(
        "edge {edge_id}: this data folder's history ({local_history}, outbox up to seq \
         {local_seq}) is not the one central has applied ({central_history}, up to seq \
         {central_seq}): a fresh or restored folder. It will not sell. To accept it, restart \
         with --take-over: central then writes the old history off (its holds are released, \
         its unsold units return to the sale, its orders stay sold under a retired name) and \
         this folder starts a new history, discarding whatever it held"
    )]
    HistoryMismatch {
        edge_id: String,
        central_history: String,
        central_seq: i64,
        local_history: String,
        local_seq: i64,
    },
    #[error("edge {0} is now served by another process: this one must stop selling")]
    Superseded(String),
    #[error(
        "edge {edge_id}: this folder's history was written off by a take-over (as {retired}): \
         this process sells nothing, and delivers what the folder holds and gives its units back"
    )]
    Retired { edge_id: String, retired: String },
    #[error("edge {edge_id}'s outbox event {seq} is not vouched for by a key of its history")]
    BadSignature { edge_id: String, seq: i64 },
    #[error(
        "{edge_id} may give back at most {spare} units of {sku} (allotted, neither held nor \
         sold, as central knows it), not {quantity}"
    )]
    ReturnRefused {
        edge_id: String,
        sku: String,
        quantity: u32,
        spare: i64,
    },
    #[error(
        "edge {edge_id}'s outbox is applied up to seq {applied}; its return of units waits for \
         seq {needed}, so that central counts what the edge held and sold before what it gave \
         back"
    )]
    ReturnEarly {
        edge_id: String,
        applied: i64,
        needed: i64,
    },
    #[error(
        "central was restored from a backup and grants nothing new until the edges have sent \
         their grants again (two minutes at most); waiting for {waiting_for}"
    )]
    Reconciling { waiting_for: String },
    #[error("hand-off {0} to this edge is recorded and not taken yet")]
    HandoffUntaken(String),
    #[error("central database: {0}")]
    Decode(String),
    #[error("central SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("central PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("central PostgreSQL pool: {0}")]
    Pool(String),
    #[error("central did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("central schema: {0}")]
    Migration(#[from] refinery::Error),
    #[error(
        "central's schema is at release {central}, which processes of release {edges_from} or \
         later may run against; this is cart-host {mine}: run a newer cart-host here (README, \
         \"Upgrades\")"
    )]
    SchemaTooNew {
        central: String,
        edges_from: String,
        mine: String,
    },
    #[error(
        "central's schema is at release {central}, older than this cart-host {mine}, which does \
         not change it (--schema check): run `cart-host migrate` of release {mine} first"
    )]
    SchemaBehind { central: String, mine: String },
    #[error("central database file: {0}")]
    Io(#[from] std::io::Error),
    #[error("central task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CentralError {
    /// Central answered, and the answer is no: another process holds the edge id, the
    /// histories differ, or the schema is not one this release runs against. Retrying changes
    /// nothing until an operator acts.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::EdgeRunning { .. }
                | Self::HistoryMismatch { .. }
                | Self::Superseded(_)
                | Self::Retired { .. }
                | Self::SchemaTooNew { .. }
                | Self::SchemaBehind { .. }
        )
    }
}

/// A SKU of a sale.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkuKey {
    pub sale_id: String,
    pub sku: String,
}

impl SkuKey {
    pub fn new(sale_id: impl Into<String>, sku: impl Into<String>) -> Self {
        Self {
            sale_id: sale_id.into(),
            sku: sku.into(),
        }
    }
}

impl fmt::Display for SkuKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sale_id, self.sku)
    }
}

/// A process's claim on an edge id.
#[derive(Clone, Debug)]
pub struct Claim {
    pub edge_id: String,
    pub url: String,
    /// The data folder's history.
    pub history_id: String,
    /// This process.
    pub incarnation: String,
    /// The process that served this folder before, if any (it is gone: we hold the folder).
    pub previous_incarnation: Option<String>,
    /// The highest outbox sequence number this folder has ever used.
    pub local_seq: i64,
    pub lease_ms: i64,
    /// Write the old history off if it does not match (`serve --take-over`, once the old
    /// process's lease has lapsed).
    pub take_over: bool,
    /// This process was started to take the id over (`serve --take-over`): while it waits for
    /// the old process's lease, central keeps that lease from being renewed once it lapses.
    pub taking_over: bool,
    /// The database file this history runs on (its identity on the disk, not its path): the
    /// next process on the same file may succeed a crashed one at once; a copy may not.
    pub folder: String,
    /// This process's key for its outbox events (see [`events::EventKey`]).
    pub public_key: String,
}

/// What a claim found.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// How far central has applied this history's outbox.
    pub high_water: i64,
    /// The id the written-off history was retired under, after a take-over.
    pub retired: Option<String>,
    /// Until when central holds the id for this process (on central's clock).
    pub lease_until: Millis,
    /// The catalog's version: the calendar the edge must have before it sells on this lease.
    pub catalog_version: i64,
}

/// A grant request: the id is the edge's, chosen and stored before asking.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    pub grant_id: String,
    pub edge_id: String,
    /// The process asking, which must hold the edge id.
    pub incarnation: String,
    pub sale_id: String,
    pub sku: String,
    pub requested: u32,
    /// A grant central answered before a restore lost it, sent again: granted as it was (from
    /// what is unallocated), while new grants wait for every edge to send theirs again.
    pub again: bool,
    /// What the edge knows central had, read before asking, so that a restore is noticed
    /// before central grants from units it lost track of.
    pub known: Known,
}

/// What an edge knows central had acknowledged, read before it asks: a central that lacks any
/// of it was restored from a backup.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The edge's outbox delivered up to here (only when it delivers to central itself: through
    /// a queue, central may rightly be behind). Read at a renewal, not with a grant.
    pub delivered: Option<i64>,
    /// The newest grant central answered this history.
    pub newest_grant: Option<String>,
}

/// Units an edge gives back; the id is the edge's, chosen and stored before telling central.
#[derive(Clone, Debug)]
pub struct UnitReturn {
    pub return_id: String,
    pub edge_id: String,
    pub incarnation: String,
    pub sale_id: String,
    pub sku: String,
    pub quantity: u32,
    /// The edge's newest outbox event when the units left its free count: central takes them
    /// once it has applied the outbox up to here.
    pub after_seq: i64,
}

/// What loading a sale did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    New,
    /// The same sale was loaded already.
    Unchanged,
    /// A scheduled sale, changed before its start.
    Replaced,
}

/// One SKU's stock as central counts it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockLevel {
    pub sale_id: String,
    pub sku: String,
    pub stock_total: i64,
    /// Units no edge has been granted.
    pub unallocated: i64,
}

/// How one SKU sold from its sale's start, as central has the orders: `sold[i]` units by
/// `starts_at + (i + 1) * step_ms` (the last step ends at `until`, now or the sale's end).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SellThrough {
    pub sale_id: String,
    pub sku: String,
    pub stock_total: i64,
    pub starts_at: Millis,
    pub step_ms: i64,
    pub until: Millis,
    pub sold: Vec<i64>,
}

/// What central knows, for the audit.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sales: BTreeMap<String, SaleLedger>,
    pub skus: BTreeMap<SkuKey, SkuLedger>,
    /// Per edge: how far its outbox was applied, and how many events that was.
    pub edges: BTreeMap<String, EdgeLedger>,
    /// Customers past a SKU's limit by central's own orders and holds, across every edge and
    /// history.
    pub over_limit: Vec<OverLimit>,
    /// Orders placed at or after their sale's end.
    pub late_orders: Vec<LateOrder>,
}

/// A customer past a SKU's limit, by central's own orders and holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub customer_id: String,
    pub sku: SkuKey,
    /// Bought, and held in holds that have not lapsed.
    pub units: i64,
    pub limit: i64,
}

/// An order with a line of a sale, placed at or after the sale's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateOrder {
    pub order_id: String,
    pub edge_id: String,
    pub sale_id: String,
    pub placed_at: Millis,
    pub ends_at: Millis,
}

/// What one customer bought and holds of a SKU in the histories a take-over retired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredUnits {
    pub customer_id: String,
    pub sku: SkuKey,
    pub units: i64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SaleLedger {
    pub starts_at: Millis,
    pub ends_at: Millis,
}

/// One SKU's units. Sums are signed: a negative one is a broken ledger, not zero.
#[derive(Clone, Debug, Default)]
pub struct SkuLedger {
    pub stock_total: i64,
    pub limit_per_customer: i64,
    pub unallocated: i64,
    /// Per edge: units granted less units returned.
    pub allotted: BTreeMap<String, i64>,
    /// Per edge: units held, from the holds the edge reported.
    pub held: BTreeMap<String, i64>,
    /// Per edge: units sold, from the orders the edge reported.
    pub sold: BTreeMap<String, i64>,
}

/// Which per-edge sum of a [`SkuLedger`].
#[derive(Clone, Copy, Debug)]
pub enum PerEdge {
    Allotted,
    Held,
    Sold,
}

impl SkuLedger {
    pub fn per_edge(&mut self, which: PerEdge) -> &mut BTreeMap<String, i64> {
        match which {
            PerEdge::Allotted => &mut self.allotted,
            PerEdge::Held => &mut self.held,
            PerEdge::Sold => &mut self.sold,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct EdgeLedger {
    pub url: String,
    pub high_water: i64,
    /// Receipts of applied events central keeps.
    pub events_applied: i64,
    /// Receipts of applied events central has forgotten (see [`Central::forget`]).
    pub events_pruned: i64,
    pub orders: i64,
    /// A history written off by a take-over.
    pub retired: bool,
    /// An edge that drained and left the registry.
    pub drained: bool,
}

/// A hand-off, as the draining edge records it at central (see [`ledger::record_handoff`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handoff {
    /// Chosen and stored by the draining edge before anything moves.
    pub handoff_id: String,
    pub from_edge: String,
    /// The draining process, which must still hold its edge id.
    pub incarnation: String,
    pub to_edge: String,
    /// The draining edge's last outbox sequence number when the carts left it.
    pub frozen_seq: i64,
    pub carts: Vec<String>,
    /// The carts' customers, whose home moves with them.
    pub customers: Vec<String>,
    /// Units held and sold in the carts, per SKU.
    pub units: Vec<MovedUnits>,
}

/// The cart module the fleet runs, as recorded at central.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetModule {
    pub version: String,
    pub sha256: String,
    pub bytes: Vec<u8>,
    /// Its ed25519 signature (base64), if it came with one.
    pub signature: Option<String>,
}

impl fmt::Debug for FleetModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FleetModule({} {}, {} bytes)",
            self.version,
            self.sha256,
            self.bytes.len()
        )
    }
}

/// Units of one SKU that move with a hand-off's carts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MovedUnits {
    pub sale_id: String,
    pub sku: String,
    pub quantity: u32,
}

/// A hand-off as central recorded it, for the receiving edge (see [`Central::handoff_record`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedHandoff {
    pub from_edge: String,
    pub carts: Vec<String>,
    /// The carts' holds as central has them.
    pub holds: Vec<RecordedHold>,
    /// The carts' orders as central has them.
    pub orders: Vec<events::Order>,
}

/// One hold of a handed-off cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedHold {
    pub cart_id: String,
    pub sale_id: String,
    pub sku: String,
    pub quantity: u32,
    pub expires_at: Millis,
}

/// Outbox events of one edge's history, in sequence order, for [`Central::apply_batches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeBatch {
    pub edge_id: String,
    pub history_id: String,
    pub events: Vec<Delivery>,
}

/// What central did with an [`EdgeBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The edge's high-water mark before and after: events up to `after` are applied.
    Marks(Marks),
    /// No such history (yet): its edge has not claimed its id with it.
    Unknown,
    /// Applying it failed, and nothing of it was kept: why.
    Failed(String),
}

/// A renewed lease: the catalog's version, and the history's high-water mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewed {
    pub catalog_version: i64,
    pub high_water: i64,
    /// Central was found restored from a backup at this time, and this edge has not sent its
    /// grants again since: it must (see [`GrantRequest::again`]), then say so with
    /// [`Central::reconciled`].
    pub reconcile: Option<Millis>,
}

/// An edge's high-water mark before and after a batch was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    pub before: i64,
    pub after: i64,
}

/// What one pass of [`Central::forget`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Receipts of the caller's own applied events.
    pub receipts: u64,
    /// Receipts of a drained edge's events.
    pub gone_receipts: u64,
    /// Cart lists of hand-offs the caller took.
    pub handoff_carts: u64,
}

/// A central database, by URL.
pub struct Central {
    db: Db,
}

enum Db {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// PostgreSQL connections an edge keeps open by default.
pub const PG_CONNECTIONS: usize = 8;

impl Central {
    /// Opens the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, CentralError> {
        Self::connect_with(url, PG_CONNECTIONS, SchemaPolicy::Migrate).await
    }

    /// [`Self::connect`] with at most `connections` PostgreSQL connections, migrating the
    /// schema or only checking that this release may run against it.
    pub async fn connect_with(
        url: &str,
        connections: usize,
        schema: SchemaPolicy,
    ) -> Result<Self, CentralError> {
        let db = if let Some(path) = url.strip_prefix("sqlite:") {
            Db::Sqlite(sqlite::Sqlite::open(path.into(), schema).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Db::Postgres(postgres::Postgres::open(url, connections.max(1), schema).await?)
        } else {
            return Err(CentralError::BadUrl(redacted(url)));
        };
        Ok(Self { db })
    }

    /// Brings the schema up to date now (or checks it, as this central was opened to), or
    /// fails saying why. (Opening central does it too, when central answers; an edge that
    /// started while it did not does it before its first transaction.)
    pub async fn migrate(&self) -> Result<(), CentralError> {
        match &self.db {
            // Prepared as it was opened: a file is always there.
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(db) => db.ensure_migrated().await,
        }
    }

    /// The release central's schema is at, and the oldest release that may run against it.
    pub async fn schema_release(&self) -> Result<(String, String), CentralError> {
        self.read(|tx| {
            let row = tx
                .query_opt(schema::RELEASE_SQL, &[])?
                .ok_or_else(|| CentralError::Decode("schema_release has no row".into()))?;
            Ok((row.text(0)?, row.text(1)?))
        })
        .await
    }

    /// Runs `f` in one transaction.
    async fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        match &self.db {
            Db::Sqlite(db) => db.transact(f).await,
            Db::Postgres(db) => db.transact(f).await,
        }
    }

    /// Runs `f`, which only reads, seeing the database as of one moment throughout.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        match &self.db {
            Db::Sqlite(db) => db.read(f).await,
            Db::Postgres(db) => db.read(f).await,
        }
    }

    /// Adds a sale to the calendar (or replaces one not started yet).
    pub async fn load_sale(&self, sale: &Sale) -> Result<Loaded, CentralError> {
        let sale = sale.clone();
        self.transact(move |tx| ledger::load_sale(tx, &sale, wall_ms()))
            .await
    }

    /// One sale, as loaded.
    pub async fn sale(&self, sale_id: &str) -> Result<Option<Sale>, CentralError> {
        let id = sale_id.to_owned();
        self.transact(move |tx| ledger::read_sale(tx, &id)).await
    }

    /// Sales ending after `after` (running, scheduled, and ended since), by start.
    pub async fn sales_ending_after(&self, after: Millis) -> Result<Vec<Sale>, CentralError> {
        self.transact(move |tx| ledger::sales_ending_after(tx, after))
            .await
    }

    /// Ends a sale as soon as every edge can know it (see [`ledger::end_sale`]); when it ends.
    pub async fn end_sale(&self, sale_id: &str) -> Result<Millis, CentralError> {
        let id = sale_id.to_owned();
        self.transact(move |tx| ledger::end_sale(tx, &id)).await
    }

    /// Changes whenever a sale is loaded, replaced or ended.
    pub async fn catalog_version(&self) -> Result<i64, CentralError> {
        self.transact(ledger::catalog_version).await
    }

    /// Each SKU's stock and its units not yet granted to any edge.
    pub async fn stock_levels(&self) -> Result<Vec<StockLevel>, CentralError> {
        self.transact(ledger::stock_levels).await
    }

    /// How each SKU of the sales on now (or ended within a day) sold from its sale's start, in
    /// at most `steps` steps (see [`ledger::sell_through`]).
    pub async fn sell_through(&self, steps: i64) -> Result<Vec<SellThrough>, CentralError> {
        self.transact(move |tx| ledger::sell_through(tx, wall_ms(), steps))
            .await
    }

    /// The fleet's registry: each edge id in service, with the URL it registered.
    pub async fn registry(&self) -> Result<Vec<(String, String)>, CentralError> {
        self.transact(ledger::registry).await
    }

    /// A customer's home edge (see [`ledger::home_of`]): the one recorded, or else `proposed`.
    pub async fn home_of(&self, customer_id: &str, proposed: &str) -> Result<String, CentralError> {
        let (customer, proposed) = (customer_id.to_owned(), proposed.to_owned());
        self.transact(move |tx| ledger::home_of(tx, &customer, &proposed, wall_ms()))
            .await
    }

    /// Claims an edge id for a process (see [`Claim`]).
    pub async fn claim_edge(&self, claim: &Claim) -> Result<Claimed, CentralError> {
        let edge_id = claim.edge_id.clone();
        let claim = claim.clone();
        match self
            .transact(move |tx| ledger::claim_edge(tx, &claim))
            .await?
        {
            ledger::Claiming::Claimed(claimed) => Ok(claimed),
            ledger::Claiming::WrittenOff { retired } => {
                Err(CentralError::Retired { edge_id, retired })
            }
            ledger::Claiming::Waiting(running) => Err(running),
        }
    }

    /// Extends a process's lease on its edge id by `lease_ms` from now, on central's clock;
    /// the catalog's version (see [`Self::catalog_version`]).
    pub async fn renew_lease(
        &self,
        edge_id: &str,
        incarnation: &str,
        lease_ms: i64,
        known: &Known,
    ) -> Result<Renewed, CentralError> {
        let (edge_id, incarnation, known) =
            (edge_id.to_owned(), incarnation.to_owned(), known.clone());
        self.transact(move |tx| ledger::renew_lease(tx, &edge_id, &incarnation, lease_ms, &known))
            .await
    }

    /// The process serving `edge_id` has sent every grant it holds again since the restore
    /// noticed at `restored_at` (see [`Renewed::reconcile`]).
    pub async fn reconciled(
        &self,
        edge_id: &str,
        incarnation: &str,
        restored_at: Millis,
    ) -> Result<(), CentralError> {
        let (edge_id, incarnation) = (edge_id.to_owned(), incarnation.to_owned());
        self.transact(move |tx| ledger::reconciled(tx, &edge_id, &incarnation, restored_at))
            .await
    }

    /// Records that this database was restored from a backup (an operator's word, before any
    /// edge notices): nothing new is granted until every edge that may be selling has sent its
    /// grants again.
    pub async fn restored(&self) -> Result<(), CentralError> {
        self.transact(|tx| ledger::noticed_restore(tx, ledger::NoticedBy::Operator))
            .await
    }

    /// Central's clock now, in milliseconds: the one leases are granted and compared on.
    pub async fn clock(&self) -> Result<Millis, CentralError> {
        self.transact(ledger::clock).await
    }

    /// Grants up to the requested units; the same grant id always gets the same answer. After
    /// a restore, refused ([`CentralError::Reconciling`]) until every edge has sent its grants
    /// again.
    pub async fn grant(&self, req: &GrantRequest) -> Result<u32, CentralError> {
        let req = req.clone();
        // Answered, not failed: a restore this request noticed stays noticed.
        match self
            .transact(move |tx| ledger::grant(tx, &req, wall_ms()))
            .await?
        {
            ledger::Granting::Granted(units) => Ok(units),
            ledger::Granting::WaitingFor(waiting_for) => {
                Err(CentralError::Reconciling { waiting_for })
            }
        }
    }

    /// Sends grants central answered before a restore lost them again ([`GrantRequest::again`]),
    /// in one transaction; the units each is granted now.
    pub async fn grant_again(&self, reqs: &[GrantRequest]) -> Result<Vec<u32>, CentralError> {
        let reqs: Vec<_> = reqs
            .iter()
            .map(|r| GrantRequest {
                again: true,
                ..r.clone()
            })
            .collect();
        self.transact(move |tx| {
            reqs.iter()
                .map(|req| match ledger::grant(tx, req, wall_ms())? {
                    ledger::Granting::Granted(units) => Ok(units),
                    ledger::Granting::WaitingFor(waiting_for) => {
                        Err(CentralError::Reconciling { waiting_for })
                    }
                })
                .collect()
        })
        .await
    }

    /// Applies a batch of an edge's outbox whose rows are each signed; returns the edge's new
    /// high-water mark.
    pub async fn apply(
        &self,
        edge_id: &str,
        history_id: &str,
        batch: &[Delivery],
    ) -> Result<i64, CentralError> {
        self.deliver(edge_id, history_id, Sender::Signatures, batch)
            .await
            .map(|marks| marks.after)
    }

    /// Applies a batch of an edge's outbox from `sender`; the history's high-water mark before
    /// and after.
    pub async fn deliver(
        &self,
        edge_id: &str,
        history_id: &str,
        sender: Sender<'_>,
        batch: &[Delivery],
    ) -> Result<Marks, CentralError> {
        let (edge_id, history_id, batch) =
            (edge_id.to_owned(), history_id.to_owned(), batch.to_vec());
        let process = match sender {
            Sender::Process(key) => Some(key.public_key()),
            Sender::Signatures => None,
        };
        self.transact(move |tx| {
            let marks = ledger::apply(
                tx,
                &edge_id,
                &history_id,
                &batch,
                process.as_deref(),
                wall_ms(),
            )?;
            // The edge sends what follows what it knows central applied: central is behind
            // that only when it lost events it had applied.
            if batch.first().is_some_and(|d| marks.before < d.seq - 1) {
                ledger::noticed_restore(tx, ledger::NoticedBy::History(&history_id))?;
            }
            Ok(marks)
        })
        .await
    }

    /// The digests of the events of a history central applied, `from` to `to`, by sequence
    /// number (see [`events::digest`]).
    pub async fn applied_digests(
        &self,
        history_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>, CentralError> {
        let history_id = history_id.to_owned();
        self.transact(move |tx| ledger::applied_digests(tx, &history_id, from, to))
            .await
    }

    /// Deletes central's receipts of events the caller has marked delivered (up to
    /// `delivered`), and other records past their use, applied or taken before `before` (see
    /// [`ledger::forget`]); a batch at a time.
    pub async fn forget(
        &self,
        edge_id: &str,
        incarnation: &str,
        delivered: i64,
        before: Millis,
    ) -> Result<Forgotten, CentralError> {
        let (edge_id, incarnation) = (edge_id.to_owned(), incarnation.to_owned());
        self.transact(move |tx| {
            ledger::forget(tx, &edge_id, &incarnation, delivered, before, wall_ms())
        })
        .await
    }

    /// The keys of the processes that have served a history (none: central does not know it).
    pub async fn history_keys(&self, history_id: &str) -> Result<Vec<String>, CentralError> {
        let history_id = history_id.to_owned();
        self.transact(move |tx| ledger::history_keys(tx, &history_id))
            .await
    }

    /// Applies several edges' batches in one transaction, as [`Self::apply`] does one: the
    /// relay's path, for what a queue delivered. Each batch runs in a savepoint of its own, so
    /// one that fails (a broken or forged event, a deadlock PostgreSQL broke) is undone alone
    /// and the others still apply; so does a batch of a history central does not keep.
    pub async fn apply_batches(&self, batches: &[EdgeBatch]) -> Result<Vec<Applied>, CentralError> {
        let batches = batches.to_vec();
        // Edge rows are locked in edge id order, the same in every relay. (SKU rows can still
        // be taken in another order by another relay's batch: PostgreSQL detects that deadlock
        // and fails one statement, whose batch is undone and comes back.)
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by(|&a, &b| batches[a].edge_id.cmp(&batches[b].edge_id));
        self.transact(move |tx| {
            let now = wall_ms();
            let mut outcomes = vec![Applied::Unknown; batches.len()];
            for i in order {
                let b = &batches[i];
                tx.exec("SAVEPOINT edge_batch", params![])?;
                outcomes[i] =
                    match ledger::apply(tx, &b.edge_id, &b.history_id, &b.events, None, now) {
                        Ok(marks) => Applied::Marks(marks),
                        Err(CentralError::UnknownEdge(_)) => Applied::Unknown,
                        Err(e) => {
                            tx.exec("ROLLBACK TO SAVEPOINT edge_batch", params![])?;
                            // With its causes: PostgreSQL's own words are two sources down.
                            Applied::Failed(with_causes(&e))
                        }
                    };
                tx.exec("RELEASE SAVEPOINT edge_batch", params![])?;
            }
            Ok(outcomes)
        })
        .await
    }

    /// Takes back units an edge returns; the same return id is taken once.
    pub async fn return_units(&self, ret: &UnitReturn) -> Result<(), CentralError> {
        let ret = ret.clone();
        self.transact(move |tx| ledger::return_units(tx, &ret, wall_ms()))
            .await
    }

    /// What is left to sell of each SKU of every sale not ended (see [`ledger::left_in_sales`]).
    pub async fn left_in_sales(&self) -> Result<Vec<(SkuKey, i64)>, CentralError> {
        self.transact(|tx| ledger::left_in_sales(tx, wall_ms()))
            .await
    }

    /// SKUs some edge recently asked for when none were left: spare units should come back.
    pub async fn wanted_skus(&self) -> Result<Vec<SkuKey>, CentralError> {
        self.transact(|tx| ledger::wanted(tx, wall_ms())).await
    }

    /// The orders central holds for an edge.
    pub async fn orders_of(&self, edge_id: &str) -> Result<Vec<events::Order>, CentralError> {
        let id = edge_id.to_owned();
        self.transact(move |tx| ledger::orders_of(tx, &id)).await
    }

    /// Records a hand-off once (see [`ledger::record_handoff`]).
    pub async fn record_handoff(&self, handoff: &Handoff) -> Result<(), CentralError> {
        let h = handoff.clone();
        self.transact(move |tx| ledger::record_handoff(tx, &h, wall_ms()))
            .await
    }

    /// The edge that keeps a handed-off cart, if it was handed off.
    pub async fn cart_owner(&self, cart_id: &str) -> Result<Option<String>, CentralError> {
        let id = cart_id.to_owned();
        self.transact(move |tx| ledger::cart_owner(tx, &id)).await
    }

    /// How far central has applied an edge's outbox.
    pub async fn applied_up_to(&self, edge_id: &str) -> Result<i64, CentralError> {
        let id = edge_id.to_owned();
        self.transact(move |tx| ledger::applied_up_to(tx, &id))
            .await
    }

    /// A hand-off recorded to `to_edge`, as that edge takes it.
    pub async fn handoff_record(
        &self,
        handoff_id: &str,
        to_edge: &str,
    ) -> Result<Option<RecordedHandoff>, CentralError> {
        let (id, to) = (handoff_id.to_owned(), to_edge.to_owned());
        self.transact(move |tx| ledger::handoff_record(tx, &id, &to))
            .await
    }

    /// The receiving edge has taken a hand-off into its books.
    pub async fn handoff_taken(
        &self,
        handoff_id: &str,
        to_edge: &str,
        incarnation: &str,
    ) -> Result<(), CentralError> {
        let (id, to, inc) = (
            handoff_id.to_owned(),
            to_edge.to_owned(),
            incarnation.to_owned(),
        );
        self.transact(move |tx| ledger::handoff_taken(tx, &id, &to, &inc, wall_ms()))
            .await
    }

    /// Whether a hand-off was recorded.
    pub async fn handoff_recorded(&self, handoff_id: &str) -> Result<bool, CentralError> {
        let id = handoff_id.to_owned();
        self.transact(move |tx| ledger::handoff_recorded(tx, &id))
            .await
    }

    /// Records the module the fleet runs, unless it is recorded already.
    pub async fn set_fleet_module(&self, module: &FleetModule) -> Result<(), CentralError> {
        let same = self.transact(ledger::fleet_module_id).await?
            == Some((module.version.clone(), module.sha256.clone()));
        if same {
            return Ok(());
        }
        let m = module.clone();
        self.transact(move |tx| ledger::set_fleet_module(tx, &m, wall_ms()))
            .await
    }

    /// The fleet's module's version and sha256, if an operator deployed one.
    pub async fn fleet_module_id(&self) -> Result<Option<(String, String)>, CentralError> {
        self.transact(ledger::fleet_module_id).await
    }

    /// The module the fleet runs, if an operator deployed one.
    pub async fn fleet_module(&self) -> Result<Option<FleetModule>, CentralError> {
        self.transact(ledger::fleet_module).await
    }

    /// Takes a drained edge out of the registry.
    pub async fn drained(&self, edge_id: &str, incarnation: &str) -> Result<(), CentralError> {
        let (edge_id, incarnation) = (edge_id.to_owned(), incarnation.to_owned());
        self.transact(move |tx| ledger::drained(tx, &edge_id, &incarnation, wall_ms()))
            .await
    }

    /// What central knows for the audit, as of one moment.
    pub async fn snapshot(&self) -> Result<Snapshot, CentralError> {
        self.read(|tx| {
            let mut snapshot = ledger::snapshot(tx)?;
            snapshot.over_limit = ledger::over_limit(tx, wall_ms())?;
            snapshot.late_orders = ledger::late_orders(tx)?;
            Ok(snapshot)
        })
        .await
    }

    /// What customers bought and hold in `edge_id`'s histories a take-over retired (see
    /// [`ledger::retired_units`]).
    pub async fn retired_units(&self, edge_id: &str) -> Result<Vec<RetiredUnits>, CentralError> {
        let id = edge_id.to_owned();
        self.transact(move |tx| ledger::retired_units(tx, &id))
            .await
    }
}
