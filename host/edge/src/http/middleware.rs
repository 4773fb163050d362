//! What every request passes through: counted and timed by route and status, the request
//! clock's `Date` on answers given here, and CORS for a storefront on another origin; and what
//! the operator API's requests pass through: failed logins slowed, and refused for a while.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tracing::Instrument as _;

use super::error::ApiError;
use super::pages;
use crate::customer;
use crate::edge::Edge;
use crate::locks;
use crate::metrics::RequestLabels;
use crate::wire::{CART_EDGE, HANDOFF_PATH, IDEMPOTENCY_KEY, MODULE_VERSION, REQUEST_ID};

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
                HeaderName::from_static(REQUEST_ID),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static(REQUEST_ID),
                HeaderName::from_static(CART_EDGE),
                HeaderName::from_static(MODULE_VERSION),
            ])
            .max_age(std::time::Duration::from_secs(600))
    })
}

/// The request's id: the client's `X-Request-Id` when it is well-formed (1 to 64 letters,
/// digits, `.`, `_` or `-`: an edge forwarding a request passes it on), else a new one.
fn request_id(headers: &axum::http::HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&crate::ids::new_id("r")).unwrap_or(HeaderValue::from_static("r"))
        })
}

/// Counts and times every request by route and status; gives it an id, which its answer
/// returns in `X-Request-Id` and a failure's log line names.
pub async fn observe(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    req.headers_mut().insert(REQUEST_ID, id.clone());

    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| route_label(p.as_str()));
    // Every line logged while the request is served names it.
    let span = tracing::info_span!("request", request_id = %id.to_str().unwrap_or_default());
    let mut response = super::error::THIS_REQUEST
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    response.headers_mut().insert(REQUEST_ID, id);
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

/// Failed operator logins, by client address: each costs its sender a pause, and an address
/// that fails more than `serve --failed-logins-per-minute` times a minute (10 by default) is
/// refused for [`REFUSED_FOR`], right token or not. A guesser gets a handful of tries a minute.
pub struct Logins {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    refused: Mutex<HashMap<IpAddr, Instant>>,
    /// One login at a time per address: a burst is taken one by one, each failure counted
    /// before the next attempt is looked at.
    turns: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// Proxies whose `X-Forwarded-For` names the client (see [`crate::customer`]).
    trusted_proxies: Vec<IpAddr>,
}
/// How long an address that failed too often is refused.
const REFUSED_FOR: Duration = Duration::from_secs(60);
/// The pause each failed login costs its sender.
const FAILED_LOGIN_PAUSE: Duration = Duration::from_millis(250);
/// Addresses remembered before the old ones are forgotten.
const MAX_TRACKED: usize = 10_000;

impl Logins {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32, trusted_proxies: Vec<IpAddr>) -> Option<Self> {
        Some(Self {
            failures: RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(per_minute)?)),
            refused: Mutex::default(),
            turns: Mutex::default(),
            trusted_proxies,
        })
    }

    /// Until when `client` is refused, if it is.
    fn refused_until(&self, client: IpAddr) -> Option<Instant> {
        locks::lock(&self.refused)
            .get(&client)
            .copied()
            .filter(|until| *until > Instant::now())
    }

    /// `client`'s turn to log in.
    fn turn(&self, client: IpAddr) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = locks::lock(&self.turns);
        if turns.len() >= MAX_TRACKED {
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        }
        Arc::clone(turns.entry(client).or_default())
    }
}

fn too_many(until: Instant) -> Response {
    let wait = until.saturating_duration_since(Instant::now());
    ApiError::TooManyFailedLogins {
        retry_after_secs: wait.as_secs() + 1,
    }
    .into_response()
}

/// Middleware on the operator API's routes (see [`Logins`]).
pub async fn slow_failed_logins(
    State(logins): State<Arc<Logins>>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client = customer::client_address(peer, req.headers(), &logins.trusted_proxies);
    if let Some(until) = logins.refused_until(client) {
        return too_many(until);
    }
    let turn = logins.turn(client);
    let _turn = turn.lock().await;
    if let Some(until) = logins.refused_until(client) {
        return too_many(until);
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        if logins.failures.check_key(&client).is_err() {
            locks::lock(&logins.refused).insert(client, Instant::now() + REFUSED_FOR);
            tracing::warn!(
                "{client}: too many failed operator logins, refused for {REFUSED_FOR:?}"
            );
        }
        if logins.failures.len() > MAX_TRACKED {
            logins.failures.retain_recent();
            locks::lock(&logins.refused).retain(|_, until| *until > Instant::now());
        }
        tokio::time::sleep(FAILED_LOGIN_PAUSE).await;
    }
    response
}
