//! The JSON views of carts, orders, SKUs and sales, as the storefront API answers them, and the
//! `X-Module-Version` every answer of the rules carries.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cart_central::SkuKey;
use cart_central::sale::SkuEntry;
use cart_rules::{CartStatus, Line};
use serde::Serialize;

use crate::carts::{CartView, Order};
use crate::clock::rfc3339;
use crate::shop::Served;
use crate::wire::MODULE_VERSION;

/// A cart as the rules left it, from the edge `edge_id`.
pub fn cart_response(status: StatusCode, cart: Served<CartView>, edge_id: &str) -> Response {
    with_module(status, CartJson::new(cart.value, edge_id), &cart.module)
}

/// A JSON response saying, in `X-Module-Version`, which module version answered it.
pub fn with_module(status: StatusCode, body: impl Serialize, module: &str) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(module) {
        response.headers_mut().insert(MODULE_VERSION, v);
    }
    response
}

#[derive(Serialize)]
pub struct CartJson {
    cart_id: String,
    customer_id: String,
    status: &'static str,
    lines: Vec<CartLineJson>,
    total_cents: i64,
    edge_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_token: Option<String>,
}

#[derive(Serialize)]
struct CartLineJson {
    sku: String,
    quantity: u32,
    unit_price_cents: i64,
    hold_expires_at: String,
}

impl CartJson {
    pub fn new(c: CartView, edge_id: &str) -> Self {
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
pub struct OrderJson {
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
    pub fn new(o: Order, edge_id: &str) -> Self {
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
pub struct SkuJson<'a> {
    sku: &'a str,
    name: &'a str,
    price_cents: i64,
    limit_per_customer: u32,
    sale_id: &'a str,
    sale_starts_at: String,
    sale_ends_at: String,
    available_here: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    available_in_sale: Option<u32>,
}

impl<'a> SkuJson<'a> {
    pub fn new(
        e: &'a SkuEntry,
        free: &BTreeMap<(String, String), u32>,
        in_sale: &HashMap<SkuKey, u32>,
    ) -> Self {
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
            available_in_sale: in_sale.get(&SkuKey::new(&e.sale_id, &e.sku)).copied(),
        }
    }
}

#[derive(Serialize)]
pub struct SaleJson<'a> {
    pub sale_id: &'a str,
    /// `running` or `upcoming`.
    pub state: &'static str,
    pub starts_at: String,
    pub ends_at: String,
    pub hold_ttl_seconds: i64,
    pub skus: Vec<SkuJson<'a>>,
}
