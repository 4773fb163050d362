//! Who a cart's customer is, and how many carts an address may make.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use hyper::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{Client, EdgeProcess, Fleet, sale};

/// A storefront's signing key, and the public half written where `serve --customer-key` reads it.
pub(crate) struct Storefront {
    key: EncodingKey,
    pub(crate) public_pem: String,
}

impl Storefront {
    pub(crate) fn new(seed: u8) -> Self {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let private = key.to_pkcs8_pem(LineEnding::LF).expect("private PEM");
        Self {
            key: EncodingKey::from_ed_pem(private.as_bytes()).expect("an ed25519 key"),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("public PEM"),
        }
    }

    /// A token for `customer`, expiring `expires_in` seconds from now (negative: expired).
    fn token(&self, customer: &str, expires_in: i64) -> String {
        self.token_from(customer, 0, expires_in)
    }

    /// A token for `customer`, valid from `valid_in` seconds from now (`nbf`; 0: no `nbf`)
    /// until `expires_in` seconds from now.
    fn token_from(&self, customer: &str, valid_in: i64, expires_in: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let exp = now.saturating_add_signed(expires_in);
        let mut claims = json!({"sub": customer, "exp": exp});
        if valid_in != 0 {
            claims["nbf"] = json!(now.saturating_add_signed(valid_in));
        }
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key).expect("signed")
    }
}

async fn create(client: &Client, body: Value) -> (StatusCode, Value) {
    client.call(Method::POST, "/v1/carts", None, body).await
}

/// With `--customer-key`, the customer comes from a token the storefront signed, and only from
/// it: no token, another key's, an expired one or an unsigned one is `401`, and nothing is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_customer_comes_only_from_a_token_the_storefront_signed() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -60)).await;
    let shop = Storefront::new(7);
    let key_file = fleet.dir.path().join("customer-key.pem");
    std::fs::write(&key_file, &shop.public_pem).expect("key file");
    let key_file = key_file.display().to_string();
    let edge =
        EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &["--customer-key", &key_file]).await;
    let client = &edge.client;

    let (status, body) = create(client, json!({"customer_id": "c-1"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("customer_token")),
        "{body}"
    );
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjLTEiLCJleHAiOjk5OTk5OTk5OTl9.";
    for (what, token, says) in [
        ("garbage", json!("not-a-jwt"), "not a JWT"),
        (
            "another key's",
            json!(Storefront::new(8).token("c-1", 60)),
            "not signed by the storefront's key",
        ),
        ("expired", json!(shop.token("c-1", -60)), "has expired"),
        (
            "not valid before tomorrow",
            json!(shop.token_from("c-1", 86_400, 172_800)),
            "not valid yet",
        ),
        ("unsigned", json!(unsigned), "not a JWT"),
        (
            "a bad customer id",
            json!(shop.token("c 1", 60)),
            "sub must be",
        ),
    ] {
        let (status, body) = create(client, json!({"customer_token": token})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], json!("unauthorized"), "{what}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
    }
    let (status, body) = create(client, json!({"customer_token": 17})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let snapshot = client.status().await;
    assert_eq!(snapshot["skus"]["BAG-1"]["held"], json!(0));

    // The token's customer is the cart's, and their limit counts across their carts.
    let mut carts = Vec::new();
    for _ in 0..2 {
        let (status, body) = create(
            client,
            json!({"customer_token": shop.token("c-1", 60), "customer_id": "c-9"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body["customer_id"],
            json!("c-1"),
            "the token names the customer"
        );
        carts.push(crate::support::CartRef::from_created(&body));
    }
    assert_eq!(client.set(&carts[0], "BAG-1", 2).await.0, StatusCode::OK);
    let (status, body) = client.set(&carts[1], "BAG-1", 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], json!("limit_exceeded"));
}

/// Cart creation is limited per client address: `429` with `Retry-After` over the rate. A
/// made-up `X-Forwarded-For` changes nothing, unless it comes from a trusted proxy, whose
/// clients are counted one by one.
#[tokio::test(flavor = "multi_thread")]
async fn cart_creation_is_limited_per_client_address() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -60)).await;
    let rate = ["--create-rate", "1", "--create-burst", "3"];
    let direct = EdgeProcess::start_with(&fleet, "edge-1", "edge-1", &rate).await;
    let mut behind = rate.to_vec();
    behind.extend(["--trusted-proxy", "127.0.0.1"]);
    let proxied = EdgeProcess::start_with(&fleet, "edge-2", "edge-2", &behind).await;

    let create_from = |client: &Client, forwarded_for: &'static str| {
        let client = client.clone();
        async move {
            client
                .send(
                    Method::POST,
                    "/v1/carts",
                    None,
                    &[("x-forwarded-for", forwarded_for)],
                    json!({"customer_id": "c-1"}).to_string(),
                )
                .await
        }
    };
    for _ in 0..3 {
        let r = create_from(&direct.client, "10.0.0.1").await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    for claimed in ["10.0.0.1", "10.0.0.2"] {
        let r = create_from(&direct.client, claimed).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{claimed}");
        let wait: u64 = r.headers["retry-after"]
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(
            r.json().expect("JSON")["error"]["code"],
            json!("rate_limited")
        );
    }
    // A second later, one more.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        create_from(&direct.client, "10.0.0.1").await.status,
        StatusCode::CREATED
    );

    // Behind a trusted proxy, each client the proxy names has its own allowance.
    for _ in 0..3 {
        let r = create_from(&proxied.client, "192.0.2.1, 10.0.0.1").await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = create_from(&proxied.client, "192.0.2.1, 10.0.0.1").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = create_from(&proxied.client, "10.0.0.1, 10.0.0.2").await;
    assert_eq!(r.status, StatusCode::CREATED, "another client of the proxy");
}
