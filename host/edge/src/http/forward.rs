//! One fleet behind one address: a request for a cart this edge does not keep is forwarded,
//! once, to the edge that keeps it, whose answer goes back as it is; a new customer's cart is
//! made on their home edge.
//!
//! A forwarded request carries the fleet secret and the storefront's own credentials (its cart
//! token), nothing more, and is never forwarded again. Where each cart is, the fleet's directory
//! ([`crate::fleet`]) says.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::input::{MAX_BODY, bearer, read_limited};
use crate::edge::Edge;
use crate::fleet::{Peer, Route, edge_tag};
use crate::handoff;
use crate::http_client::join;
use crate::tls::FleetCertificate;
use crate::wire::{
    CART_EDGE, FLEET_SECRET, FORWARDED_BY, IDEMPOTENCY_KEY, MODULE_VERSION, REQUEST_ID,
};

/// What a forward passes on: the storefront's credentials and body, and the owner's answer.
/// `x-request-id` carries the request's id across the hop, so both edges log it.
const REQUEST_HEADERS: [&str; 4] = ["authorization", "content-type", IDEMPOTENCY_KEY, REQUEST_ID];
/// `date` is the owner's request clock, which the cart's hold expiries are in.
const RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "date",
    "retry-after",
    MODULE_VERSION,
    CART_EDGE,
];

/// How long an owner may take to answer a forward beyond the shortage wait (which it may spend
/// waiting for units): past it, a peer that accepted the connection and went silent (a
/// blackholed link) costs the shopper a `503` with `Retry-After`, not a stuck request.
pub const FORWARD_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// A request that claims to come from an edge of the fleet and does not.
const FORGED: ApiError = ApiError::Forbidden(
    "a forwarded request without the fleet's secret and, where the fleet has a CA, its certificate",
);

/// Whether a request comes from a peer edge, which forwarded it; one that claims to without
/// the fleet's credentials is refused.
pub fn from_peer(edge: &Edge, parts: &Parts) -> Result<bool, ApiError> {
    if !parts.headers.contains_key(FORWARDED_BY) {
        return Ok(false);
    }
    if admits(edge, &parts.headers, &parts.extensions) {
        Ok(true)
    } else {
        Err(FORGED)
    }
}

fn admits(edge: &Edge, headers: &HeaderMap, extensions: &Extensions) -> bool {
    edge.fleet.admits(
        extensions.get::<FleetCertificate>().is_some(),
        headers.get(FLEET_SECRET).map(HeaderValue::as_bytes),
    )
}

/// Sends the request to the owner and returns its answer, and whether it was a `503` other than
/// `overloaded` (the edge there may no longer be the owner).
async fn forward_once(
    edge: &Edge,
    peer: &Peer,
    parts: &Parts,
    body: Bytes,
) -> Result<(Response, bool), ApiError> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = join(&peer.url, path);
    let mut headers: Vec<(&str, &str)> = REQUEST_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some((*name, value))
        })
        .collect();
    headers.extend(edge.fleet.peer_headers());
    let started = Instant::now();
    let deadline = edge.config.shortage_wait + FORWARD_SLACK;
    let sent = edge
        .fleet
        .client()
        .send(parts.method.clone(), &url, &headers, body);
    let answer = match tokio::time::timeout(deadline, sent).await {
        Ok(answer) => answer,
        Err(_) => Err(anyhow::anyhow!("no answer within {deadline:?}")),
    }
    .map_err(|e| {
        ApiError::internal(
            "the edge that holds this cart is not answering; try again",
            format!("the cart's edge {} does not answer: {e:#}", peer.edge_id),
        )
    })?;
    edge.metrics.forwarded_in(started.elapsed());
    let unavailable = answer.status == StatusCode::SERVICE_UNAVAILABLE
        && serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .is_none_or(|v| v["error"]["code"] != "overloaded");
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    for name in RESPONSE_HEADERS {
        if let Some(value) = answer.headers.get(name) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value.clone());
        }
    }
    Ok((response, unavailable))
}

/// Forwards to `peer`, the edge with `tag`; when it does not answer, or answers `503`, asks
/// central whether the cart was handed off, or the edge moved (a restart on another address,
/// or its id taken over by another process), and tries once more there.
async fn forward_to(
    edge: &Edge,
    tag: &str,
    peer: Peer,
    cart_id: Option<&str>,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fleet = &edge.fleet;
    // An owner that is overloaded is asked again by the storefront, not looked for.
    let failed = match forward_once(edge, &peer, parts, body.clone()).await {
        Ok((answer, false)) => return Ok(answer),
        Ok((answer, true)) => Ok(answer),
        Err(e) => Err(e),
    };
    let handed = match cart_id {
        Some(cart_id) => fleet.ask_owner(cart_id).await,
        None => None,
    };
    let moved = match handed.filter(|owner| *owner != peer.edge_id) {
        Some(owner) if owner == fleet.edge_id() => None,
        Some(owner) => fleet.peer_named(&owner).await.ok().flatten(),
        None => fleet.peer(tag, true).await.ok().flatten(),
    }
    .filter(|p| p.url != peer.url && !fleet.is_me(p));
    let answer = match moved {
        Some(moved) => forward_once(edge, &moved, parts, body)
            .await
            .map(|(answer, _)| answer),
        None => failed,
    };
    if answer.is_err() {
        edge.metrics.forward_failures.inc();
    }
    answer
}

/// Where a new cart of this customer's is made: `None` here, or the response of the customer's
/// home edge, to which the request went. Every cart of a customer is kept by their home edge
/// (recorded at central by the first edge their cart was made on), so the per-customer limit,
/// counted by the rules over the customer's carts and orders on one edge, holds across the
/// fleet. An edge that is not ready (see [`Edge::ready`]) makes no carts: a new customer's home
/// is a peer, to which the create goes, once. Not in a fleet (no secret): here, as a lone edge.
pub async fn place_cart(
    edge: &Edge,
    customer_id: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<Option<Response>, ApiError> {
    let fleet = &edge.fleet;
    if !fleet.in_fleet() {
        return Ok(None);
    }
    let forwarded = from_peer(edge, parts)?;
    if let Err(why) = edge.ready() {
        if forwarded {
            // A forwarded request is never forwarded again.
            return Err(ApiError::Unavailable(why));
        }
        // The customer's home if this edge knows it, else another edge, which becomes a new
        // customer's home when it makes the cart (nothing is recorded here: the edge chosen
        // might be down).
        let peer = match fleet.known_home(customer_id) {
            Some(home) => fleet
                .peer(&edge_tag(&home), false)
                .await?
                .filter(|p| p.edge_id == home && !fleet.is_me(p))
                .ok_or(ApiError::Unavailable(why))?,
            None => fleet.other_peer().await?,
        };
        let tag = edge_tag(&peer.edge_id);
        let answer = forward_to(edge, &tag, peer, None, parts, body).await;
        forget_home_unless_served(edge, customer_id, &answer);
        return answer.map(Some);
    }
    let mut home = fleet.home_of(customer_id).await?;
    let mut peer = fleet.home_peer(&home).await?;
    if peer.is_none() && home != fleet.edge_id() {
        // The home remembered here has left the registry (it drained, and its customers'
        // homes moved or were forgotten): central knows where the carts are kept now.
        fleet.forget_home(customer_id);
        home = fleet.home_of(customer_id).await?;
        peer = fleet.home_peer(&home).await?;
    }
    if home == fleet.edge_id() {
        return Ok(None);
    }
    if forwarded {
        return Err(ApiError::Unavailable(format!(
            "the customer's carts are kept by {home}, not {}",
            fleet.edge_id()
        )));
    }
    let peer = peer.ok_or_else(|| {
        ApiError::Unavailable(format!("the customer's edge {home} is not in service"))
    })?;
    let tag = edge_tag(&home);
    let answer = forward_to(edge, &tag, peer, None, parts, body).await;
    forget_home_unless_served(edge, customer_id, &answer);
    answer.map(Some)
}

/// A home that did not make the cart may have handed its carts off: central is asked again
/// next time.
fn forget_home_unless_served(edge: &Edge, customer_id: &str, answer: &Result<Response, ApiError>) {
    let served = answer
        .as_ref()
        .is_ok_and(|r| r.status() != StatusCode::SERVICE_UNAVAILABLE);
    if !served {
        edge.fleet.forget_home(customer_id);
    }
}

/// Middleware on the `/v1/carts/{cart_id}...` routes: serves the carts this edge keeps,
/// forwards the others to the edge that keeps them.
pub async fn to_owner(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let fleet = &edge.fleet;
    let cart_id = req
        .uri()
        .path()
        .split('/')
        .nth(3)
        .unwrap_or_default()
        .to_owned();
    if cart_id.contains('%') {
        // Cart ids never need escaping: an escaped one names no cart (and would pass here
        // unrouted).
        return ApiError::NotFound("cart").into_response();
    }
    let forwarded = req.headers().contains_key(FORWARDED_BY);
    if forwarded && !admits(&edge, req.headers(), req.extensions()) {
        return FORGED.into_response();
    }
    // A token that cannot be this cart's costs no peer or central a thing: the answer is the
    // owner's (it would say the same), named as the owner's when this edge knows it.
    if !bearer(req.headers()).is_some_and(|t| fleet.token_fits(&cart_id, t)) {
        let mut refused = ApiError::Unauthorized.into_response();
        if let Some((name, id)) = fleet
            .known_owner(&cart_id)
            .and_then(|owner| cart_edge_header(&owner))
        {
            refused.headers_mut().insert(name, id);
        }
        return refused;
    }
    if !fleet.in_fleet() {
        return next.run(req).await;
    }
    match fleet.route(&cart_id) {
        Route::Here => serve_here(&edge, &cart_id, forwarded, req, next).await,
        Route::InTransit => in_transit(),
        // One hop only: the forwarding edge asks central where the cart went.
        Route::Moved(_) if forwarded => {
            ApiError::Unavailable(format!("the cart was handed off by {}", fleet.edge_id()))
                .into_response()
        }
        Route::Moved(owner) => {
            let mut found = fleet.peer_named(&owner).await;
            if matches!(found, Ok(None)) {
                // That edge left the registry: the cart may have moved on with its carts.
                found = match fleet.ask_owner(&cart_id).await {
                    Some(now) if now != owner => fleet.peer_named(&now).await,
                    _ => Ok(None),
                };
            }
            match found {
                Ok(Some(peer)) if !fleet.is_me(&peer) => forward(&edge, peer, &cart_id, req).await,
                Ok(_) => {
                    ApiError::Unavailable(format!("the cart's edge {owner} is not in service"))
                        .into_response()
                }
                Err(e) => ApiError::from(e).into_response(),
            }
        }
        // The forwarding edge took this edge for the owner: its registry is out of date. One
        // hop only, so the storefront retries.
        Route::Tag(_) if forwarded => ApiError::Unavailable(format!(
            "the cart belongs to another edge than {}",
            fleet.edge_id()
        ))
        .into_response(),
        Route::Tag(tag) => {
            let peer = match fleet.peer(&tag, false).await {
                Ok(Some(peer)) if !fleet.is_me(&peer) => peer,
                // Central still names this process for the tag: its own answer.
                Ok(Some(_)) => return next.run(req).await,
                // No edge in service has this tag: the cart was handed off by an edge that
                // drained, or it names no cart (this edge's 404 is the right answer).
                Ok(None) => {
                    let owner = fleet.ask_owner(&cart_id).await;
                    match owner {
                        Some(owner) if owner != fleet.edge_id() => {
                            match fleet.peer_named(&owner).await {
                                Ok(Some(peer)) => peer,
                                Ok(None) => {
                                    return ApiError::Unavailable(format!(
                                        "the cart's edge {owner} is not in service"
                                    ))
                                    .into_response();
                                }
                                Err(e) => return ApiError::from(e).into_response(),
                            }
                        }
                        _ => return next.run(req).await,
                    }
                }
                Err(e) => return ApiError::from(e).into_response(),
            };
            forward(&edge, peer, &cart_id, req).await
        }
    }
}

/// A cart this edge keeps.
async fn serve_here(
    edge: &Arc<Edge>,
    cart_id: &str,
    forwarded: bool,
    req: Request,
    next: Next,
) -> Response {
    let fleet = &edge.fleet;
    // A process whose edge id central gave to another: that id's carts are the other's now.
    let superseded = fleet.owns(cart_id) && !forwarded && edge.standing().lost_id();
    if superseded {
        match fleet.peer(fleet.tag(), true).await {
            Ok(Some(peer)) if !fleet.is_me(&peer) => {
                return forward(edge, peer, cart_id, req).await;
            }
            // Central still names this process: its own (refusing) answer.
            Ok(_) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let mut response = next.run(req).await;
    if response.status() == StatusCode::NOT_FOUND && left_meanwhile(edge, cart_id).await {
        return in_transit();
    }
    if let Some((name, id)) = cart_edge_header(fleet.edge_id()) {
        response.headers_mut().insert(name, id);
    }
    response
}

/// Whether a cart this edge answered `404` for left in a hand-off while the request waited for
/// it (the freeze has committed; the routing may not know yet).
async fn left_meanwhile(edge: &Edge, cart_id: &str) -> bool {
    if edge.fleet.route(cart_id) != Route::Here {
        return true;
    }
    let id = cart_id.to_owned();
    edge.read(move |c| handoff::is_moved(c, &id))
        .await
        .unwrap_or(false)
}

fn in_transit() -> Response {
    ApiError::Unavailable("the cart is being handed to another edge: ask again".into())
        .into_response()
}

/// Forwards a cart's request to the edge that keeps it.
async fn forward(edge: &Arc<Edge>, peer: Peer, cart_id: &str, req: Request) -> Response {
    let tag = edge_tag(&peer.edge_id);
    let (parts, body) = req.into_parts();
    let answer = match read_limited(body, MAX_BODY, edge.config.http.body_timeout).await {
        Ok(body) => forward_to(edge, &tag, peer, Some(cart_id), &parts, body).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// Names the edge that answered for a cart made here.
pub fn cart_edge_header(edge_id: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(edge_id)
        .ok()
        .map(|id| (HeaderName::from_static(CART_EDGE), id))
}
