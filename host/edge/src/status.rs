//! `/admin/status`: what an edge says of itself, as the operator API serves it and as the
//! audit, the load generator and the dashboard read it.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::carts::{CartUnits, CustomerUnits, Order};
use crate::edge_db::{BooksMark, StockLine, StockRow};
use crate::http_client::HttpClient;

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

/// Requests this edge forwarded to the carts' owners since it started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Forwarded {
    /// Answered by the owner (whatever the answer).
    pub answered: u64,
    /// The owner could not be reached: answered `503` here.
    pub failed: u64,
    /// Mean time the owners took to answer, in milliseconds (0 when none was forwarded).
    pub mean_ms: f64,
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
    /// How far its dealings with central had gone when these books were read.
    pub mark: BooksMark,
}

/// Fetches an edge's status with the operator token.
pub async fn fetch(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<EdgeStatus> {
    get_json(client, url, "/admin/status", token).await
}

/// Fetches an edge's books with the operator token.
pub async fn fetch_books(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<EdgeBooks> {
    get_json(client, url, "/admin/ledger", token).await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &HttpClient,
    url: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<T> {
    let response = client.get(&format!("{url}{path}"), token).await?;
    anyhow::ensure!(
        response.status.is_success(),
        "{url}{path} answered {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).with_context(|| format!("{url}{path}"))
}
