//! The HTTP layer, the only part of the edge that knows axum and the HTTP error type: the
//! router, and each router's handlers on the narrow state they need.
//!
//! - [`storefront`]: `/v1`, carts, SKUs and sales; [`forward`]: a cart's requests to the edge
//!   that keeps it, a new customer's cart to their home edge.
//! - [`admin`]: the operator API and the hand-off intake; [`dashboard`]: `/admin/fleet`.
//! - [`pages`]: the storefront and dashboard pages, embedded.
//! - [`middleware`]: metrics, the request clock's `Date`, CORS.
//! - [`input`]: credentials, ids and bodies checked; [`views`]: the JSON answers;
//!   [`error`]: the one place errors become a status, a code and a body.

pub mod admin;
pub mod dashboard;
pub mod error;
pub mod forward;
pub mod input;
pub mod middleware;
pub mod pages;
pub mod storefront;
pub mod views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef};
use axum::routing::{get, post, put};
use axum::{Router, middleware as layers};
use hyper::body::Incoming;
use tower::Service as _;

use self::dashboard::Dashboard;
use self::error::ApiError;
use crate::edge::Edge;
use crate::tls::FleetCertificate;
use crate::wire::{ASKED_PATH, HANDOFF_PATH, LEDGER_PATH, STATUS_PATH};

/// What the handlers are given: the edge, and the dashboard's shared view. Each handler takes
/// only the part it needs ([`FromRef`]).
#[derive(Clone)]
pub struct AppState {
    edge: Arc<Edge>,
    dashboard: Arc<Dashboard>,
}

impl FromRef<AppState> for Arc<Edge> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.edge)
    }
}

impl FromRef<AppState> for Arc<Dashboard> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.dashboard)
    }
}

/// An edge's HTTP application, ready to serve connections.
#[derive(Clone)]
pub struct App(Router);

impl App {
    pub fn new(edge: Arc<Edge>) -> Self {
        Self(router(edge))
    }

    /// Another application, served the way an edge is (see [`crate::server::serve`]).
    pub fn from_router(router: Router) -> Self {
        Self(router)
    }

    /// The application as a hyper service for one connection, telling handlers who the peer is
    /// and whether it presented a fleet certificate.
    pub fn for_connection(
        &self,
        peer: SocketAddr,
        certified: bool,
    ) -> impl Fn(hyper::Request<Incoming>) -> axum::routing::future::RouteFuture<Infallible>
    + Clone
    + use<> {
        let app = self.0.clone();
        move |mut req| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if certified {
                req.extensions_mut().insert(FleetCertificate);
            }
            app.clone().call(req)
        }
    }
}

fn router(edge: Arc<Edge>) -> Router {
    use self::admin::*;
    use self::storefront::*;
    // A cart's requests go to the edge that keeps it.
    let carts = Router::new()
        .route("/v1/carts/{cart_id}", get(get_cart))
        .route(
            "/v1/carts/{cart_id}/items/{sku}",
            put(set_item).delete(remove_item),
        )
        .route("/v1/carts/{cart_id}/checkout", post(checkout))
        .route_layer(layers::from_fn_with_state(
            Arc::clone(&edge),
            forward::to_owner,
        ));
    // The operator API: its failed logins are slowed and, past a few a minute, refused.
    let operators = Router::new()
        .route(STATUS_PATH, get(status))
        .route("/admin/drain", post(start_drain))
        .route("/admin/fleet", get(dashboard::fleet))
        .route(LEDGER_PATH, get(ledger))
        .route(ASKED_PATH, get(asked))
        .route("/admin/modules", get(list_modules).put(deploy_module))
        .route("/admin/modules/{version}/activate", post(activate_module));
    let logins = middleware::Logins::new(
        edge.config.failed_logins_per_minute,
        edge.config.trusted_proxies.clone(),
    );
    let operators = match logins {
        Some(logins) => operators.route_layer(layers::from_fn_with_state(
            Arc::new(logins),
            middleware::slow_failed_logins,
        )),
        None => operators,
    };
    let router = Router::new()
        .merge(carts)
        .merge(operators)
        .route("/v1/carts", post(create_cart))
        .route("/v1/skus", get(list_skus))
        .route("/v1/skus/{sku}", get(get_sku))
        .route("/v1/sales", get(list_sales))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(HANDOFF_PATH, post(take_handoff))
        .merge(pages::routes())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(layers::from_fn_with_state(
            Arc::clone(&edge),
            middleware::observe,
        ));
    let router = match middleware::cors(&edge.config.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(AppState {
        edge,
        dashboard: Arc::new(Dashboard::default()),
    })
}
