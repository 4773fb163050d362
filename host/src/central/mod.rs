//! The central database: owns the stock, grants units to edges, and applies their outboxes
//! exactly once by `(edge_id, seq)`. SQLite ([`sqlite`]) is the embedded default.

mod sqlite;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::events::Delivery;
use crate::sale::Sale;

pub use sqlite::SqliteCentral;

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
}

impl Central {
    /// Opens the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, CentralError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            return Ok(Self::Sqlite(SqliteCentral::open(path.into()).await?));
        }
        Err(CentralError::BadUrl(url.to_owned()))
    }

    /// Loads a sale: its SKUs and all their units, unallocated.
    pub async fn load_sale(&self, sale: &Sale) -> Result<(), CentralError> {
        match self {
            Self::Sqlite(c) => c.load_sale(sale).await,
        }
    }

    /// The sale central holds, if any.
    pub async fn sale(&self) -> Result<Option<Sale>, CentralError> {
        match self {
            Self::Sqlite(c) => c.sale().await,
        }
    }

    pub async fn register_edge(&self, edge_id: &str, url: &str) -> Result<(), CentralError> {
        match self {
            Self::Sqlite(c) => c.register_edge(edge_id, url).await,
        }
    }

    /// Grants up to `requested` units; the same grant id always gets the same answer.
    pub async fn grant(&self, req: &GrantRequest) -> Result<u32, CentralError> {
        match self {
            Self::Sqlite(c) => c.grant(req).await,
        }
    }

    /// Applies a batch of one edge's outbox in one transaction; returns the edge's new
    /// high-water mark. Events at or below the old mark are skipped.
    pub async fn apply(&self, edge_id: &str, batch: &[Delivery]) -> Result<i64, CentralError> {
        match self {
            Self::Sqlite(c) => c.apply(edge_id, batch).await,
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, CentralError> {
        match self {
            Self::Sqlite(c) => c.snapshot().await,
        }
    }
}
