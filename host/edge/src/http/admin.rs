//! The operator API: health and readiness, metrics, the edge's status and books, draining,
//! modules (deploy, list, activate, each recorded at central as the fleet's), and the hand-off
//! intake peers call. Everything but `/healthz`, `/readyz` and `/metrics` needs the operator
//! token; the hand-off intake needs the fleet secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cart_central::sale::SkuEntry;

use super::error::ApiError;
use super::forward;
use super::input::{bearer, read_limited};
use crate::asked::Asked;
use crate::carts;
use crate::clock::rfc3339;
use crate::drain::{self, Intake};
use crate::edge::Edge;
use crate::handoff::Batch;
use crate::ids;
use crate::locks;
use crate::metrics;
use crate::modules::{Deployed, MAX_MODULE_BYTES};
use crate::store::{db, retention};
use crate::wire::{EdgeAsked, EdgeBooks, EdgeStatus, MODULE_SIGNATURE, MODULE_VERSION};

type ApiResult = Result<Response, ApiError>;

/// Liveness: the process serves and its writer is alive and moving.
pub async fn healthz(State(edge): State<Arc<Edge>>) -> Response {
    if edge.writer.pulse().healthy(edge.config.writer.stuck_after) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        ApiError::Unavailable("the writer is stopped or stuck".into()).into_response()
    }
}

/// Readiness: this edge takes new carts (see [`Edge::ready`]); a load balancer sends new
/// shoppers elsewhere while it answers `503`.
pub async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    match edge.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => ApiError::Unavailable(why).into_response(),
    }
}

/// The metrics: in OpenMetrics when the scraper asks for it (Prometheus does), else in
/// Prometheus's classic text format.
pub async fn metrics(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> Response {
    edge.metrics.draining.set(i64::from(edge.drain.draining()));
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (media_type, text) =
        metrics::negotiate(accept, edge.metrics.render(edge.rules.get().version()));
    ([(header::CONTENT_TYPE, media_type)], text).into_response()
}

pub async fn status(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    Ok(Json(own_status(&edge).await?).into_response())
}

/// Starts draining: the edge hands its carts to the others and exits (see [`crate::drain`]).
pub async fn start_drain(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    edge.drain.ask();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"state": "draining"})),
    )
        .into_response())
}

/// Most a hand-off's batch may weigh.
const MAX_HANDOFF_BODY: usize = 8 * 1024 * 1024;

/// A draining peer hands carts to this edge (see [`crate::drain::receive`]): `200` taken (now
/// or before), `409` refused for good, `503` not now.
pub async fn take_handoff(State(edge): State<Arc<Edge>>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    if !forward::from_peer(&edge, &parts)? {
        return Err(ApiError::Forbidden(
            "hand-offs come from edges of the fleet",
        ));
    }
    let body = read_limited(body, MAX_HANDOFF_BODY, edge.config.http.body_timeout).await?;
    let batch: Batch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("a hand-off batch: {e}")))?;
    match drain::receive(&edge, batch).await? {
        Intake::Taken(n) => Ok(Json(serde_json::json!({ "taken": n })).into_response()),
        Intake::Refused(why) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": {"code": "refused", "message": why}})),
        )
            .into_response()),
        Intake::NotYet(why) => Err(ApiError::Unavailable(why)),
    }
}

/// What `/admin/status` says of this edge.
pub async fn own_status(edge: &Edge) -> Result<EdgeStatus, ApiError> {
    let (stock, backlog, delivered, (grants_in_flight, returns_in_flight), oldest) = edge
        .read(|c| {
            use db::{delivered_seq, in_flight, oldest_undelivered, outbox_backlog};
            Ok((
                db::stock_rows(c)?,
                outbox_backlog(c)?,
                delivered_seq(c)?,
                in_flight(c)?,
                oldest_undelivered(c)?,
            ))
        })
        .await
        .map_err(ApiError::unavailable)?;
    let sync = locks::lock(&edge.sync).clone();
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    // Each code's SKU on sale now (or next, or last); units of ended sales still here apart.
    let current: BTreeMap<&str, &SkuEntry> = catalog
        .entries()
        .filter_map(|e| catalog.sku(&e.sku, now).map(|c| (c.sku.as_str(), c)))
        .collect();
    let mut skus = BTreeMap::new();
    let mut ended_units = 0u64;
    for line in stock {
        let is_current = current
            .get(line.sku.as_str())
            .is_some_and(|e| e.sale_id == line.sale_id);
        if catalog
            .entry(&line.sale_id, &line.sku)
            .is_some_and(|e| e.ends_at <= now)
        {
            ended_units += u64::from(line.units.free + line.units.held);
        }
        if is_current {
            skus.insert(line.sku, line.units);
        }
    }
    let ready = edge.ready();
    let status = EdgeStatus {
        edge_id: edge.config.edge_id.clone(),
        module_version: edge.rules.get().version().to_owned(),
        skus,
        stock_total: current
            .values()
            .map(|s| (s.sku.clone(), u64::from(s.stock_total)))
            .collect(),
        ended_units,
        outbox_backlog: backlog,
        delivered_seq: delivered,
        grants_in_flight,
        returns_in_flight,
        sync_lag_ms: oldest.map_or(0, |t| (edge.clock.now() - t).max(0)),
        last_sync: sync.last_sync_at.map(rfc3339),
        last_sync_error: sync.last_error,
        forwarded: edge.metrics.forwarded(),
        state: if edge.drain.draining() {
            "draining"
        } else if ready.is_ok() {
            "serving"
        } else {
            "not_ready"
        }
        .to_owned(),
        not_ready_because: ready.err(),
        cart_updates: edge.metrics.cart_updates.seconds(),
    };
    Ok(status)
}

pub async fn ledger(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let now = edge.clock.now();
    let (stock, carts, orders, customers, pruned_sales, mark) = edge
        .read(move |c| {
            // One snapshot: the counters, the carts and the mark as of one commit.
            let _snapshot = c.unchecked_transaction()?;
            Ok((
                db::stock_rows(c)?,
                carts::units_in_carts(c)?,
                carts::orders(c)?,
                carts::units_per_customer(c, now)?,
                retention::pruned_sales(c)?,
                db::books_mark(c)?,
            ))
        })
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(EdgeBooks {
        edge_id: edge.config.edge_id.clone(),
        history_id: edge.identity.history_id(),
        stock,
        carts,
        orders,
        customers,
        pruned_sales,
        mark,
    })
    .into_response())
}

pub async fn list_modules(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let (active, modules) = edge.modules.list().await?;
    Ok(Json(serde_json::json!({ "active": active, "modules": modules })).into_response())
}

/// The requests this edge's rules were asked most recently, as a case file writes them.
pub async fn asked(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let asked = edge.asked.recent().iter().map(Asked::form).collect();
    // The rules were asked inside batches that may not be on disk yet.
    edge.writer.mark().after_jobs().await?;
    Ok(Json(EdgeAsked { asked }).into_response())
}

pub async fn deploy_module(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let limit = MAX_MODULE_BYTES;
    // A module may be large: it gets six body timeouts to arrive.
    let bytes = read_limited(body, limit, edge.config.http.body_timeout * 6).await?;
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let deployed = edge
        .modules
        .deploy(bytes.to_vec(), text(MODULE_VERSION), text(MODULE_SIGNATURE))
        .await?;
    let (status, info) = match deployed {
        Deployed::Created(info) => (StatusCode::CREATED, info),
        Deployed::Unchanged(info) => (StatusCode::OK, info),
    };
    record_fleet_module(&edge, &info.version).await;
    Ok((status, Json(info)).into_response())
}

/// Records at central the module an operator just made active here: the one an edge that
/// starts will run. Central not answering is said in the log; the deploy stands.
async fn record_fleet_module(edge: &Edge, version: &str) {
    let recorded = match edge.modules.fleet_copy(version).await {
        Ok(Some(module)) => edge
            .central
            .set_fleet_module(&module)
            .await
            .map_err(|e| e.to_string()),
        Ok(None) => Err("it is not stored".into()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = recorded {
        tracing::warn!("module {version} is active here, but not recorded as the fleet's: {e}");
    }
}

pub async fn activate_module(
    State(edge): State<Arc<Edge>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let info = edge.modules.activate(&version).await?;
    record_fleet_module(&edge, &info.version).await;
    Ok(Json(info).into_response())
}

/// Checks the operator token: `403` when none is configured, `401` when missing or wrong.
pub fn admin_auth(edge: &Edge, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = edge
        .config
        .admin_token
        .as_deref()
        .ok_or(ApiError::Forbidden(
            "operator API disabled: start the edge with --admin-token-file",
        ))?;
    let given = bearer(headers).ok_or(ApiError::Unauthorized)?;
    if ids::same_secret(given.as_bytes(), expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

// ---- input -----------------------------------------------------------------------------------
