//! Who the customer of a new cart is, and how often an address may make carts.
//!
//! Without a customer key (a lone edge, the demo) a cart's `customer_id` is taken on trust.
//! With one (`serve --customer-key`), the customer comes only from a token the storefront
//! signed: a JWT, EdDSA (ed25519), whose `sub` names the customer and whose `exp` it must not
//! have passed. Ed25519 rather than HMAC: an edge holds only the public key, so an edge's disk
//! in the wrong hands cannot mint customers, and one key pair serves any number of edges.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use hyper::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use cart_central::sale::is_plain_id;

/// Why a new cart's customer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    /// The body does not say who the customer is in a form this edge reads.
    #[error("{0}")]
    BadRequest(String),
    /// The customer token is missing, unsigned, expired or malformed.
    #[error("{0}")]
    Token(String),
    /// Too many new carts from one address.
    #[error("too many new carts from this address; try again later")]
    RateLimited { retry_after_secs: u64 },
}

/// Checks the storefront's customer tokens.
pub struct CustomerKey {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(EdDSA)")
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl CustomerKey {
    /// The storefront's ed25519 public key, PEM (SubjectPublicKeyInfo), as `openssl pkey -pubout`
    /// writes it.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ed_pem(pem)
            .map_err(|e| anyhow::anyhow!("not an ed25519 public key in PEM: {e}"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token not valid yet is not valid.
        validation.validate_nbf = true;
        // A storefront's and an edge's clocks may differ by a few seconds, not minutes.
        validation.leeway = 5;
        Ok(Self { key, validation })
    }

    /// The customer a token names, if the storefront signed it and it has not expired.
    fn customer(&self, token: &str) -> Result<String, CustomerError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| CustomerError::Token(refusal(e.kind())))?
            .claims;
        if !is_plain_id(&claims.sub) {
            return Err(CustomerError::Token(
                "customer_token's sub must be 1 to 64 of A-Z a-z 0-9 _ -".into(),
            ));
        }
        Ok(claims.sub)
    }
}

/// Why a customer token is refused, in the storefront's words rather than the JWT library's.
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "customer_token has expired (its exp is past)".to_owned(),
        K::ImmatureSignature => "customer_token is not valid yet (its nbf is ahead)".to_owned(),
        K::InvalidSignature => "customer_token is not signed by the storefront's key".to_owned(),
        K::InvalidAlgorithm | K::InvalidAlgorithmName => {
            "customer_token must be signed with EdDSA (ed25519)".to_owned()
        }
        K::MissingRequiredClaim(claim) => format!("customer_token has no {claim} claim"),
        K::InvalidAudience => "customer_token has an aud claim: none is accepted".to_owned(),
        _ => "customer_token is not a JWT this edge can read".to_owned(),
    }
}

/// The customer of a new cart, from the body of `POST /v1/carts`: `customer_token` with a key,
/// `customer_id` without one.
pub fn of_new_cart(key: Option<&CustomerKey>, body: &Value) -> Result<String, CustomerError> {
    let token = match body.get("customer_token") {
        None => None,
        Some(Value::String(token)) => Some(token),
        Some(_) => {
            return Err(CustomerError::BadRequest(
                "customer_token must be a string".into(),
            ));
        }
    };
    match (key, token) {
        (Some(key), Some(token)) => key.customer(token),
        (Some(_), None) => Err(CustomerError::Token(
            "this fleet takes the customer only from a signed customer_token".into(),
        )),
        (None, _) => match body.get("customer_id") {
            Some(Value::String(s)) if is_plain_id(s) => Ok(s.clone()),
            Some(_) => Err(CustomerError::BadRequest(
                "customer_id must be 1 to 64 of A-Z a-z 0-9 _ -".into(),
            )),
            None if token.is_some() => Err(CustomerError::Token(
                "this edge has no customer key to check customer_token with: send customer_id"
                    .into(),
            )),
            None => Err(CustomerError::BadRequest("customer_id is required".into())),
        },
    }
}

/// How many carts one client address may make: `per_second` on average, `burst` at once.
pub struct CreateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl CreateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// Counts a cart made for `client`: `429` with the seconds until the next is allowed when
    /// the address is over its rate. An IPv6 client is counted by its /64 (one subscriber's
    /// network, whose addresses cost it nothing).
    pub fn check(&self, client: IpAddr) -> Result<(), CustomerError> {
        if self.limiter.len() > MAX_TRACKED {
            // Addresses that have not made a cart lately hold nothing worth keeping.
            self.limiter.retain_recent();
        }
        let key = match client {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
            v4 => v4,
        };
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            CustomerError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }
}

/// The address a request came from: the peer, or, when the peer is a trusted proxy, the
/// address it says it was called from (the last in `X-Forwarded-For`, which the proxy added).
/// IPv4 addresses mapped into IPv6 (a dual-stack listener's) count as the IPv4 address.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted_proxies.iter().any(|p| p.to_canonical() == peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| parse_address(a.trim()))
        .map_or(peer, |a| a.to_canonical())
}

/// An address as proxies write it: `10.0.0.1`, `2001:db8::1`, or with a port (`10.0.0.1:5000`,
/// `[2001:db8::1]:5000`).
fn parse_address(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Addresses tracked before the idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client_however_it_writes_addresses() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("address");
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().expect("address");
        let client: IpAddr = "192.0.2.7".parse().expect("address");
        let trusted = [proxy];
        for header in [
            "198.51.100.1, 192.0.2.7",
            "192.0.2.7:5123",
            "::ffff:192.0.2.7",
        ] {
            assert_eq!(
                client_address(proxy, &forwarded(header), &trusted),
                client,
                "{header}"
            );
            assert_eq!(
                client_address(mapped, &forwarded(header), &trusted),
                client,
                "{header}"
            );
        }
        let v6: IpAddr = "2001:db8::1".parse().expect("address");
        assert_eq!(
            client_address(proxy, &forwarded("[2001:db8::1]:443"), &trusted),
            v6
        );
        // Anyone else's header is ignored; an unreadable one leaves the proxy itself.
        assert_eq!(
            client_address(client, &forwarded("203.0.113.9"), &trusted),
            client
        );
        assert_eq!(
            client_address(proxy, &forwarded("nonsense"), &trusted),
            proxy
        );
    }

    #[test]
    fn an_ipv6_network_gets_one_allowance() {
        let limit = CreateLimit::new(1, 2).expect("a limit");
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
            assert!(
                limit.check(host.parse().expect("address")).is_ok(),
                "{host}"
            );
        }
        assert!(
            limit
                .check("2001:db8:1:2::3".parse().expect("address"))
                .is_err()
        );
        assert!(
            limit
                .check("2001:db8:1:3::1".parse().expect("address"))
                .is_ok()
        );
    }
}
