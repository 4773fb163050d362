//! The HTTP API: routing, input checks, and the JSON views of carts, orders and SKUs.
//! Bad input stops here with a 4xx; everything else becomes one typed guest call.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cart_rules::{CartStatus, Line, MAX_QUANTITY};
use serde::Serialize;
use serde_json::Value;

use crate::carts::{CartView, Order, SetQuantity};
use crate::clock::rfc3339;
use crate::customer;
use crate::edge::Edge;
use crate::error::ApiError;
use crate::ids;
use crate::metrics::RequestLabels;
use crate::modules::Deployed;
use crate::shop::{self, Served};
use crate::status::{EdgeBooks, EdgeStatus};
use cart_central::sale::{Sale, SkuEntry, is_plain_id};

/// Storefront bodies larger than this are refused with `413`.
pub const MAX_BODY: usize = 16 * 1024;

type ApiResult = Result<Response, ApiError>;

pub fn router(edge: Arc<Edge>) -> Router {
    // A cart's requests go to the edge that owns it (crate::fleet).
    let carts = Router::new()
        .route("/v1/carts/{cart_id}", get(get_cart))
        .route(
            "/v1/carts/{cart_id}/items/{sku}",
            put(set_item).delete(remove_item),
        )
        .route("/v1/carts/{cart_id}/checkout", post(checkout))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&edge),
            crate::fleet::to_owner,
        ));
    let router = Router::new()
        .merge(carts)
        .route("/v1/carts", post(create_cart))
        .route("/v1/skus", get(list_skus))
        .route("/v1/skus/{sku}", get(get_sku))
        .route("/v1/sales", get(list_sales))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/status", get(status))
        .route("/admin/drain", post(drain))
        .route(crate::drain::HANDOFF_PATH, post(take_handoff))
        .route("/admin/fleet", get(fleet))
        .route("/admin/ledger", get(ledger))
        .route("/admin/modules", get(list_modules).put(deploy_module))
        .route("/admin/modules/{version}/activate", post(activate_module))
        .merge(crate::pages::routes())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(Arc::clone(&edge), observe));
    let router = match cors(&edge.config.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(edge)
}

/// CORS for a browser storefront on another origin: preflights answered, the cart token and
/// idempotency key allowed in, the owner and module headers let out.
fn cors(origins: &[HeaderValue]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    (!origins.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins.to_vec())
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static(crate::fleet::CART_EDGE),
                HeaderName::from_static("x-module-version"),
            ])
            .max_age(std::time::Duration::from_secs(600))
    })
}

/// Counts and times every request by route and status.
async fn observe(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| route_label(p.as_str()));
    let mut response = next.run(req).await;
    let took = started.elapsed();
    let labels = RequestLabels {
        route,
        status: response.status().as_u16(),
    };
    edge.metrics.requests.get_or_create(&labels).inc();
    edge.metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    // A cart update counts where its cart lives, not also where it was forwarded from.
    let answered_here = response
        .headers()
        .get(crate::fleet::CART_EDGE)
        .is_none_or(|owner| owner.as_bytes() == edge.config.edge_id.as_bytes());
    if answered_here {
        if route == "cart_item" {
            edge.metrics.cart_updates.record(took);
        }
        // The request clock's time, which hold expiries are in: pages count down against it.
        // A forwarded answer keeps its owner's.
        let now = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(edge.clock.now()).unwrap_or(0));
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
            response.headers_mut().insert(header::DATE, date);
        }
    }
    response
}

fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/carts" => "create_cart",
        "/v1/carts/{cart_id}" => "get_cart",
        "/v1/carts/{cart_id}/items/{sku}" => "cart_item",
        "/v1/carts/{cart_id}/checkout" => "checkout",
        "/v1/skus" => "list_skus",
        "/v1/skus/{sku}" => "get_sku",
        "/v1/sales" => "list_sales",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        crate::drain::HANDOFF_PATH => "handoff",
        p if crate::pages::is_page(p) => "page",
        p if p.starts_with("/admin") => "admin",
        _ => "other",
    }
}

// ---- storefront ------------------------------------------------------------------------------

async fn create_cart(State(edge): State<Arc<Edge>>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&edge, body).await?;
    let body = parse_json_object(&bytes)?;
    // A create a peer forwarded was counted where it landed.
    if let Some(limit) = &edge.create_limit
        && !edge.fleet.from_peer(&parts.headers)?
    {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        limit.check(customer::client_address(
            peer,
            &parts.headers,
            &edge.config.trusted_proxies,
        ))?;
    }
    let customer_id = customer::of_new_cart(edge.config.customer_key.as_deref(), &body)?;
    if let Some(home) = edge
        .fleet
        .place_cart(&edge, &customer_id, &parts, bytes)
        .await?
    {
        return Ok(home);
    }
    let (served, token) = shop::create(&edge, customer_id).await?;
    let mut view = CartJson::new(served.value, &edge.config.edge_id);
    view.cart_token = Some(token);
    let mut response = with_module(StatusCode::CREATED, view, &served.module);
    if let Ok(id) = HeaderValue::from_str(&edge.config.edge_id) {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static(crate::fleet::CART_EDGE),
            id,
        );
    }
    Ok(response)
}

async fn get_cart(
    State(edge): State<Arc<Edge>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let token_hash = cart_token(&headers)?;
    check_cart_id(&cart_id)?;
    let cart = shop::get(&edge, &cart_id, &token_hash)?;
    Ok(cart_response(StatusCode::OK, cart, &edge))
}

async fn set_item(
    State(edge): State<Arc<Edge>>,
    Path((cart_id, sku)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let token_hash = cart_token(&headers)?;
    check_cart_id(&cart_id)?;
    check_sku(&edge, &sku)?;
    let quantity = parse_quantity(&read_json(&edge, body).await?)?;
    let ask = SetQuantity {
        cart_id,
        token_hash,
        sku,
        quantity,
    };
    let cart = shop::set_quantity(&edge, ask).await?;
    Ok(cart_response(StatusCode::OK, cart, &edge))
}

async fn remove_item(
    State(edge): State<Arc<Edge>>,
    Path((cart_id, sku)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let token_hash = cart_token(&headers)?;
    check_cart_id(&cart_id)?;
    check_sku(&edge, &sku)?;
    let ask = SetQuantity {
        cart_id,
        token_hash,
        sku,
        quantity: 0,
    };
    let cart = shop::set_quantity(&edge, ask).await?;
    Ok(cart_response(StatusCode::OK, cart, &edge))
}

async fn checkout(
    State(edge): State<Arc<Edge>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let token_hash = cart_token(&headers)?;
    check_cart_id(&cart_id)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| ApiError::BadRequest("an Idempotency-Key header is required".into()))?
        .to_owned();
    let bytes = read_body(&edge, body).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) && !parse_json(&bytes)?.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let done = shop::checkout(&edge, cart_id, token_hash, idempotency_key).await?;
    let (order, replayed) = done.value;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let order = OrderJson::new(order, &edge.config.edge_id);
    Ok(with_module(status, order, &done.module))
}

/// `?sale=ID`: one sale's SKUs.
#[derive(serde::Deserialize)]
struct SkusQuery {
    sale: Option<String>,
}

/// What is on sale now and next (running and upcoming sales), or one sale's SKUs.
async fn list_skus(State(edge): State<Arc<Edge>>, Query(q): Query<SkusQuery>) -> ApiResult {
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    let free = free_units(&edge).await?;
    let sales: Vec<&Sale> = match &q.sale {
        Some(id) => vec![
            catalog
                .sales()
                .find(|s| &s.sale_id == id)
                .ok_or(ApiError::NotFound("sale"))?,
        ],
        None => catalog.sales().filter(|s| s.ends_at > now).collect(),
    };
    let skus: Vec<SkuJson> = sales
        .iter()
        .flat_map(|s| s.skus.iter())
        .map(|e| SkuJson::new(e, &free))
        .collect();
    Ok(Json(serde_json::json!({ "skus": skus })).into_response())
}

/// The running and upcoming sales, with their SKUs.
async fn list_sales(State(edge): State<Arc<Edge>>) -> ApiResult {
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    let free = free_units(&edge).await?;
    let mut sales: Vec<SaleJson> = catalog
        .sales()
        .filter(|s| s.ends_at > now)
        .map(|s| SaleJson {
            sale_id: &s.sale_id,
            state: if now >= s.starts_at {
                "running"
            } else {
                "upcoming"
            },
            starts_at: rfc3339(s.starts_at),
            ends_at: rfc3339(s.ends_at),
            hold_ttl_seconds: s.hold_ttl_ms / 1000,
            skus: s.skus.iter().map(|e| SkuJson::new(e, &free)).collect(),
        })
        .collect();
    sales.sort_by_key(|s| s.starts_at.clone());
    Ok(Json(serde_json::json!({ "sales": sales })).into_response())
}

async fn get_sku(State(edge): State<Arc<Edge>>, Path(sku): Path<String>) -> ApiResult {
    check_sku(&edge, &sku)?;
    let catalog = edge.catalog();
    let entry = catalog
        .sku(&sku, edge.clock.now())
        .ok_or(ApiError::NotFound("SKU"))?;
    let free = free_units(&edge).await?;
    Ok(Json(SkuJson::new(entry, &free)).into_response())
}

/// This edge's free units of each SKU, by sale and SKU.
async fn free_units(edge: &Edge) -> Result<BTreeMap<(String, String), u32>, ApiError> {
    Ok(edge
        .stock()
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|l| ((l.sale_id, l.sku), l.units.free))
        .collect())
}

// ---- operators -------------------------------------------------------------------------------

/// Liveness: the process serves and its writer is alive and moving.
async fn healthz(State(edge): State<Arc<Edge>>) -> Response {
    if edge.writer.pulse().healthy(edge.config.writer.stuck_after) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        ApiError::Unavailable("the writer is stopped or stuck".into()).into_response()
    }
}

/// Readiness: this edge takes new carts (see [`Edge::ready`]); a load balancer sends new
/// shoppers elsewhere while it answers `503`.
async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    match edge.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => ApiError::Unavailable(why).into_response(),
    }
}

async fn metrics(State(edge): State<Arc<Edge>>) -> Response {
    edge.metrics.draining.set(i64::from(edge.drain.draining()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        edge.metrics.render(),
    )
        .into_response()
}

async fn status(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    Ok(Json(own_status(&edge).await?).into_response())
}

/// Starts draining: the edge hands its carts to the others and exits (see [`crate::drain`]).
async fn drain(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
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

/// A draining peer hands carts to this edge (see [`crate::handoff`]): `200` taken (now or
/// before), `409` refused for good.
async fn take_handoff(State(edge): State<Arc<Edge>>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    if !edge.fleet.from_peer(&parts.headers)? {
        return Err(ApiError::Forbidden(
            "hand-offs come from edges of the fleet",
        ));
    }
    let body = read_limited(body, MAX_HANDOFF_BODY, edge.config.http.body_timeout).await?;
    let batch: crate::handoff::Batch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("a hand-off batch: {e}")))?;
    let (catalog, now, not_ready) = (edge.catalog(), edge.clock.now(), edge.ready().err());
    let carts: Vec<String> = batch.carts.iter().map(|c| c.cart_id.clone()).collect();
    // Checked again inside the job: a drain that began meanwhile must not see it taken later.
    let draining = edge.drain.flag();
    let answer = edge
        .writer
        .host(move |c| {
            let not_ready = not_ready.or_else(|| {
                draining
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| "draining".to_owned())
            });
            match not_ready {
                Some(why) => Ok(if crate::handoff::refuse(c, &batch, now)? {
                    Err(why)
                } else {
                    Ok(())
                }),
                None => crate::handoff::take(c, &batch, &catalog, now),
            }
        })
        .await?;
    match answer {
        Ok(()) => {
            edge.fleet.note_adopted(carts.iter().cloned());
            Ok(Json(serde_json::json!({"taken": carts.len()})).into_response())
        }
        Err(why) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": {"code": "refused", "message": why}})),
        )
            .into_response()),
    }
}

/// The whole fleet, for the operator dashboard (see [`crate::dashboard`]).
async fn fleet(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let body = edge.dashboard.fleet(&edge).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// What `/admin/status` says of this edge.
pub async fn own_status(edge: &Edge) -> Result<EdgeStatus, ApiError> {
    let (stock, backlog, delivered, (grants_in_flight, returns_in_flight), oldest) = edge
        .read(|c| {
            use crate::edge_db::{delivered_seq, in_flight, oldest_undelivered, outbox_backlog};
            Ok((
                crate::edge_db::stock_rows(c)?,
                outbox_backlog(c)?,
                delivered_seq(c)?,
                in_flight(c)?,
                oldest_undelivered(c)?,
            ))
        })
        .await
        .map_err(unavailable)?;
    let sync = edge.sync.lock().unwrap_or_else(|p| p.into_inner()).clone();
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

async fn ledger(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let now = edge.clock.now();
    let (stock, carts, orders, customers, mark) = edge
        .read(move |c| {
            // One snapshot: the counters, the carts and the mark as of one commit.
            let _snapshot = c.unchecked_transaction()?;
            Ok((
                crate::edge_db::stock_rows(c)?,
                crate::carts::units_in_carts(c)?,
                crate::carts::orders(c)?,
                crate::carts::units_per_customer(c, now)?,
                crate::edge_db::books_mark(c)?,
            ))
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(EdgeBooks {
        edge_id: edge.config.edge_id.clone(),
        history_id: edge.identity.history_id(),
        stock,
        carts,
        orders,
        customers,
        mark,
    })
    .into_response())
}

async fn list_modules(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let (active, modules) = edge.modules.list().await?;
    Ok(Json(serde_json::json!({ "active": active, "modules": modules })).into_response())
}

async fn deploy_module(State(edge): State<Arc<Edge>>, headers: HeaderMap, body: Body) -> ApiResult {
    admin_auth(&edge, &headers)?;
    let limit = crate::modules::MAX_MODULE_BYTES;
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
        .deploy(
            bytes.to_vec(),
            text("x-module-version"),
            text("x-module-signature"),
        )
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

async fn activate_module(
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn cart_token(headers: &HeaderMap) -> Result<String, ApiError> {
    bearer(headers)
        .map(ids::token_hash)
        .ok_or(ApiError::Unauthorized)
}

fn check_cart_id(cart_id: &str) -> Result<(), ApiError> {
    if ids::is_id(cart_id, "c") {
        Ok(())
    } else {
        Err(ApiError::NotFound("cart"))
    }
}

fn check_sku(edge: &Edge, sku: &str) -> Result<(), ApiError> {
    if is_plain_id(sku) && edge.catalog().sku(sku, edge.clock.now()).is_some() {
        Ok(())
    } else {
        Err(ApiError::NotFound("SKU"))
    }
}

/// Reads a storefront body: at most [`MAX_BODY`], within the body timeout.
async fn read_body(edge: &Edge, body: Body) -> Result<axum::body::Bytes, ApiError> {
    read_limited(body, MAX_BODY, edge.config.http.body_timeout).await
}

pub(crate) async fn read_limited(
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    tokio::time::timeout(within, to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// Reads a JSON object body.
async fn read_json(edge: &Edge, body: Body) -> Result<Value, ApiError> {
    parse_json_object(&read_body(edge, body).await?)
}

fn parse_json_object(bytes: &[u8]) -> Result<Value, ApiError> {
    let value = parse_json(bytes)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ))
    }
}

fn parse_quantity(body: &Value) -> Result<u32, ApiError> {
    let invalid = ApiError::InvalidQuantity { max: MAX_QUANTITY };
    match body.get("quantity") {
        None => Err(ApiError::BadRequest("quantity is required".into())),
        // JSON Schema counts 2.0 as an integer, and so does the edge.
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(MAX_QUANTITY)).contains(f))
                    .map(|f| f as u64)
            })
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q <= MAX_QUANTITY)
            .ok_or(invalid),
        Some(_) => Err(invalid),
    }
}

fn cart_response(status: StatusCode, cart: Served<CartView>, edge: &Edge) -> Response {
    with_module(
        status,
        CartJson::new(cart.value, &edge.config.edge_id),
        &cart.module,
    )
}

/// A JSON response saying, in `X-Module-Version`, which module version answered it.
fn with_module(status: StatusCode, body: impl Serialize, module: &str) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(module) {
        response.headers_mut().insert(MODULE_VERSION, v);
    }
    response
}

const MODULE_VERSION: &str = "x-module-version";

fn unavailable(e: anyhow::Error) -> ApiError {
    ApiError::Unavailable(format!("{e:#}"))
}

// ---- views -----------------------------------------------------------------------------------

#[derive(Serialize)]
struct CartJson {
    cart_id: String,
    customer_id: String,
    status: &'static str,
    lines: Vec<CartLineJson>,
    total_cents: i64,
    edge_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cart_token: Option<String>,
}

#[derive(Serialize)]
struct CartLineJson {
    sku: String,
    quantity: u32,
    unit_price_cents: i64,
    hold_expires_at: String,
}

impl CartJson {
    fn new(c: CartView, edge_id: &str) -> Self {
        Self {
            cart_id: c.cart_id,
            customer_id: c.customer_id,
            status: match c.status {
                CartStatus::Open => "open",
                CartStatus::CheckedOut => "checked_out",
            },
            lines: c.lines.into_iter().map(CartLineJson::from).collect(),
            total_cents: c.total_cents,
            edge_id: edge_id.to_owned(),
            cart_token: None,
        }
    }
}

impl From<Line> for CartLineJson {
    fn from(l: Line) -> Self {
        Self {
            sku: l.sku,
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
            hold_expires_at: rfc3339(l.hold_expires_at),
        }
    }
}

#[derive(Serialize)]
struct OrderJson {
    order_id: String,
    cart_id: String,
    customer_id: String,
    lines: Vec<OrderLineJson>,
    total_cents: i64,
    placed_at: String,
    edge_id: String,
}

#[derive(Serialize)]
struct OrderLineJson {
    sku: String,
    quantity: u32,
    unit_price_cents: i64,
}

impl OrderJson {
    fn new(o: Order, edge_id: &str) -> Self {
        Self {
            order_id: o.order_id,
            cart_id: o.cart_id,
            customer_id: o.customer_id,
            lines: o
                .lines
                .into_iter()
                .map(|l| OrderLineJson {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            total_cents: o.total_cents,
            placed_at: rfc3339(o.placed_at),
            edge_id: edge_id.to_owned(),
        }
    }
}

#[derive(Serialize)]
struct SkuJson<'a> {
    sku: &'a str,
    name: &'a str,
    price_cents: i64,
    limit_per_customer: u32,
    sale_id: &'a str,
    sale_starts_at: String,
    sale_ends_at: String,
    available_here: u32,
}

impl<'a> SkuJson<'a> {
    fn new(e: &'a SkuEntry, free: &BTreeMap<(String, String), u32>) -> Self {
        Self {
            sku: &e.sku,
            name: &e.name,
            price_cents: e.price_cents,
            limit_per_customer: e.limit_per_customer,
            sale_id: &e.sale_id,
            sale_starts_at: rfc3339(e.sale_starts_at),
            sale_ends_at: rfc3339(e.ends_at),
            available_here: free
                .get(&(e.sale_id.clone(), e.sku.clone()))
                .copied()
                .unwrap_or(0),
        }
    }
}

#[derive(Serialize)]
struct SaleJson<'a> {
    sale_id: &'a str,
    /// `running` or `upcoming`.
    state: &'static str,
    starts_at: String,
    ends_at: String,
    hold_ttl_seconds: i64,
    skus: Vec<SkuJson<'a>>,
}
