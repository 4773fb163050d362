//! One fleet behind one address: any edge answers for any cart, as its owner would.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{CartRef, Client, EdgeProcess, Fleet, audit_passes, sale};

const IDS: [&str; 3] = ["edge-1", "edge-2", "edge-3"];
pub(crate) const SECRET: &str = "a-fleet-secret-for-the-tests";

/// `cart-host serve` with the fleet secret, and `extra`.
pub(crate) async fn start(fleet: &Fleet, edge_id: &str, extra: &[&str]) -> EdgeProcess {
    start_in(fleet, edge_id, edge_id, extra).await
}

/// [`start`] on the data folder `folder`.
async fn start_in(fleet: &Fleet, edge_id: &str, folder: &str, extra: &[&str]) -> EdgeProcess {
    start_env(fleet, edge_id, folder, extra, &[]).await
}

/// [`start_in`] with these environment variables.
pub(crate) async fn start_env(
    fleet: &Fleet,
    edge_id: &str,
    folder: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> EdgeProcess {
    let file = fleet.dir.path().join("fleet-secret");
    std::fs::write(&file, SECRET).expect("secret file");
    let file = file.display().to_string();
    let mut args = vec!["--fleet-secret-file", file.as_str()];
    args.extend_from_slice(extra);
    EdgeProcess::start_env(fleet, edge_id, folder, &args, env).await
}

/// One request of a cart's life, and what the owner answers.
struct Step<'a> {
    method: Method,
    path: &'a str,
    extra: &'a [(&'a str, &'a str)],
    body: Value,
    expected: StatusCode,
    /// The line's quantity in the answer; `None` for an order.
    quantity: Option<u64>,
}

/// One call's answer, and the owner it names.
async fn call(
    edge: &Client,
    method: Method,
    path: &str,
    cart: &CartRef,
    extra: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let r = edge
        .send(method, path, Some(&cart.token), extra, body)
        .await;
    let owner = r
        .headers
        .get("x-cart-edge")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status, r.json().unwrap_or(Value::Null), owner)
}

/// 300 shoppers, each sending the requests of a cart's life to a different edge in turn. (Stock
/// to spare: the subject is forwarding, not escrow, whose rebalancing between edges under a burst
/// can take longer than a shopper waits.)
#[tokio::test(flavor = "multi_thread")]
async fn every_request_of_a_carts_life_on_another_edge_gets_the_owners_answer() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10_000, 2)], -1)).await;
    let mut edges = Vec::new();
    for id in IDS {
        edges.push(start(&fleet, id, &[]).await);
    }
    let clients: Vec<Client> = edges.iter().map(|e| e.client.clone()).collect();

    let at_once = std::sync::Arc::new(tokio::sync::Semaphore::new(24));
    let mut shoppers = tokio::task::JoinSet::new();
    for i in 0..300usize {
        let (clients, at_once) = (clients.clone(), at_once.clone());
        shoppers.spawn(async move {
            let _turn = at_once.acquire().await.expect("semaphore");
            let on = |k: usize| &clients[(i + k) % 3];
            let (created, body) = on(0)
                .call(
                    Method::POST,
                    "/v1/carts",
                    None,
                    json!({"customer_id": format!("shopper-{i}")}),
                )
                .await;
            assert_eq!(created, StatusCode::CREATED, "{body}");
            let owner = IDS[i % 3];
            assert_eq!(body["edge_id"], json!(owner));
            let cart = CartRef {
                id: body["cart_id"].as_str().expect("cart_id").to_owned(),
                token: body["cart_token"].as_str().expect("cart_token").to_owned(),
            };
            let item = format!("/v1/carts/{}/items/BAG-1", cart.id);
            let whole = format!("/v1/carts/{}", cart.id);
            let checkout = format!("/v1/carts/{}/checkout", cart.id);
            let key = [("idempotency-key", "buy-once")];
            let hold = |q: u64| Step {
                method: Method::PUT,
                path: &item,
                extra: &[],
                body: json!({ "quantity": q }),
                expected: StatusCode::OK,
                quantity: Some(q),
            };
            let buy = |expected| Step {
                method: Method::POST,
                path: &checkout,
                extra: &key,
                body: json!({}),
                expected,
                quantity: None,
            };
            let read = Step {
                method: Method::GET,
                path: &whole,
                extra: &[],
                body: Value::Null,
                expected: StatusCode::OK,
                quantity: Some(1),
            };
            let steps = [
                hold(1),
                hold(2),
                hold(1),
                read,
                buy(StatusCode::CREATED),
                buy(StatusCode::OK),
            ];
            let mut orders = Vec::new();
            for (k, step) in steps.into_iter().enumerate() {
                let (status, answer, named) = call(
                    on(k + 1),
                    step.method,
                    step.path,
                    &cart,
                    step.extra,
                    step.body,
                )
                .await;
                assert_eq!(status, step.expected, "shopper {i} step {k}: {answer}");
                assert_eq!(named.as_deref(), Some(owner), "shopper {i} step {k}");
                assert_eq!(answer["edge_id"], json!(owner), "shopper {i} step {k}");
                if let Some(q) = step.quantity {
                    assert_eq!(
                        answer["lines"][0]["quantity"],
                        json!(q),
                        "shopper {i} step {k}"
                    );
                } else {
                    orders.push(answer["order_id"].clone());
                }
            }
            assert_eq!(orders[0], orders[1], "the replay names the same order");
            assert!(orders[0].is_string());
        });
    }
    tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(done) = shoppers.join_next().await {
            done.expect("a shopper's requests got the owner's answers");
        }
    })
    .await
    .expect("the shoppers are served within four minutes");

    // Every shopper's requests went round the three edges: each edge forwarded some.
    for e in &edges {
        let metrics = e.client.send(Method::GET, "/metrics", None, &[], "").await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        assert!(
            text.contains("cart_forward_duration_seconds_count"),
            "forwarding is measured:\n{text}"
        );
        let forwarded = &e.client.status().await["forwarded"];
        assert!(forwarded["answered"].as_u64() > Some(100), "{forwarded}");
        assert_eq!(forwarded["failed"], json!(0), "{forwarded}");
        assert!(forwarded["mean_ms"].as_f64() > Some(0.0), "{forwarded}");
    }
    audit_passes(&fleet, clients.iter().map(|c| c.url.clone())).await;
}

/// A forward is one hop, on the fleet's word only; an id no edge made is not found.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_fleet_forwards_and_only_once() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -1)).await;
    let one = start(&fleet, "edge-1", &[]).await;
    let two = start(&fleet, "edge-2", &[]).await;
    let cart = one.client.create_cart("c-1").await;
    let item = format!("/v1/carts/{}/items/BAG-1", cart.id);
    let hold = json!({"quantity": 1});

    // Claiming to be an edge without the secret changes nothing, at the owner or elsewhere.
    for (edge, secret) in [
        (&one.client, "wrong"),
        (&two.client, "wrong"),
        (&one.client, ""),
    ] {
        let forged = [
            ("x-cart-forwarded-by", "edge-2"),
            ("x-fleet-secret", secret),
        ];
        let (status, body, _) = call(edge, Method::PUT, &item, &cart, &forged, hold.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    // A request that an edge took for the owner's, with the secret: never forwarded again.
    let hop = [
        ("x-cart-forwarded-by", "edge-1"),
        ("x-fleet-secret", SECRET),
    ];
    let (status, body, _) = call(&two.client, Method::PUT, &item, &cart, &hop, hold.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, body) = one.client.get_cart(&cart).await;
    assert_eq!(body["lines"], json!([]), "nothing was held: {body}");

    // A cart id no edge of the fleet made, with another cart's token: refused at the door, as
    // the token cannot be this cart's (no peer or central is asked).
    let nobody = CartRef {
        id: format!("c_{}", "f".repeat(32)),
        token: cart.token.clone(),
    };
    let (status, body, _) = call(
        &two.client,
        Method::GET,
        &format!("/v1/carts/{}", nobody.id),
        &nobody,
        &[],
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A wrong token is the owner's answer, through any edge.
    let stranger = CartRef {
        id: cart.id.clone(),
        token: "0".repeat(64),
    };
    let (status, body, owner) = call(&two.client, Method::PUT, &item, &stranger, &[], hold).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(owner.as_deref(), Some("edge-1"));
}

/// The owner killed: its carts answer `503` with `Retry-After` elsewhere, never `404`; restarted
/// (on another port), they answer as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_owners_carts_answer_503_until_it_returns() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -1)).await;
    let lease = ["--lease-secs", "1"];
    let one = start(&fleet, "edge-1", &lease).await;
    let two = start(&fleet, "edge-2", &lease).await;
    let cart = one.client.create_cart("c-1").await;
    let (status, body) = two.client.set(&cart, "BAG-1", 2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    one.kill().await;

    let r = two.client.cart_response(&cart).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(
        r.json().expect("JSON")["error"]["code"],
        json!("unavailable")
    );
    let forwarded = &two.client.status().await["forwarded"];
    assert!(forwarded["failed"].as_u64() >= Some(1), "{forwarded}");

    // The customer's next cart belongs on their home edge too: not now.
    let (status, body) = two
        .client
        .call(
            Method::POST,
            "/v1/carts",
            None,
            json!({"customer_id": "c-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Restarted on its folder, on a new port after its lease lapsed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let again = start(&fleet, "edge-1", &lease).await;
    // The first create through the other edge finds the home's new address.
    let (status, body) = two
        .client
        .call(
            Method::POST,
            "/v1/carts",
            None,
            json!({"customer_id": "c-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["edge_id"], json!("edge-1"));
    // The first forward after the restart finds the new address (central's registry).
    crate::support::eventually("the owner's new address", Duration::from_secs(10), || {
        let (two, cart) = (two.client.clone(), cart.clone());
        async move { two.get_cart(&cart).await.0 == StatusCode::OK }
    })
    .await;
    let (status, body) = two.client.get_cart(&cart).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"][0]["quantity"], json!(2), "{body}");
    audit_passes(&fleet, [again.client.url.clone(), two.client.url.clone()]).await;
}

/// Every customer's held and bought units of BAG-1 across the fleet, from the edges' books.
async fn most_any_customer_has(clients: &[Client]) -> i64 {
    let http = cart_edge::http_client::HttpClient::default();
    let mut units: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for c in clients {
        let books = cart_edge::wire::fetch_books(&http, &c.url, Some(crate::support::ADMIN_TOKEN))
            .await
            .expect("books");
        for u in books.customers.iter().filter(|u| u.sku == "BAG-1") {
            *units.entry(u.customer_id.clone()).or_default() += u.held + u.sold;
        }
    }
    units.into_values().max().unwrap_or(0)
}

/// 50 customers each open a cart on all three edges at once and try to hold their limit in each:
/// across the fleet none ever holds or buys more than the limit, and every refusal says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_customers_limit_holds_across_the_fleet() {
    const LIMIT: i64 = 2;
    let fleet = Fleet::new(&sale(&[("BAG-1", 1_000, 2)], -1)).await;
    let mut edges = Vec::new();
    for id in IDS {
        edges.push(start(&fleet, id, &[]).await);
    }
    let clients: Vec<Client> = edges.iter().map(|e| e.client.clone()).collect();

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (clients, sampling) = (clients.clone(), sampling.clone());
        async move {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(most_any_customer_has(&clients).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            most
        }
    });
    let mut tries = tokio::task::JoinSet::new();
    for customer in 0..50 {
        for (e, client) in clients.iter().enumerate() {
            let client = client.clone();
            tries.spawn(async move {
                let (status, body) = client
                    .call(
                        Method::POST,
                        "/v1/carts",
                        None,
                        json!({"customer_id": format!("customer-{customer}")}),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let cart = CartRef {
                    id: body["cart_id"].as_str().expect("cart_id").to_owned(),
                    token: body["cart_token"].as_str().expect("cart_token").to_owned(),
                };
                let (status, body) = client.set(&cart, "BAG-1", LIMIT).await;
                if status == StatusCode::OK && e == 0 {
                    // Buy what the first cart got, so that orders count too.
                    let (placed, order) = client.checkout(&cart, "once").await;
                    assert_eq!(placed, StatusCode::CREATED, "{order}");
                }
                (status, body)
            });
        }
    }
    let (mut held, mut refused) = (0, 0);
    while let Some(done) = tries.join_next().await {
        let (status, body) = done.expect("a customer's try");
        match status {
            StatusCode::OK => held += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["error"]["code"], json!("limit_exceeded"), "{body}");
                assert_eq!(body["error"]["limit"], json!(LIMIT), "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.await.expect("sampler");
    assert_eq!(
        (held, refused),
        (50, 100),
        "one cart per customer got the limit"
    );
    assert!(most <= LIMIT, "a customer held {most} of BAG-1 at once");
    assert_eq!(most_any_customer_has(&clients).await, LIMIT);
    audit_passes(&fleet, clients.iter().map(|c| c.url.clone())).await;
}

/// A browser storefront on another origin: with `--cors-origin` the edge answers its preflight and
/// lets it read the owner's header; other origins, and edges without the flag, get no CORS
/// headers at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_storefront_on_an_allowed_origin_may_call_from_the_browser() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -1)).await;
    let shop = "https://shop.example";
    let open = fleet
        .edge_with(cart_edge::config::EdgeConfig {
            cors_origins: vec![hyper::header::HeaderValue::from_static(shop)],
            ..fleet.config("edge-1")
        })
        .await;
    let closed = fleet.edge("edge-2").await;
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ]
    };
    let allowed = |r: &cart_edge::http_client::HttpResponse| {
        r.headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };

    let r = open
        .send(
            Method::OPTIONS,
            "/v1/carts/c_x/items/BAG-1",
            None,
            &preflight(shop),
            "",
        )
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(allowed(&r).as_deref(), Some(shop));
    let methods = r
        .headers
        .get("access-control-allow-methods")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    assert!(methods.is_some_and(|m| m.contains("PUT")));

    let r = open
        .send(
            Method::POST,
            "/v1/carts",
            None,
            &[("origin", shop)],
            r#"{"customer_id":"c-1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(allowed(&r).as_deref(), Some(shop));
    let exposed = r
        .headers
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap_or_default().to_lowercase());
    assert!(
        exposed.is_some_and(|h| h.contains("x-cart-edge")),
        "{:?}",
        r.headers
    );

    for (edge, origin) in [(&open, "https://evil.example"), (&closed, shop)] {
        let r = edge
            .send(Method::OPTIONS, "/v1/carts", None, &preflight(origin), "")
            .await;
        assert_eq!(allowed(&r), None, "{origin}: {:?}", r.headers);
        let r = edge
            .send(Method::GET, "/v1/skus", None, &[("origin", origin)], "")
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(allowed(&r), None, "{origin}: {:?}", r.headers);
    }
}

pub(crate) async fn readyz(client: &Client) -> StatusCode {
    client
        .send(Method::GET, "/readyz", None, &[], "")
        .await
        .status
}

pub(crate) fn signal(process: &EdgeProcess, signal: &str) {
    let done = std::process::Command::new("kill")
        .args([signal, &process.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(done.success());
}

/// An edge that may not take new carts (here: central gave its id to another process while it
/// was stopped) says so on `/readyz`, and sends a new shopper's create, once, to another edge.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_that_is_not_ready_sends_new_carts_to_another() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let lease = ["--lease-secs", "1"];
    let one = start(&fleet, "edge-1", &lease).await;
    let two = start(&fleet, "edge-2", &lease).await;
    assert_eq!(readyz(&one.client).await, StatusCode::OK);

    // edge-1's process stops; once its lease has lapsed, an operator takes the id over.
    signal(&one, "-STOP");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let taken = start_in(
        &fleet,
        "edge-1",
        "edge-1-new",
        &["--lease-secs", "1", "--take-over"],
    )
    .await;
    signal(&one, "-CONT");
    crate::support::eventually(
        "the old process learns it lost its id",
        Duration::from_secs(10),
        || {
            let one = one.client.clone();
            async move { readyz(&one).await == StatusCode::SERVICE_UNAVAILABLE }
        },
    )
    .await;
    assert_eq!(readyz(&taken.client).await, StatusCode::OK);

    // A new shopper reaching it is served by another edge, whose cart answers anywhere.
    let (status, body) = one
        .client
        .call(
            Method::POST,
            "/v1/carts",
            None,
            json!({"customer_id": "c-new"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cart = CartRef::from_created(&body);
    let (status, body) = two.client.set(&cart, "BAG-1", 2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for client in [&taken.client, &one.client] {
        let (status, body) = client.get_cart(&cart).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["lines"][0]["quantity"], json!(2));
    }
    // The id's carts are the new process's, also when a request for one reaches the old.
    let theirs = taken.client.create_cart("c-taken").await;
    assert_eq!(
        taken.client.set(&theirs, "BAG-1", 1).await.0,
        StatusCode::OK
    );
    let (status, body) = one.client.get_cart(&theirs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"][0]["quantity"], json!(1));

    // A create forwarded to it is not forwarded again.
    let r = one
        .client
        .send(
            Method::POST,
            "/v1/carts",
            None,
            &[
                ("x-cart-forwarded-by", "edge-2"),
                ("x-fleet-secret", SECRET),
            ],
            json!({"customer_id": "c-other"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
}
