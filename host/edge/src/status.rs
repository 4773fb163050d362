//! `/admin/status`: what an edge says of itself, as the operator API serves it and as the
//! audit, the load generator and the dashboard read it.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::edge_db::StockRow;
use crate::http_client::HttpClient;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeStatus {
    pub edge_id: String,
    pub module_version: String,
    /// This edge's units of each SKU on sale.
    pub skus: BTreeMap<String, StockRow>,
    /// Each SKU's stock across the fleet.
    pub stock_total: BTreeMap<String, u64>,
    /// Outbox events not yet applied by central.
    pub outbox_backlog: i64,
    pub delivered_seq: i64,
    pub grants_in_flight: i64,
    pub returns_in_flight: i64,
    /// Age of the oldest undelivered outbox event.
    pub sync_lag_ms: i64,
    pub last_sync: Option<String>,
    pub last_sync_error: Option<String>,
}

impl EdgeStatus {
    /// Nothing on its way to or from central.
    pub fn settled(&self) -> bool {
        self.outbox_backlog == 0 && self.grants_in_flight == 0 && self.returns_in_flight == 0
    }
}

/// Fetches an edge's status with the operator token.
pub async fn fetch(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<EdgeStatus> {
    let response = client.get(&format!("{url}/admin/status"), token).await?;
    anyhow::ensure!(
        response.status.is_success(),
        "{url}/admin/status answered {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).with_context(|| format!("{url}/admin/status"))
}
