//! Input checks: the credentials a request carries, its ids, and its body, read within a size
//! and a time limit and parsed as the JSON the API takes. Bad input stops here with a 4xx.

use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, header};
use cart_central::sale::is_plain_id;
use cart_rules::MAX_QUANTITY;
use serde_json::Value;

use super::error::ApiError;
use crate::edge::Edge;
use crate::ids;

/// Storefront bodies larger than this are refused with `413`.
pub const MAX_BODY: usize = 16 * 1024;

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub fn cart_token(headers: &HeaderMap) -> Result<String, ApiError> {
    bearer(headers)
        .map(ids::token_hash)
        .ok_or(ApiError::Unauthorized)
}

pub fn check_cart_id(cart_id: &str) -> Result<(), ApiError> {
    if ids::is_id(cart_id, "c") {
        Ok(())
    } else {
        Err(ApiError::NotFound("cart"))
    }
}

pub fn check_sku(edge: &Edge, sku: &str) -> Result<(), ApiError> {
    if is_plain_id(sku) && edge.catalog().sku(sku, edge.clock.now()).is_some() {
        Ok(())
    } else {
        Err(ApiError::NotFound("SKU"))
    }
}

/// Reads a storefront body: at most [`MAX_BODY`], within the body timeout.
pub async fn read_body(edge: &Edge, body: Body) -> Result<Bytes, ApiError> {
    read_limited(body, MAX_BODY, edge.config.http.body_timeout).await
}

pub async fn read_limited(
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes, ApiError> {
    tokio::time::timeout(within, to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// Reads a JSON object body.
pub async fn read_json(edge: &Edge, body: Body) -> Result<Value, ApiError> {
    parse_json_object(&read_body(edge, body).await?)
}

pub fn parse_json_object(bytes: &[u8]) -> Result<Value, ApiError> {
    let value = parse_json(bytes)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ))
    }
}

pub fn parse_quantity(body: &Value) -> Result<u32, ApiError> {
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
