//! The fleet's directory, as this edge knows it: a cart's id names the edge that created it,
//! carts handed off are found where central recorded them, and every customer has a home edge.
//!
//! Edges find each other in central's registry (the URL each registered with `--public-url`),
//! cached here and read again on a miss. Without a fleet secret an edge neither forwards nor
//! accepts forwarded requests. (The forwarding itself is HTTP's: `http::forward`.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use cart_central::Central;
use rand::seq::IndexedRandom as _;
use sha2::{Digest, Sha256};

use crate::http_client::HttpClient;
use crate::ids;
use crate::locks;
use crate::tls::EdgeTls;
use crate::wire::{FLEET_SECRET, FORWARDED_BY};

/// Central's registry is read again on a miss at most this often, so that ids naming no edge
/// cannot turn into a stream of registry reads.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_millis(100);
/// Customers whose home this edge remembers, at most (then it forgets them all and asks again).
const MAX_REMEMBERED_HOMES: usize = 100_000;
/// Longest wait for a peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Another edge of the fleet, as central's registry has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub edge_id: String,
    pub url: String,
}

/// Why the directory could not say where to go.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("central does not answer for the fleet's registry")]
    Registry,
    #[error("central does not answer where this customer's carts are kept: {0}")]
    Home(String),
    #[error("no other edge of the fleet is in service")]
    NoPeer,
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
    /// Where this process serves (a peer registered at this URL is this process).
    url: String,
    secret: Option<String>,
    /// Whether a peer request needs a fleet certificate as well as the secret.
    needs_certificate: bool,
    /// The key cart tokens are signed with, from the fleet secret: any edge checks a cart's
    /// token before it forwards a request or asks central where the cart is.
    token_key: Option<[u8; 32]>,
    central: Arc<Central>,
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
    pub fn new(
        edge_id: &str,
        url: &str,
        secret: Option<String>,
        tls: Option<&EdgeTls>,
        central: Arc<Central>,
    ) -> Self {
        Self {
            edge_id: edge_id.to_owned(),
            tag: edge_tag(edge_id),
            url: url.to_owned(),
            token_key: secret
                .as_deref()
                .map(|s| mac(s.as_bytes(), &[b"cart-token-v1"])),
            secret,
            needs_certificate: tls.is_some_and(EdgeTls::checks_peers),
            central,
            client: match tls {
                Some(tls) => HttpClient::with_tls(PEER_TIMEOUT, tls.peers()),
                None => HttpClient::new(PEER_TIMEOUT),
            },
            peers: RwLock::new(HashMap::new()),
            refreshed: tokio::sync::Mutex::new(None),
            homes: Mutex::new(HashMap::new()),
            moved: RwLock::new(HashMap::new()),
            adopted: RwLock::new(HashSet::new()),
            owners: Mutex::new(HashMap::new()),
        }
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether `peer` is this process (its id may be registered under this process's URL).
    pub fn is_me(&self, peer: &Peer) -> bool {
        peer.url == self.url
    }

    /// Where a request for `cart_id` goes. Without a fleet secret every cart is answered here.
    pub fn route(&self, cart_id: &str) -> Route {
        if let Some(to) = locks::read(&self.moved).get(cart_id) {
            return to.clone().map_or(Route::InTransit, Route::Moved);
        }
        if self.owns(cart_id) || locks::read(&self.adopted).contains(cart_id) {
            return Route::Here;
        }
        if let Some(owner) = locks::lock(&self.owners).get(cart_id) {
            return Route::Moved(owner.clone());
        }
        match owner_tag(cart_id) {
            Some(tag) => Route::Tag(tag.to_owned()),
            None => Route::Here,
        }
    }

    /// The edge that keeps `cart_id`, as far as this edge knows without asking anyone.
    pub fn known_owner(&self, cart_id: &str) -> Option<String> {
        match self.route(cart_id) {
            Route::Here | Route::InTransit => Some(self.edge_id.clone()),
            Route::Moved(owner) => Some(owner),
            Route::Tag(tag) => self.cached(&tag).map(|p| p.edge_id),
        }
    }

    /// Carts leaving (`None`) or gone (`Some(edge)`) from this edge.
    pub fn note_moved(&self, carts: impl IntoIterator<Item = (String, Option<String>)>) {
        let mut moved = locks::write(&self.moved);
        for (cart_id, to) in carts {
            locks::write(&self.adopted).remove(&cart_id);
            moved.insert(cart_id, to);
        }
    }

    /// Carts that stay after all (a refused hand-off).
    pub fn note_kept(&self, carts: impl IntoIterator<Item = String>) {
        let mut moved = locks::write(&self.moved);
        let mut adopted = locks::write(&self.adopted);
        for cart_id in carts {
            moved.remove(&cart_id);
            if !self.owns(&cart_id) {
                adopted.insert(cart_id);
            }
        }
    }

    /// Carts another edge handed to this one.
    pub fn note_adopted(&self, carts: impl IntoIterator<Item = String>) {
        let mut moved = locks::write(&self.moved);
        let mut adopted = locks::write(&self.adopted);
        for cart_id in carts {
            moved.remove(&cart_id);
            adopted.insert(cart_id);
        }
    }

    /// Asks central which edge keeps a cart that was handed off, and remembers it. ("Never handed
    /// off" is not remembered: a hand-off recorded a moment later would make this edge answer
    /// for a cart it does not keep. A request gets this far only with a token that fits its
    /// cart, see [`Self::token_fits`], so made-up carts cost central nothing.)
    pub async fn ask_owner(&self, cart_id: &str) -> Option<String> {
        match self.central.cart_owner(cart_id).await {
            Ok(Some(owner)) => {
                let mut owners = locks::lock(&self.owners);
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
    pub async fn peer_named(&self, edge_id: &str) -> Result<Option<Peer>, FleetError> {
        Ok(self
            .peer(&edge_tag(edge_id), false)
            .await?
            .filter(|p| p.edge_id == edge_id))
    }

    /// Other edges of the fleet in the registry, as last read (not this process).
    pub fn others(&self) -> Vec<Peer> {
        locks::read(&self.peers)
            .values()
            .filter(|p| !self.is_me(p) && p.edge_id != self.edge_id)
            .cloned()
            .collect()
    }

    /// Reads central's registry again.
    pub async fn refresh(&self) -> Result<(), FleetError> {
        self.peer("", true).await.map(|_| ())
    }

    /// Whether this edge is part of a fleet: without a secret it neither forwards nor accepts
    /// forwarded requests.
    pub fn in_fleet(&self) -> bool {
        self.secret.is_some()
    }

    /// The headers that say a request comes from this edge of the fleet.
    pub fn peer_headers(&self) -> [(&'static str, &str); 2] {
        [
            (FORWARDED_BY, self.edge_id.as_str()),
            (FLEET_SECRET, self.secret.as_deref().unwrap_or_default()),
        ]
    }

    /// Whether a request is an edge's of this fleet: `certified`, its connection presented a
    /// certificate chained to the fleet CA (looked at first, when the fleet has a CA, so the
    /// secret of a caller without one is never compared), and `given`, its fleet secret header,
    /// is this fleet's secret.
    pub fn admits(&self, certified: bool, given: Option<&[u8]>) -> bool {
        if self.needs_certificate && !certified {
            return false;
        }
        match (&self.secret, given) {
            (Some(secret), Some(given)) => ids::same_secret(given, secret),
            _ => false,
        }
    }

    /// The client peer requests go through.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// A new cart's token: 256 bits, the second half a MAC of the cart id and the first under
    /// the fleet's token key (in a fleet), so that any edge can tell a token that cannot be
    /// right at once; random otherwise.
    pub fn new_token(&self, cart_id: &str) -> String {
        let token = ids::new_token();
        match &self.token_key {
            Some(key) => {
                let nonce = &token[..32];
                let tag = mac(key, &[cart_id.as_bytes(), nonce.as_bytes()]);
                format!("{nonce}{}", hex::encode(&tag[..16]))
            }
            None => token,
        }
    }

    /// Whether `token` could be `cart_id`'s (the owner checks it for good); always, out of a
    /// fleet.
    pub fn token_fits(&self, cart_id: &str, token: &str) -> bool {
        let Some(key) = &self.token_key else {
            return true;
        };
        let (Some(nonce), Some(tag)) = (token.get(..32), token.get(32..)) else {
            return false;
        };
        let expected = hex::encode(&mac(key, &[cart_id.as_bytes(), nonce.as_bytes()])[..16]);
        token.len() == 64 && ids::same_secret(tag.as_bytes(), &expected)
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

    /// Replaces the registry's copy with central's `(edge_id, url)` rows. Refuses a registry in
    /// which another edge's id has this edge's tag: the fleet could not tell their carts apart.
    pub fn learn(&self, registry: Vec<(String, String)>) -> Result<(), String> {
        let mut peers: HashMap<String, Peer> = HashMap::new();
        for (edge_id, url) in registry {
            let peer = Peer { edge_id, url };
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
        *locks::write(&self.peers) = peers;
        Ok(())
    }

    /// The peer with this tag: from the cache unless `stale`, else from central's registry.
    /// `Ok(None)`: central's registry, read since this call began, knows no such edge. Reads of
    /// the registry happen one at a time, at least [`REFRESH_AT_MOST_EVERY`] apart.
    pub async fn peer(&self, tag: &str, stale: bool) -> Result<Option<Peer>, FleetError> {
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
                let registry = self.central.registry().await;
                *last = Some(RegistryRead {
                    at,
                    ok: registry.is_ok(),
                });
                match registry {
                    Ok(registry) => {
                        self.learn(registry)
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
            None => Err(FleetError::Registry),
        }
    }

    fn cached(&self, tag: &str) -> Option<Peer> {
        locks::read(&self.peers).get(tag).cloned()
    }

    /// The customer's home as remembered here, if it is.
    pub fn known_home(&self, customer_id: &str) -> Option<String> {
        self.homes().get(customer_id).cloned()
    }

    /// Forgets a customer's home: central is asked again next time.
    pub fn forget_home(&self, customer_id: &str) {
        self.homes().remove(customer_id);
    }

    /// The peer that is a customer's home, if it is another process in central's registry.
    pub async fn home_peer(&self, home: &str) -> Result<Option<Peer>, FleetError> {
        if home == self.edge_id {
            return Ok(None);
        }
        Ok(self
            .peer(&edge_tag(home), false)
            .await?
            .filter(|p| p.edge_id == home && !self.is_me(p)))
    }

    /// Another process of the fleet than this one (chosen at random), from central's registry.
    pub async fn other_peer(&self) -> Result<Peer, FleetError> {
        let others = || -> Vec<Peer> {
            locks::read(&self.peers)
                .values()
                .filter(|p| !self.is_me(p))
                .cloned()
                .collect()
        };
        let mut found = others();
        if found.is_empty() {
            // None known: read the registry again (no tag is empty: this only refreshes).
            self.peer("", true).await?;
            found = others();
        }
        found
            .choose(&mut rand::rng())
            .cloned()
            .ok_or(FleetError::NoPeer)
    }

    /// A customer's home edge: remembered, or from central (which records this edge when it
    /// knows none). Central down and the customer unknown here: an error, so that no customer
    /// gets a second home, and a second limit, while it is away.
    pub async fn home_of(&self, customer_id: &str) -> Result<String, FleetError> {
        if let Some(home) = self.known_home(customer_id) {
            return Ok(home);
        }
        let home = self
            .central
            .home_of(customer_id, &self.edge_id)
            .await
            .map_err(|e| FleetError::Home(e.to_string()))?;
        let mut homes = self.homes();
        if homes.len() >= MAX_REMEMBERED_HOMES {
            homes.clear();
        }
        homes.insert(customer_id.to_owned(), home.clone());
        Ok(home)
    }

    fn homes(&self) -> MutexGuard<'_, HashMap<String, String>> {
        locks::lock(&self.homes)
    }
}

/// HMAC-SHA-256 of `parts`, in order, under `key`.
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC takes a key of any length.
    let mut m = <hmac::Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn directory(edge_id: &str) -> (tempfile::TempDir, Fleet) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("central.db").display());
        let central = Arc::new(Central::connect(&url).await.expect("central"));
        let fleet = Fleet::new(edge_id, &format!("http://{edge_id}"), None, None, central);
        (dir, fleet)
    }

    #[tokio::test]
    async fn a_cart_id_names_the_edge_that_made_it() {
        let (_one, fleet) = directory("edge-1").await;
        let (_two, other) = directory("edge-2").await;
        let id = fleet.new_cart_id();
        assert!(ids::is_id(&id, "c"), "{id}");
        assert!(fleet.owns(&id));
        assert!(!other.owns(&id));
        assert_eq!(owner_tag(&id), Some(edge_tag("edge-1").as_str()));
        assert_eq!(owner_tag("c_../../etc"), None);
        assert_ne!(fleet.new_cart_id(), id);
    }

    #[tokio::test]
    async fn in_a_fleet_any_edge_tells_a_token_that_cannot_be_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("central.db").display());
        let central = Arc::new(Central::connect(&url).await.expect("central"));
        let one = Fleet::new(
            "edge-1",
            "http://1",
            Some("s3cret".into()),
            None,
            Arc::clone(&central),
        );
        let two = Fleet::new(
            "edge-2",
            "http://2",
            Some("s3cret".into()),
            None,
            Arc::clone(&central),
        );
        let other = Fleet::new("edge-3", "http://3", Some("another".into()), None, central);
        let cart = one.new_cart_id();
        let token = one.new_token(&cart);
        assert_eq!(token.len(), 64);
        assert!(two.token_fits(&cart, &token), "any edge of the fleet");
        assert!(
            !two.token_fits(&one.new_cart_id(), &token),
            "another cart's"
        );
        assert!(!other.token_fits(&cart, &token), "another fleet's");
        assert!(!two.token_fits(&cart, &ids::new_token()), "a random one");
        assert!(!two.token_fits(&cart, "short"));
        let (_dir, lone) = directory("edge-4").await;
        assert!(
            lone.token_fits(&cart, "anything"),
            "out of a fleet, the owner checks"
        );
    }

    #[tokio::test]
    async fn a_registry_where_another_edge_shares_this_edges_tag_is_refused() {
        let (_dir, fleet) = directory("edge-1").await;
        let row = |edge_id: &str| (edge_id.to_owned(), format!("http://{edge_id}"));
        let peer = |edge_id: &str| Peer {
            edge_id: edge_id.into(),
            url: format!("http://{edge_id}"),
        };
        assert_eq!(fleet.learn(vec![row("edge-1"), row("edge-2")]), Ok(()));
        assert_eq!(fleet.cached(&edge_tag("edge-2")), Some(peer("edge-2")));
        // As if edge-1 and edge-2 had ids whose digests begin alike.
        let (_other, mut unlucky) = directory("edge-1").await;
        unlucky.tag = edge_tag("edge-2");
        let refused = unlucky.learn(vec![row("edge-1"), row("edge-2")]);
        assert!(refused.is_err_and(|e| e.contains("rename one")));
    }
}
