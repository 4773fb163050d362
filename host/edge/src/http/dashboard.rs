//! `/admin/fleet`: the whole fleet as the operator dashboard shows it, gathered by whichever
//! edge the dashboard reached: central's registry, stock levels and sell-through, and each
//! registered edge's `/admin/status`. Gathered at most once a second however many dashboards
//! watch, so watching the rush costs it three small reads at central and one request per edge
//! a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use cart_central::{SellThrough, StockLevel};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::admin::{admin_auth, own_status};
use super::error::ApiError;
use crate::clock::rfc3339;
use crate::edge::Edge;
use crate::wire::{self, EdgeStatus};

/// How long a gathered view is served again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Longest wait for a peer's status, or for central: a slow one shows as down (or as central's
/// error) rather than stalling the view, which is gathered under a lock.
const PEER_TIMEOUT: Duration = Duration::from_millis(800);
/// Most points of each SKU's sell-through chart, from its sale's start to now.
const SELL_THROUGH_STEPS: i64 = 300;

/// The fleet at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetView {
    pub at: String,
    /// Every edge in central's registry (this one at least, when central does not answer).
    pub edges: Vec<EdgeView>,
    /// Each SKU's stock as central counts it.
    pub stock: Vec<StockLevel>,
    /// How each SKU of `stock` sold from its sale's start, as central has the orders.
    pub sell_through: Vec<SellThrough>,
    /// Why central's registry, stock or sell-through could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_error: Option<String>,
}

/// One edge of the fleet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeView {
    pub edge_id: String,
    pub url: String,
    /// `serving`, `draining` or `not_ready` as the edge says, or `down` when it did not answer.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EdgeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /admin/fleet`: the whole fleet, for the operator dashboard.
pub async fn fleet(
    State(edge): State<Arc<Edge>>,
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_auth(&edge, &headers)?;
    let body = dashboard.fleet(&edge).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The last view served. The peers are asked through the fleet's client (mutual TLS where the
/// fleet has a CA).
#[derive(Default)]
pub struct Dashboard {
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Dashboard {
    /// The fleet view as JSON: the last one if it is fresh, else a new one. Callers that ask
    /// while it is being gathered wait for it and share it.
    pub async fn fleet(&self, edge: &Edge) -> Result<Bytes, ApiError> {
        let mut last = self.last.lock().await;
        if let Some((at, body)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(body.clone());
        }
        let view = self.gather(edge).await;
        let body = serde_json::to_vec(&view).map_err(|e| {
            ApiError::internal("the fleet view could not be written", e.to_string())
        })?;
        let body = Bytes::from(body);
        *last = Some((Instant::now(), body.clone()));
        Ok(body)
    }

    async fn gather(&self, edge: &Edge) -> FleetView {
        let me = &edge.config.edge_id;
        let (registry, stock, sell_through) = tokio::join!(
            bounded(edge.central.registry()),
            bounded(edge.central.stock_levels()),
            bounded(edge.central.sell_through(SELL_THROUGH_STEPS))
        );
        let mut central_error = None;
        let mut registry = registry.unwrap_or_else(|e| {
            central_error = Some(format!("central's registry: {e}"));
            Vec::new()
        });
        let mut stock = stock.unwrap_or_else(|e| {
            central_error.get_or_insert(format!("central's stock: {e}"));
            Vec::new()
        });
        let mut sell_through = sell_through.unwrap_or_else(|e| {
            central_error.get_or_insert(format!("central's sell-through: {e}"));
            Vec::new()
        });
        // Each code's SKU on sale now (or next, or last), as the edges' statuses count it.
        let (catalog, now) = (edge.catalog(), edge.clock.now());
        let shown =
            |sale_id: &str, sku: &str| catalog.sku(sku, now).is_some_and(|e| e.sale_id == sale_id);
        stock.retain(|s| shown(&s.sale_id, &s.sku));
        sell_through.retain(|s| shown(&s.sale_id, &s.sku));
        if !registry.iter().any(|(id, _)| id == me) {
            registry.push((me.clone(), edge.url.clone()));
        }
        let mut peers = JoinSet::new();
        for (edge_id, url) in registry.iter().filter(|(id, _)| id != me).cloned() {
            let client = edge.fleet.client().clone();
            let token = edge.config.admin_token.clone();
            peers.spawn(async move {
                let status = bounded(wire::fetch(&client, &url, token.as_deref())).await;
                EdgeView::new(edge_id, url, status)
            });
        }
        let mut edges = vec![EdgeView::new(
            me.clone(),
            edge.url.clone(),
            own_status(edge).await.map_err(|e| e.to_string()),
        )];
        while let Some(view) = peers.join_next().await {
            edges.extend(view.ok());
        }
        edges.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
        FleetView {
            at: rfc3339(edge.clock.now()),
            edges,
            stock,
            sell_through,
            central_error,
        }
    }
}

/// What `read` answered, or why it did not within [`PEER_TIMEOUT`].
async fn bounded<T, E: std::fmt::Display>(
    read: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PEER_TIMEOUT, read).await {
        Ok(answer) => answer.map_err(|e| format!("{e:#}")),
        Err(_) => Err(format!("no answer within {PEER_TIMEOUT:?}")),
    }
}

impl EdgeView {
    fn new(edge_id: String, url: String, status: Result<EdgeStatus, String>) -> Self {
        match status {
            Ok(status) => Self {
                edge_id,
                url,
                state: status.state.clone(),
                status: Some(status),
                error: None,
            },
            Err(e) => Self {
                edge_id,
                url,
                state: "down".into(),
                status: None,
                error: Some(e),
            },
        }
    }
}
