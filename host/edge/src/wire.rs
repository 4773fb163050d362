//! What edges, commands and dashboards exchange over HTTP besides the storefront's JSON: every
//! header and path name the fleet uses, written once, and the operator API's wire types
//! (`/admin/status`, `/admin/ledger`), as an edge serves them and as the audit, the load
//! generator and the dashboard read them.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::carts::{CartUnits, CustomerUnits, Order};
use crate::clock::Millis;
use crate::http_client::{HttpClient, join};
pub use crate::metrics::Forwarded;
use crate::store::db::{BooksMark, StockLine, StockRow};

/// Names the edge that owns the cart, on every answer about a cart.
pub const CART_EDGE: &str = "x-cart-edge";
/// Set by an edge that forwards a request or hands carts off: its edge id.
pub const FORWARDED_BY: &str = "x-cart-forwarded-by";
/// The fleet secret, on a request from a peer edge.
pub const FLEET_SECRET: &str = "x-fleet-secret";
/// Which version of the cart rules answered; on a deploy, the version to store a module under.
pub const MODULE_VERSION: &str = "x-module-version";
/// A module's ed25519 signature (base64), on a deploy.
pub const MODULE_SIGNATURE: &str = "x-module-signature";
/// The key a checkout is idempotent by.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// A request's id: taken from the client when well-formed, passed on across a forward, returned
/// in every answer and carried by the request's log lines.
pub const REQUEST_ID: &str = "x-request-id";

/// Where the receiving edge takes hand-offs.
pub const HANDOFF_PATH: &str = "/fleet/handoffs";
/// An edge's own view of itself.
pub const STATUS_PATH: &str = "/admin/status";
/// An edge's books, for the audit.
pub const LEDGER_PATH: &str = "/admin/ledger";
/// The requests an edge's rules were asked most recently, for `rules diff --edge`.
pub const ASKED_PATH: &str = "/admin/rules/asked";

/// What [`ASKED_PATH`] answers: requests as a case file writes them, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeAsked {
    pub asked: Vec<crate::asked::Form>,
}

/// How the outbox delivery is doing, for `/admin/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    pub last_sync_at: Option<Millis>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeStatus {
    pub edge_id: String,
    pub module_version: String,
    /// This edge's units of each SKU on sale (or next on sale), by code.
    pub skus: BTreeMap<String, StockRow>,
    /// Each SKU's stock across the fleet.
    pub stock_total: BTreeMap<String, u64>,
    /// Units of ended sales still here, free or held: they are on their way back to central.
    pub ended_units: u64,
    /// Outbox events not yet delivered: applied by central, or with a queue stored in it.
    pub outbox_backlog: i64,
    pub delivered_seq: i64,
    pub grants_in_flight: i64,
    pub returns_in_flight: i64,
    /// Age of the oldest undelivered outbox event.
    pub sync_lag_ms: i64,
    pub last_sync: Option<String>,
    pub last_sync_error: Option<String>,
    /// Requests for carts another edge owns, passed on to it.
    pub forwarded: Forwarded,
    /// `serving` while the edge takes new carts (`/readyz` answers `200`), `draining` once it
    /// is leaving the fleet, else `not_ready`.
    #[serde(default)]
    pub state: String,
    /// Why it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_because: Option<String>,
    /// Cart updates answered here in each whole second of the last two minutes.
    #[serde(default)]
    pub cart_updates: crate::recent::Seconds,
}

impl EdgeStatus {
    /// Nothing on its way to or from central.
    pub fn settled(&self) -> bool {
        self.outbox_backlog == 0
            && self.grants_in_flight == 0
            && self.returns_in_flight == 0
            && self.ended_units == 0
    }
}

/// `/admin/ledger`: an edge's books as its own tables keep them, for the audit to check
/// against each other and against central.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeBooks {
    pub edge_id: String,
    pub history_id: String,
    /// The stock's counters.
    pub stock: Vec<StockLine>,
    /// Held and sold units counted from the carts themselves.
    pub carts: Vec<CartUnits>,
    /// Every order placed here.
    pub orders: Vec<Order>,
    /// Each customer's held and bought units, per SKU.
    pub customers: Vec<CustomerUnits>,
    /// Sales past `--retain-days` whose carts and orders the edge has deleted or is deleting:
    /// the audit leaves them out of this edge's books (central keeps their orders).
    #[serde(default)]
    pub pruned_sales: Vec<String>,
    /// How far its dealings with central had gone when these books were read.
    pub mark: BooksMark,
}

/// Fetches an edge's status with the operator token.
pub async fn fetch(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<EdgeStatus> {
    get_json(client, url, STATUS_PATH, token).await
}

/// Fetches an edge's books with the operator token.
pub async fn fetch_books(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<EdgeBooks> {
    get_json(client, url, LEDGER_PATH, token).await
}

/// Fetches the requests an edge's rules were asked most recently, with the operator token.
pub async fn fetch_asked(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<EdgeAsked> {
    get_json(client, url, ASKED_PATH, token).await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &HttpClient,
    url: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<T> {
    let response = client.get(&join(url, path), token).await?;
    anyhow::ensure!(
        response.status.is_success(),
        "{url}{path} answered {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).with_context(|| format!("{url}{path}"))
}
