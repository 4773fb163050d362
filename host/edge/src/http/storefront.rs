//! The storefront API (`/v1`): carts, their lines and checkout, SKUs and sales. Each handler
//! checks its input and hands the request to [`crate::shop`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cart_central::sale::Sale;

use super::error::ApiError;
use super::forward;
use super::input::{
    cart_token, check_cart_id, check_sku, parse_json, parse_json_object, parse_quantity, read_body,
    read_json,
};
use super::views::{CartJson, OrderJson, SaleJson, SkuJson, cart_response, with_module};
use crate::carts::SetQuantity;
use crate::clock::rfc3339;
use crate::customer;
use crate::edge::Edge;
use crate::shop;
use crate::wire::IDEMPOTENCY_KEY;

type ApiResult = Result<Response, ApiError>;

pub async fn create_cart(State(edge): State<Arc<Edge>>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&edge, body).await?;
    let body = parse_json_object(&bytes)?;
    // A create a peer forwarded was counted where it landed.
    if let Some(limit) = &edge.create_limit
        && !forward::from_peer(&edge, &parts)?
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
    if let Some(home) = forward::place_cart(&edge, &customer_id, &parts, bytes).await? {
        return Ok(home);
    }
    let (served, token) = shop::create(&edge, customer_id).await?;
    let mut view = CartJson::new(served.value, &edge.config.edge_id);
    view.cart_token = Some(token);
    let mut response = with_module(StatusCode::CREATED, view, &served.module);
    if let Some((name, id)) = forward::cart_edge_header(&edge.config.edge_id) {
        response.headers_mut().insert(name, id);
    }
    Ok(response)
}

pub async fn get_cart(
    State(edge): State<Arc<Edge>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let token_hash = cart_token(&headers)?;
    check_cart_id(&cart_id)?;
    let cart = shop::get(&edge, &cart_id, &token_hash).await?;
    Ok(cart_response(StatusCode::OK, cart, &edge.config.edge_id))
}

pub async fn set_item(
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
    Ok(cart_response(StatusCode::OK, cart, &edge.config.edge_id))
}

pub async fn remove_item(
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
    Ok(cart_response(StatusCode::OK, cart, &edge.config.edge_id))
}

pub async fn checkout(
    State(edge): State<Arc<Edge>>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let token_hash = cart_token(&headers)?;
    check_cart_id(&cart_id)?;
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY)
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
pub struct SkusQuery {
    sale: Option<String>,
}

/// What is on sale now and next (running and upcoming sales), or one sale's SKUs.
pub async fn list_skus(State(edge): State<Arc<Edge>>, Query(q): Query<SkusQuery>) -> ApiResult {
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    let free = free_units(&edge).await?;
    let in_sale = edge.allotments.left_in_sales();
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
        .map(|e| SkuJson::new(e, &free, &in_sale))
        .collect();
    Ok(Json(serde_json::json!({ "skus": skus })).into_response())
}

/// The running and upcoming sales, with their SKUs.
pub async fn list_sales(State(edge): State<Arc<Edge>>) -> ApiResult {
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    let free = free_units(&edge).await?;
    let in_sale = edge.allotments.left_in_sales();
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
            skus: s
                .skus
                .iter()
                .map(|e| SkuJson::new(e, &free, &in_sale))
                .collect(),
        })
        .collect();
    sales.sort_by_key(|s| s.starts_at.clone());
    Ok(Json(serde_json::json!({ "sales": sales })).into_response())
}

pub async fn get_sku(State(edge): State<Arc<Edge>>, Path(sku): Path<String>) -> ApiResult {
    check_sku(&edge, &sku)?;
    let catalog = edge.catalog();
    let entry = catalog
        .sku(&sku, edge.clock.now())
        .ok_or(ApiError::NotFound("SKU"))?;
    let free = free_units(&edge).await?;
    let in_sale = edge.allotments.left_in_sales();
    Ok(Json(SkuJson::new(entry, &free, &in_sale)).into_response())
}

/// This edge's free units of each SKU, by sale and SKU.
async fn free_units(edge: &Edge) -> Result<BTreeMap<(String, String), u32>, ApiError> {
    Ok(edge
        .stock()
        .await
        .map_err(ApiError::unavailable)?
        .into_iter()
        .map(|l| ((l.sale_id, l.sku), l.units.free))
        .collect())
}
