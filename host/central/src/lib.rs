//! The central database: owns the stock, grants units to edges, and applies their outboxes
//! exactly once by `(edge_id, seq)`. SQLite ([`sqlite`]) is the embedded default; PostgreSQL
//! ([`postgres`]) the production one. Both keep the same ledger with the same SQL where they can.
//!
//! - [`sale`]: the sale file and the catalog edges serve from; [`events`]: the outbox's events;
//!   [`time`]: milliseconds and RFC 3339.

mod postgres;
mod sqlite;

pub mod events;
pub mod sale;
pub mod time;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::events::Delivery;
use crate::sale::Sale;

pub use postgres::PgCentral;
pub use sqlite::SqliteCentral;

/// How long after an edge asked for more than was left central keeps asking others to give
/// their spare units back.
pub const WANTED_FOR_MS: i64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("unsupported central URL {0:?}: use sqlite:PATH or postgres://user@host:port/db")]
    BadUrl(String),
    #[error("the central database already holds sale {0:?}")]
    SaleExists(String),
    #[error("the central database holds no sale yet: run `cart-host sale load` first")]
    NoSale,
    #[error("edge {0:?} has not registered with central")]
    UnknownEdge(String),
    #[error("central SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("central PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("central PostgreSQL pool: {0}")]
    Pool(String),
    #[error("central schema: {0}")]
    Migration(#[from] refinery::Error),
    #[error("central database file: {0}")]
    Io(#[from] std::io::Error),
    #[error("central task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A grant request: the id is the edge's, chosen and stored before asking.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    pub grant_id: String,
    pub edge_id: String,
    pub sku: String,
    pub requested: u32,
}

/// Units an edge gives back; the id is the edge's, chosen and stored before telling central.
#[derive(Clone, Debug)]
pub struct UnitReturn {
    pub return_id: String,
    pub edge_id: String,
    pub sku: String,
    pub quantity: u32,
}

/// What central knows, for the audit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub skus: BTreeMap<String, SkuLedger>,
    /// Per edge: how far its outbox was applied, and how many events that was.
    pub edges: BTreeMap<String, EdgeLedger>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SkuLedger {
    pub stock_total: u64,
    pub unallocated: u64,
    /// Per edge: units granted less units returned.
    pub allotted: BTreeMap<String, u64>,
    /// Per edge: units held, from the holds the edge reported.
    pub held: BTreeMap<String, u64>,
    /// Per edge: units sold, from the orders the edge reported.
    pub sold: BTreeMap<String, u64>,
}

/// Which per-edge sum of a [`SkuLedger`].
#[derive(Clone, Copy, Debug)]
pub enum PerEdge {
    Allotted,
    Held,
    Sold,
}

impl SkuLedger {
    pub fn per_edge(&mut self, which: PerEdge) -> &mut BTreeMap<String, u64> {
        match which {
            PerEdge::Allotted => &mut self.allotted,
            PerEdge::Held => &mut self.held,
            PerEdge::Sold => &mut self.sold,
        }
    }
}

/// The audit's per-edge sums `(sku, edge_id, n)`, in SQL both databases take.
const PER_EDGE_SUMS: &[(&str, PerEdge)] = &[
    (
        "SELECT sku, edge_id, CAST(SUM(n) AS BIGINT) FROM (\
           SELECT sku, edge_id, granted AS n FROM grants \
           UNION ALL SELECT sku, edge_id, -quantity FROM unit_returns) AS moves \
         GROUP BY sku, edge_id",
        PerEdge::Allotted,
    ),
    (
        "SELECT sku, edge_id, CAST(SUM(quantity) AS BIGINT) FROM holds GROUP BY sku, edge_id",
        PerEdge::Held,
    ),
    (
        "SELECT l.sku, o.edge_id, CAST(SUM(l.quantity) AS BIGINT) FROM order_lines l \
         JOIN orders o ON o.order_id = l.order_id GROUP BY l.sku, o.edge_id",
        PerEdge::Sold,
    ),
];

/// Each edge's registration and delivery ledger `(edge_id, url, high_water, applied, orders)`.
const EDGE_LEDGER_SQL: &str = "SELECT e.edge_id, e.url, e.high_water, \
       (SELECT COUNT(*) FROM applied_events a WHERE a.edge_id = e.edge_id), \
       (SELECT COUNT(*) FROM orders o WHERE o.edge_id = e.edge_id) \
     FROM edges e";

#[derive(Clone, Debug, Default, Serialize)]
pub struct EdgeLedger {
    pub url: String,
    pub high_water: i64,
    pub events_applied: i64,
    pub orders: i64,
}

/// A central database, by URL.
pub enum Central {
    Sqlite(SqliteCentral),
    Postgres(PgCentral),
}

/// Calls the same method on whichever database this is.
macro_rules! on_db {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Central::Sqlite($c) => $call,
            Central::Postgres($c) => $call,
        }
    };
}

impl Central {
    /// Opens the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, CentralError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            return Ok(Self::Sqlite(SqliteCentral::open(path.into()).await?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(PgCentral::open(url).await?));
        }
        Err(CentralError::BadUrl(url.to_owned()))
    }

    /// Loads a sale: its SKUs and all their units, unallocated.
    pub async fn load_sale(&self, sale: &Sale) -> Result<(), CentralError> {
        on_db!(self, c => c.load_sale(sale).await)
    }

    /// The sale central holds, if any.
    pub async fn sale(&self) -> Result<Option<Sale>, CentralError> {
        on_db!(self, c => c.sale().await)
    }

    pub async fn register_edge(&self, edge_id: &str, url: &str) -> Result<(), CentralError> {
        on_db!(self, c => c.register_edge(edge_id, url).await)
    }

    /// Grants up to `requested` units; the same grant id always gets the same answer.
    pub async fn grant(&self, req: &GrantRequest) -> Result<u32, CentralError> {
        on_db!(self, c => c.grant(req).await)
    }

    /// Applies a batch of one edge's outbox in one transaction; returns the edge's new
    /// high-water mark. Events at or below the old mark are skipped.
    pub async fn apply(&self, edge_id: &str, batch: &[Delivery]) -> Result<i64, CentralError> {
        on_db!(self, c => c.apply(edge_id, batch).await)
    }

    /// Takes back units an edge returns; the same return id is taken once.
    pub async fn return_units(&self, ret: &UnitReturn) -> Result<(), CentralError> {
        on_db!(self, c => c.return_units(ret).await)
    }

    /// SKUs some edge recently asked for when none were left: spare units should come back.
    pub async fn wanted_skus(&self) -> Result<Vec<String>, CentralError> {
        on_db!(self, c => c.wanted_skus().await)
    }

    pub async fn snapshot(&self) -> Result<Snapshot, CentralError> {
        on_db!(self, c => c.snapshot().await)
    }
}
