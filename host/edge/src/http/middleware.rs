//! What every request passes through: counted and timed by route and status, the request
//! clock's `Date` on answers given here, and CORS for a storefront on another origin.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::pages;
use crate::edge::Edge;
use crate::metrics::RequestLabels;
use crate::wire::{CART_EDGE, HANDOFF_PATH, IDEMPOTENCY_KEY, MODULE_VERSION};

/// CORS for a browser storefront on another origin: preflights answered, the cart token and
/// idempotency key allowed in, the owner and module headers let out.
pub fn cors(origins: &[HeaderValue]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    (!origins.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins.to_vec())
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(IDEMPOTENCY_KEY),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static(CART_EDGE),
                HeaderName::from_static(MODULE_VERSION),
            ])
            .max_age(std::time::Duration::from_secs(600))
    })
}

/// Counts and times every request by route and status.
pub async fn observe(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
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
        .get(CART_EDGE)
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
        HANDOFF_PATH => "handoff",
        p if pages::is_page(p) => "page",
        p if p.starts_with("/admin") => "admin",
        _ => "other",
    }
}
