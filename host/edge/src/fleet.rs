//! One fleet behind one address: a cart's id names the edge that created it, and a request for a
//! cart this edge does not own is forwarded, once, to the owner, whose answer goes back as it is.
//!
//! Edges find each other in central's registry (the URL each registered with `--public-url`),
//! cached here and read again on a miss. A forwarded request carries the fleet secret and the
//! storefront's own credentials (its cart token), nothing more, and is never forwarded again.
//! Without a fleet secret an edge neither forwards nor accepts forwarded requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::seq::IndexedRandom as _;
use sha2::{Digest, Sha256};

use crate::api::read_limited;
use crate::edge::Edge;
use crate::error::ApiError;
use crate::http_client::HttpClient;
use crate::identity::Standing;
use crate::ids;

/// Names the edge that owns the cart, on every answer about a cart.
pub const CART_EDGE: &str = "x-cart-edge";
/// Set by an edge that forwards a request: its edge id.
pub const FORWARDED_BY: &str = "x-cart-forwarded-by";
/// The fleet secret, on a forwarded request.
pub const FLEET_SECRET: &str = "x-fleet-secret";

/// What a forward passes on: the storefront's credentials and body, and the owner's answer.
const REQUEST_HEADERS: [&str; 3] = ["authorization", "content-type", "idempotency-key"];
/// `date` is the owner's request clock, which the cart's hold expiries are in.
const RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "date",
    "retry-after",
    "x-module-version",
    CART_EDGE,
];

/// Central's registry is read again on a miss at most this often, so that ids naming no edge
/// cannot turn into a stream of registry reads.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_millis(100);
/// Customers whose home this edge remembers, at most (then it forgets them all and asks again).
const MAX_REMEMBERED_HOMES: usize = 100_000;
/// A request that claims to come from an edge of the fleet and does not.
const FORGED: ApiError = ApiError::Forbidden("a forwarded request without the fleet secret");
/// Longest wait for the owner's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Another edge of the fleet, as central's registry has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub edge_id: String,
    pub url: String,
}

/// When central's registry was read, and whether it answered.
struct RegistryRead {
    at: Instant,
    ok: bool,
}

/// This edge's place in the fleet.
pub struct Fleet {
    edge_id: String,
    tag: String,
    secret: Option<String>,
    client: HttpClient,
    /// Peers by tag.
    peers: RwLock<HashMap<String, Peer>>,
    /// Central's registry's last read; held while it is read.
    refreshed: tokio::sync::Mutex<Option<RegistryRead>>,
    /// Customers' home edges, as central recorded them.
    homes: Mutex<HashMap<String, String>>,
    /// Carts this edge handed off: the edge that keeps each, or `None` while on the way.
    moved: RwLock<HashMap<String, Option<String>>>,
    /// Carts other edges made that this edge keeps (taken in hand-offs).
    adopted: RwLock<HashSet<String>>,
    /// Where handed-off carts of other edges are, as central recorded it.
    owners: Mutex<HashMap<String, String>>,
}

/// Where a request for a cart goes, as far as this edge knows without asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This edge keeps the cart.
    Here,
    /// This edge is handing the cart off: answer `503` until it is done.
    InTransit,
    /// The edge that keeps the cart now (it was handed off).
    Moved(String),
    /// The cart's id names the edge that keeps it, unless central says otherwise.
    Tag(String),
}

/// The tag that names an edge inside the ids of the carts it creates: 8 hex digits of its id's
/// SHA-256.
pub fn edge_tag(edge_id: &str) -> String {
    hex::encode(&Sha256::digest(edge_id.as_bytes())[..4])
}

/// The tag of the edge that created a cart, when `cart_id` has a cart id's shape.
pub fn owner_tag(cart_id: &str) -> Option<&str> {
    ids::is_id(cart_id, "c").then(|| &cart_id[2..10])
}

impl Fleet {
    pub fn new(edge_id: &str, secret: Option<String>) -> Self {
        Self {
            edge_id: edge_id.to_owned(),
            tag: edge_tag(edge_id),
            secret,
            client: HttpClient::new(FORWARD_TIMEOUT),
            peers: RwLock::new(HashMap::new()),
            refreshed: tokio::sync::Mutex::new(None),
            homes: Mutex::new(HashMap::new()),
            moved: RwLock::new(HashMap::new()),
            adopted: RwLock::new(HashSet::new()),
            owners: Mutex::new(HashMap::new()),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Where a request for `cart_id` goes. Without a fleet secret every cart is answered here.
    pub fn route(&self, cart_id: &str) -> Route {
        if let Some(to) = read(&self.moved).get(cart_id) {
            return to.clone().map_or(Route::InTransit, Route::Moved);
        }
        if self.owns(cart_id) || read(&self.adopted).contains(cart_id) {
            return Route::Here;
        }
        if let Some(owner) = lock(&self.owners).get(cart_id) {
            return Route::Moved(owner.clone());
        }
        match owner_tag(cart_id) {
            Some(tag) => Route::Tag(tag.to_owned()),
            None => Route::Here,
        }
    }

    /// Carts leaving (`None`) or gone (`Some(edge)`) from this edge.
    pub fn note_moved(&self, carts: impl IntoIterator<Item = (String, Option<String>)>) {
        let mut moved = write(&self.moved);
        for (cart_id, to) in carts {
            write(&self.adopted).remove(&cart_id);
            moved.insert(cart_id, to);
        }
    }

    /// Carts that stay after all (a refused hand-off).
    pub fn note_kept(&self, carts: impl IntoIterator<Item = String>) {
        let mut moved = write(&self.moved);
        let mut adopted = write(&self.adopted);
        for cart_id in carts {
            moved.remove(&cart_id);
            if !self.owns(&cart_id) {
                adopted.insert(cart_id);
            }
        }
    }

    /// Carts another edge handed to this one.
    pub fn note_adopted(&self, carts: impl IntoIterator<Item = String>) {
        let mut moved = write(&self.moved);
        let mut adopted = write(&self.adopted);
        for cart_id in carts {
            moved.remove(&cart_id);
            adopted.insert(cart_id);
        }
    }

    /// Asks central which edge keeps a cart that was handed off, and remembers it.
    async fn ask_owner(&self, edge: &Edge, cart_id: &str) -> Option<String> {
        match edge.central.cart_owner(cart_id).await {
            Ok(Some(owner)) => {
                let mut owners = lock(&self.owners);
                if owners.len() >= MAX_REMEMBERED_HOMES {
                    owners.clear();
                }
                owners.insert(cart_id.to_owned(), owner.clone());
                Some(owner)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("asking central where cart {cart_id} is kept: {e}");
                None
            }
        }
    }

    /// The peer that is `edge_id`, if central's registry has it.
    pub(crate) async fn peer_named(
        &self,
        edge: &Edge,
        edge_id: &str,
    ) -> Result<Option<Peer>, ApiError> {
        Ok(self
            .peer(edge, &edge_tag(edge_id), false)
            .await?
            .filter(|p| p.edge_id == edge_id))
    }

    /// Other edges of the fleet in the registry, as last read (not this process).
    pub fn others(&self, edge: &Edge) -> Vec<Peer> {
        read(&self.peers)
            .values()
            .filter(|p| p.url != edge.url && p.edge_id != self.edge_id)
            .cloned()
            .collect()
    }

    /// Reads central's registry again.
    pub async fn refresh(&self, edge: &Edge) -> Result<(), ApiError> {
        self.peer(edge, "", true).await.map(|_| ())
    }

    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// A new cart id of this edge's.
    pub fn new_cart_id(&self) -> String {
        let random = ids::new_id("c");
        format!("c_{}{}", self.tag, &random[10..])
    }

    /// Whether this edge created the cart.
    pub fn owns(&self, cart_id: &str) -> bool {
        owner_tag(cart_id) == Some(self.tag.as_str())
    }

    /// Replaces the registry's copy. Refuses a registry in which another edge's id has this
    /// edge's tag: the fleet could not tell their carts apart.
    pub fn learn(&self, registry: Vec<Peer>) -> Result<(), String> {
        let mut peers: HashMap<String, Peer> = HashMap::new();
        for peer in registry {
            let tag = edge_tag(&peer.edge_id);
            if tag == self.tag && peer.edge_id != self.edge_id {
                return Err(format!(
                    "edge ids {} and {} share the cart id tag {tag}: rename one",
                    self.edge_id, peer.edge_id
                ));
            }
            if let Some(other) = peers.get(&tag) {
                tracing::error!(
                    "edge ids {} and {} share the cart id tag {tag}: the carts of {} are not \
                     forwarded; rename one",
                    other.edge_id,
                    peer.edge_id,
                    peer.edge_id
                );
                continue;
            }
            peers.insert(tag, peer);
        }
        *write(&self.peers) = peers;
        Ok(())
    }

    /// The peer with this tag: from the cache unless `stale`, else from central's registry.
    /// `Ok(None)`: central's registry, read since this call began, knows no such edge. Reads of
    /// the registry happen one at a time, at least [`REFRESH_AT_MOST_EVERY`] apart.
    async fn peer(&self, edge: &Edge, tag: &str, stale: bool) -> Result<Option<Peer>, ApiError> {
        if let Some(p) = self.cached(tag).filter(|_| !stale) {
            return Ok(Some(p));
        }
        let began = Instant::now();
        let mut last = self.refreshed.lock().await;
        // A read that began after this call did answers for it, failed or not.
        let fresh = last
            .as_ref()
            .filter(|read| read.at >= began)
            .map(|read| read.ok);
        let ok = match fresh {
            Some(ok) => ok,
            None => {
                // Wait for the next read due: ids that name no edge cost central at most a read
                // per interval, and their senders the wait.
                if let Some(read) = &*last {
                    tokio::time::sleep_until((read.at + REFRESH_AT_MOST_EVERY).into()).await;
                }
                let at = Instant::now();
                let registry = edge.central.registry().await;
                *last = Some(RegistryRead {
                    at,
                    ok: registry.is_ok(),
                });
                match registry {
                    Ok(registry) => {
                        self.learn(
                            registry
                                .into_iter()
                                .map(|(edge_id, url)| Peer { edge_id, url })
                                .collect(),
                        )
                        .unwrap_or_else(|clash| tracing::error!("{clash}"));
                        true
                    }
                    Err(e) => {
                        tracing::warn!("reading the fleet's registry: {e}");
                        false
                    }
                }
            }
        };
        match self.cached(tag) {
            Some(p) => Ok(Some(p)),
            None if ok => Ok(None),
            None => Err(ApiError::Unavailable(
                "central does not answer for the fleet's registry".into(),
            )),
        }
    }

    fn cached(&self, tag: &str) -> Option<Peer> {
        read(&self.peers).get(tag).cloned()
    }

    /// Whether a request claiming to come from a peer carries the fleet secret.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers.get(FLEET_SECRET).map(HeaderValue::as_bytes);
        match (&self.secret, given) {
            (Some(secret), Some(given)) => ids::same_secret(given, secret),
            _ => false,
        }
    }

    /// Whether a request comes from a peer edge, which forwarded it; one that claims to
    /// without the fleet secret is refused.
    pub fn from_peer(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        if !headers.contains_key(FORWARDED_BY) {
            return Ok(false);
        }
        if self.admits(headers) {
            Ok(true)
        } else {
            Err(FORGED)
        }
    }

    /// Sends the request to the owner and returns its answer, and whether it was a `503` other
    /// than `overloaded` (the edge there may no longer be the owner).
    async fn forward(
        &self,
        edge: &Edge,
        peer: &Peer,
        parts: &Parts,
        body: Bytes,
    ) -> Result<(Response, bool), ApiError> {
        let secret = self.secret.as_deref().unwrap_or_default();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", peer.url.trim_end_matches('/'));
        let mut headers: Vec<(&str, &str)> = REQUEST_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(*name)?.to_str().ok()?;
                Some((*name, value))
            })
            .collect();
        headers.push((FORWARDED_BY, &self.edge_id));
        headers.push((FLEET_SECRET, secret));
        let started = Instant::now();
        let answer = self
            .client
            .send(parts.method.clone(), &url, &headers, body)
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "the cart's edge {} does not answer: {e:#}",
                    peer.edge_id
                ))
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

    /// Forwards to `peer`, the edge with `tag`; when it does not answer, or answers `503`,
    /// asks central whether the cart was handed off, or the edge moved (a restart on another
    /// address, or its id taken over by another process), and tries once more there.
    async fn forward_to(
        &self,
        edge: &Edge,
        tag: &str,
        peer: Peer,
        cart_id: Option<&str>,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        // An owner that is overloaded is asked again by the storefront, not looked for.
        let failed = match self.forward(edge, &peer, parts, body.clone()).await {
            Ok((answer, false)) => return Ok(answer),
            Ok((answer, true)) => Ok(answer),
            Err(e) => Err(e),
        };
        let handed = match cart_id {
            Some(cart_id) => self.ask_owner(edge, cart_id).await,
            None => None,
        };
        let moved = match handed.filter(|owner| *owner != peer.edge_id) {
            Some(owner) if owner == self.edge_id => None,
            Some(owner) => self.peer_named(edge, &owner).await.ok().flatten(),
            None => self.peer(edge, tag, true).await.ok().flatten(),
        }
        .filter(|p| p.url != peer.url && p.url != edge.url);
        let answer = match moved {
            Some(moved) => self
                .forward(edge, &moved, parts, body)
                .await
                .map(|(answer, _)| answer),
            None => failed,
        };
        if answer.is_err() {
            edge.metrics.forward_failures.inc();
        }
        answer
    }
}

impl Fleet {
    /// Where a new cart of this customer's is made: `None` here, or the response of the
    /// customer's home edge, to which the request went. Every cart of a customer is kept by
    /// their home edge (recorded at central by the first edge their cart was made on), so the
    /// per-customer limit, counted by the rules over the customer's carts and orders on one
    /// edge, holds across the fleet. An edge that is not ready (see [`Edge::ready`]) makes no
    /// carts: a new customer's home is a peer, to which the create goes, once. Not in a fleet
    /// (no secret): here, as a lone edge.
    pub(crate) async fn place_cart(
        &self,
        edge: &Edge,
        customer_id: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Option<Response>, ApiError> {
        if self.secret.is_none() {
            return Ok(None);
        }
        let forwarded = self.from_peer(&parts.headers)?;
        if let Err(why) = edge.ready() {
            if forwarded {
                // A forwarded request is never forwarded again.
                return Err(ApiError::Unavailable(why));
            }
            // The customer's home if this edge knows it, else another edge, which becomes a new
            // customer's home when it makes the cart (nothing is recorded here: the edge chosen
            // might be down).
            let known = self.homes().get(customer_id).cloned();
            let peer = match known {
                Some(home) => self
                    .peer(edge, &edge_tag(&home), false)
                    .await?
                    .filter(|p| p.edge_id == home && p.url != edge.url)
                    .ok_or(ApiError::Unavailable(why))?,
                None => self.other_peer(edge).await?,
            };
            let tag = edge_tag(&peer.edge_id);
            let answer = self.forward_to(edge, &tag, peer, None, parts, body).await;
            self.forget_home_unless_served(customer_id, &answer);
            return answer.map(Some);
        }
        let mut home = self.home_of(edge, customer_id).await?;
        let mut peer = self.home_peer(edge, &home).await?;
        if peer.is_none() && home != self.edge_id {
            // The home remembered here has left the registry (it drained, and its customers'
            // homes moved or were forgotten): central knows where the carts are kept now.
            self.homes().remove(customer_id);
            home = self.home_of(edge, customer_id).await?;
            peer = self.home_peer(edge, &home).await?;
        }
        if home == self.edge_id {
            return Ok(None);
        }
        if forwarded {
            return Err(ApiError::Unavailable(format!(
                "the customer's carts are kept by {home}, not {}",
                self.edge_id
            )));
        }
        let peer = peer.ok_or_else(|| {
            ApiError::Unavailable(format!("the customer's edge {home} is not in service"))
        })?;
        let tag = edge_tag(&home);
        let answer = self.forward_to(edge, &tag, peer, None, parts, body).await;
        self.forget_home_unless_served(customer_id, &answer);
        answer.map(Some)
    }

    /// The peer that is a customer's home, if it is another process in central's registry.
    async fn home_peer(&self, edge: &Edge, home: &str) -> Result<Option<Peer>, ApiError> {
        if home == self.edge_id {
            return Ok(None);
        }
        Ok(self
            .peer(edge, &edge_tag(home), false)
            .await?
            .filter(|p| p.edge_id == home && p.url != edge.url))
    }

    /// A home that did not make the cart may have handed its carts off: central is asked
    /// again next time.
    fn forget_home_unless_served(&self, customer_id: &str, answer: &Result<Response, ApiError>) {
        let served = answer
            .as_ref()
            .is_ok_and(|r| r.status() != StatusCode::SERVICE_UNAVAILABLE);
        if !served {
            self.homes().remove(customer_id);
        }
    }

    /// Another process of the fleet than this one (chosen at random), from central's registry.
    async fn other_peer(&self, edge: &Edge) -> Result<Peer, ApiError> {
        let others = || -> Vec<Peer> {
            read(&self.peers)
                .values()
                .filter(|p| p.url != edge.url)
                .cloned()
                .collect()
        };
        let mut found = others();
        if found.is_empty() {
            // None known: read the registry again (no tag is empty: this only refreshes).
            self.peer(edge, "", true).await?;
            found = others();
        }
        found
            .choose(&mut rand::rng())
            .cloned()
            .ok_or_else(|| ApiError::Unavailable("no other edge of the fleet is in service".into()))
    }

    /// A customer's home edge: remembered, or from central (which records this edge when it
    /// knows none). Central down and the customer unknown here: `503`, so that no customer
    /// gets a second home, and a second limit, while it is away.
    async fn home_of(&self, edge: &Edge, customer_id: &str) -> Result<String, ApiError> {
        if let Some(home) = self.homes().get(customer_id) {
            return Ok(home.clone());
        }
        let home = edge
            .central
            .home_of(customer_id, &self.edge_id)
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "central does not answer where this customer's carts are kept: {e}"
                ))
            })?;
        let mut homes = self.homes();
        if homes.len() >= MAX_REMEMBERED_HOMES {
            homes.clear();
        }
        homes.insert(customer_id.to_owned(), home.clone());
        Ok(home)
    }

    fn homes(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        lock(&self.homes)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
    if forwarded && !fleet.admits(req.headers()) {
        return FORGED.into_response();
    }
    if fleet.secret.is_none() {
        return next.run(req).await;
    }
    match fleet.route(&cart_id) {
        Route::Here => serve_here(&edge, &cart_id, forwarded, req, next).await,
        Route::InTransit => in_transit(),
        // One hop only: the forwarding edge asks central where the cart went.
        Route::Moved(_) if forwarded => {
            ApiError::Unavailable(format!("the cart was handed off by {}", fleet.edge_id))
                .into_response()
        }
        Route::Moved(owner) => {
            let mut found = fleet.peer_named(&edge, &owner).await;
            if matches!(found, Ok(None)) {
                // That edge left the registry: the cart may have moved on with its carts.
                found = match fleet.ask_owner(&edge, &cart_id).await {
                    Some(now) if now != owner => fleet.peer_named(&edge, &now).await,
                    _ => Ok(None),
                };
            }
            match found {
                Ok(Some(peer)) if peer.url != edge.url => forward(&edge, peer, &cart_id, req).await,
                Ok(_) => {
                    ApiError::Unavailable(format!("the cart's edge {owner} is not in service"))
                        .into_response()
                }
                Err(e) => e.into_response(),
            }
        }
        // The forwarding edge took this edge for the owner: its registry is out of date. One
        // hop only, so the storefront retries.
        Route::Tag(_) if forwarded => ApiError::Unavailable(format!(
            "the cart belongs to another edge than {}",
            fleet.edge_id
        ))
        .into_response(),
        Route::Tag(tag) => {
            let peer = match fleet.peer(&edge, &tag, false).await {
                Ok(Some(peer)) if peer.url != edge.url => peer,
                // Central still names this process for the tag: its own answer.
                Ok(Some(_)) => return next.run(req).await,
                // No edge in service has this tag: the cart was handed off by an edge that
                // drained, or it names no cart (this edge's 404 is the right answer).
                Ok(None) => {
                    let owner = fleet.ask_owner(&edge, &cart_id).await;
                    match owner {
                        Some(owner) if owner != fleet.edge_id => {
                            match fleet.peer_named(&edge, &owner).await {
                                Ok(Some(peer)) => peer,
                                Ok(None) => {
                                    return ApiError::Unavailable(format!(
                                        "the cart's edge {owner} is not in service"
                                    ))
                                    .into_response();
                                }
                                Err(e) => return e.into_response(),
                            }
                        }
                        _ => return next.run(req).await,
                    }
                }
                Err(e) => return e.into_response(),
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
    let superseded =
        fleet.owns(cart_id) && !forwarded && matches!(edge.standing(), Standing::Refused(_));
    if superseded {
        match fleet.peer(edge, &fleet.tag, true).await {
            Ok(Some(peer)) if peer.url != edge.url => {
                return forward(edge, peer, cart_id, req).await;
            }
            // Central still names this process: its own (refusing) answer.
            Ok(_) => {}
            Err(e) => return e.into_response(),
        }
    }
    let mut response = next.run(req).await;
    if response.status() == StatusCode::NOT_FOUND && left_meanwhile(edge, cart_id).await {
        return in_transit();
    }
    if let Ok(id) = HeaderValue::from_str(&fleet.edge_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CART_EDGE), id);
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
    edge.read(move |c| crate::handoff::is_moved(c, &id))
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
    let answer = match read_limited(body, crate::api::MAX_BODY, edge.config.http.body_timeout).await
    {
        Ok(body) => {
            edge.fleet
                .forward_to(edge, &tag, peer, Some(cart_id), &parts, body)
                .await
        }
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cart_id_names_the_edge_that_made_it() {
        let fleet = Fleet::new("edge-1", None);
        let id = fleet.new_cart_id();
        assert!(ids::is_id(&id, "c"), "{id}");
        assert!(fleet.owns(&id));
        assert!(!Fleet::new("edge-2", None).owns(&id));
        assert_eq!(owner_tag(&id), Some(edge_tag("edge-1").as_str()));
        assert_eq!(owner_tag("c_../../etc"), None);
        assert_ne!(fleet.new_cart_id(), id);
    }

    #[test]
    fn a_registry_where_another_edge_shares_this_edges_tag_is_refused() {
        let fleet = Fleet::new("edge-1", None);
        let peer = |edge_id: &str| Peer {
            edge_id: edge_id.into(),
            url: format!("http://{edge_id}"),
        };
        assert_eq!(fleet.learn(vec![peer("edge-1"), peer("edge-2")]), Ok(()));
        assert_eq!(fleet.cached(&edge_tag("edge-2")), Some(peer("edge-2")));
        // As if edge-1 and edge-2 had ids whose digests begin alike.
        let mut unlucky = Fleet::new("edge-1", None);
        unlucky.tag = edge_tag("edge-2");
        let refused = unlucky.learn(vec![peer("edge-1"), peer("edge-2")]);
        assert!(refused.is_err_and(|e| e.contains("rename one")));
    }
}
