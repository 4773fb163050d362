//! The storefront (`/`) and the operator dashboard (`/admin/`): static pages embedded in the
//! binary, built only on the public HTTP API, like any storefront or operator tool would be.
//! Nothing is generated per request: the edge's work is the API calls the pages make.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../pages/", $file)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("/", "shop.html", HTML),
    asset!("/admin/", "dashboard.html", HTML),
    asset!("/assets/pages.css", "pages.css", CSS),
    asset!("/assets/shop.js", "shop.js", JS),
    asset!("/assets/dashboard.js", "dashboard.js", JS),
    asset!(
        "/assets/uPlot.iife.min.js",
        "vendor/uplot/uPlot.iife.min.js",
        JS
    ),
    asset!("/assets/uPlot.min.css", "vendor/uplot/uPlot.min.css", CSS),
];

/// Each asset's entity tag: its content's hash, so a new binary's pages are fetched anew and an
/// unchanged page costs a `304`.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let tag = format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12]));
            HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// The pages run only their own scripts and styles and talk only to the edge that served them.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router =
        Router::new().route("/admin", get(|| async { Redirect::permanent("/admin/") }));
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    router
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let Some((asset, etag)) = ASSETS.get(index).zip(ETAGS.get(index)) else {
        return ApiError::NotFound("page").into_response();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|given| given == etag);
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body: &'static [u8] = if fresh { b"" } else { asset.body };
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag.clone()),
            // Always revalidated: a deploy of a new binary shows at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Whether a path is one of the pages' (for the metrics' route label).
pub fn is_page(path: &str) -> bool {
    path == "/admin" || ASSETS.iter().any(|a| a.path == path)
}
