//! Every storefront route and every error row of the contract, against one in-process edge.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Fleet, eventually, sale};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shopper_fills_a_cart_and_checks_out() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2), ("HAT-1", 10, 5)], -60)).await;
    let edge = fleet.edge("edge-a").await;

    let (status, skus) = edge.call(Method::GET, "/v1/skus", None, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = skus["skus"]
        .as_array()
        .expect("skus")
        .iter()
        .filter_map(|s| s["sku"].as_str())
        .collect();
    assert_eq!(listed, ["BAG-1", "HAT-1"]);
    eventually(
        "the first grant",
        std::time::Duration::from_secs(10),
        || async { edge.available("BAG-1").await > 0 },
    )
    .await;
    let (status, sku) = edge
        .call(Method::GET, "/v1/skus/BAG-1", None, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    for field in [
        "sku",
        "name",
        "price_cents",
        "limit_per_customer",
        "sale_starts_at",
        "available_here",
    ] {
        assert!(sku.get(field).is_some(), "sku lacks {field}: {sku}");
    }

    let cart = edge.create_cart("c-42").await;
    let (status, body) = edge.set(&cart, "BAG-1", 2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"][0]["quantity"], 2);
    assert_eq!(body["total_cents"], 2000);
    assert_eq!(body["edge_id"], "edge-a");
    assert!(
        body["lines"][0]["hold_expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let (status, body) = edge.set(&cart, "HAT-1", 3).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Lowering releases; 0 removes the line.
    let (_, body) = edge.set(&cart, "HAT-1", 1).await;
    assert_eq!(body["lines"][1]["quantity"], 1);
    let (status, body) = edge
        .call(
            Method::DELETE,
            &format!("/v1/carts/{}/items/HAT-1", cart.id),
            Some(&cart.token),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"].as_array().map(Vec::len), Some(1));

    let (status, got) = edge.get_cart(&cart).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["status"], "open");
    assert!(
        got.get("cart_token").is_none(),
        "the token is shown only on create"
    );

    let (status, order) = edge.checkout(&cart, "key-1").await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(
        order["lines"],
        json!([{"sku": "BAG-1", "quantity": 2, "unit_price_cents": 1000}])
    );
    assert_eq!(order["total_cents"], 2000);
    for field in ["order_id", "cart_id", "customer_id", "placed_at", "edge_id"] {
        assert!(order.get(field).is_some(), "order lacks {field}: {order}");
    }
    // A replay with the same key: 200 and the same order.
    let (status, again) = edge.checkout(&cart, "key-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, order);
    let (_, got) = edge.get_cart(&cart).await;
    assert_eq!(got["status"], "checked_out");

    let stock = &edge.status().await["skus"];
    assert_eq!(stock["BAG-1"]["sold"], 2);
    assert_eq!(stock["BAG-1"]["held"], 0);
    assert_eq!(stock["HAT-1"]["held"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_contracts_error_and_changes_nothing() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let cart = edge.create_cart("c-1").await;
    let item = format!("/v1/carts/{}/items/BAG-1", cart.id);
    let tok = Some(cart.token.as_str());

    let raw = |method: Method, path: String, token: Option<String>, body: &'static str| {
        let edge = &edge;
        async move {
            let r = edge.send(method, &path, token.as_deref(), &[], body).await;
            (r.status, r.json().expect("every answer is JSON"))
        }
    };
    let cases: Vec<(StatusCode, &str, (StatusCode, Value))> = vec![
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            raw(Method::POST, "/v1/carts".into(), None, "{not json").await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            raw(Method::POST, "/v1/carts".into(), None, "[1]").await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            raw(
                Method::POST,
                "/v1/carts".into(),
                None,
                r#"{"customer_id": 42}"#,
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            raw(
                Method::POST,
                "/v1/carts".into(),
                None,
                r#"{"customer_id": "has space"}"#,
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            raw(Method::POST, "/v1/carts".into(), None, "{}").await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            raw(Method::PUT, item.clone(), tok.map(Into::into), "{}").await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
            raw(
                Method::PUT,
                item.clone(),
                tok.map(Into::into),
                r#"{"quantity": -1}"#,
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
            raw(
                Method::PUT,
                item.clone(),
                tok.map(Into::into),
                r#"{"quantity": 1.5}"#,
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
            raw(
                Method::PUT,
                item.clone(),
                tok.map(Into::into),
                r#"{"quantity": "2"}"#,
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
            raw(
                Method::PUT,
                item.clone(),
                tok.map(Into::into),
                r#"{"quantity": 1000000000000}"#,
            )
            .await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            raw(Method::PUT, item.clone(), None, r#"{"quantity": 1}"#).await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            raw(
                Method::PUT,
                item.clone(),
                Some("wrong".into()),
                r#"{"quantity": 1}"#,
            )
            .await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            raw(
                Method::GET,
                format!("/v1/carts/{}", cart.id),
                Some("wrong".into()),
                "",
            )
            .await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            raw(
                Method::GET,
                "/v1/carts/c_00000000000000000000000000000000".into(),
                tok.map(Into::into),
                "",
            )
            .await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            raw(
                Method::GET,
                "/v1/carts/../../etc".into(),
                tok.map(Into::into),
                "",
            )
            .await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            raw(
                Method::PUT,
                format!("/v1/carts/{}/items/NOPE", cart.id),
                tok.map(Into::into),
                r#"{"quantity": 1}"#,
            )
            .await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            raw(Method::GET, "/v1/skus/NOPE".into(), None, "").await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            raw(Method::GET, "/v2/anything".into(), None, "").await,
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            raw(Method::DELETE, "/v1/skus".into(), None, "").await,
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            raw(Method::GET, "/v1/carts".into(), None, "").await,
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            raw(Method::POST, item.clone(), tok.map(Into::into), "{}").await,
        ),
    ];
    for (i, (status, expected, (got_status, body))) in cases.into_iter().enumerate() {
        assert_eq!(
            (got_status, code(&body)),
            (status, expected),
            "case {i}: {body}"
        );
        assert!(body["error"]["message"].is_string(), "case {i}: {body}");
    }

    // Too large: 413, whatever the route.
    let huge = format!(
        r#"{{"customer_id": "c-1", "pad": "{}"}}"#,
        "x".repeat(20_000)
    );
    let r = edge.send(Method::POST, "/v1/carts", None, &[], huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&r.json().expect("JSON")), "payload_too_large");

    // Checkout without an Idempotency-Key.
    let r = edge
        .send(
            Method::POST,
            &format!("/v1/carts/{}/checkout", cart.id),
            tok,
            &[],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&r.json().expect("JSON")), "bad_request");

    // Nothing changed: the cart is empty and nothing is held.
    let (_, got) = edge.get_cart(&cart).await;
    assert_eq!(got["lines"], json!([]));
    assert_eq!(edge.status().await["skus"]["BAG-1"]["held"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn business_rules_answer_with_their_codes() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 3, 2), ("HAT-1", 100, 50)], -60)).await;
    let edge = fleet.edge("edge-a").await;

    // sold_out, with what is available: 3 units in all, and the edge asks central for more first.
    let a = edge.create_cart("alice").await;
    let b = edge.create_cart("bob").await;
    assert_eq!(edge.set(&a, "BAG-1", 2).await.0, StatusCode::OK);
    let (status, body) = edge.set(&b, "BAG-1", 2).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "sold_out"),
        "{body}"
    );
    assert_eq!(body["error"]["available"], 1);

    // limit_exceeded across the customer's carts (and, below, orders).
    let a2 = edge.create_cart("alice").await;
    let (status, body) = edge.set(&a2, "BAG-1", 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded")
    );
    assert_eq!(body["error"]["limit"], 2);

    // cart_empty.
    let (status, body) = edge.checkout(&b, "k").await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "cart_empty"));

    // cart_closed: a change after checkout, and a checkout under another key.
    assert_eq!(edge.checkout(&a, "k-a").await.0, StatusCode::CREATED);
    let (status, body) = edge.set(&a, "HAT-1", 1).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "cart_closed"));
    let (status, body) = edge.checkout(&a, "another-key").await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "cart_closed"));
    let (status, body) = edge.set(&a2, "BAG-1", 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "orders count toward the limit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adds_before_the_sale_starts_are_refused() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], 3600)).await;
    let edge = fleet.edge("edge-a").await;
    let cart = edge.create_cart("early-bird").await;
    let (status, body) = edge.set(&cart, "BAG-1", 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "sale_not_started")
    );
    assert!(body["error"]["sale_starts_at"].is_string(), "{body}");
    // At noon the same request goes through.
    edge.clock.advance(std::time::Duration::from_secs(3601));
    let (status, body) = edge.set(&cart, "BAG-1", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_endpoints_need_the_token() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    assert!(edge.healthy().await);
    let r = edge.send(Method::GET, "/metrics", None, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.body).contains("cart_http_requests_total"));

    let (status, body) = edge
        .call(Method::GET, "/admin/status", None, Value::Null)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _) = edge
        .call(Method::GET, "/admin/status", Some("nope"), Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let status = edge.status().await;
    for field in [
        "edge_id",
        "module_version",
        "skus",
        "outbox_backlog",
        "last_sync",
    ] {
        assert!(
            status.get(field).is_some(),
            "status lacks {field}: {status}"
        );
    }

    let mut config = fleet.config("edge-b");
    config.admin_token = None;
    let closed = fleet.edge_with(config).await;
    let (status, body) = closed
        .call(Method::GET, "/admin/status", Some(ADMIN_TOKEN), Value::Null)
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
}

/// A customer has at most 20 open carts: the 21st is `409 too_many_carts`, and checking one
/// out makes room.
#[tokio::test(flavor = "multi_thread")]
async fn a_customer_has_at_most_twenty_open_carts() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let mut carts = Vec::new();
    for _ in 0..20 {
        carts.push(edge.create_cart("hoarder").await);
    }
    let (status, body) = edge
        .call(
            Method::POST,
            "/v1/carts",
            None,
            serde_json::json!({"customer_id": "hoarder"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "too_many_carts"),
        "{body}"
    );
    assert_eq!(body["error"]["limit"], 20);
    // Another customer is not held up by it.
    edge.create_cart("someone-else").await;
    assert_eq!(edge.set(&carts[0], "BAG-1", 1).await.0, StatusCode::OK);
    assert_eq!(edge.checkout(&carts[0], "k").await.0, StatusCode::CREATED);
    edge.create_cart("hoarder").await;
}

/// Failed operator logins cost their sender a pause each, and past ten a minute the address is
/// refused for a while, even with the right token: a guesser gets a handful of tries a minute.
#[tokio::test(flavor = "multi_thread")]
async fn failed_operator_logins_are_slowed_and_then_refused() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let started = std::time::Instant::now();
    for i in 0..10 {
        let (status, _) = edge
            .call(
                Method::GET,
                "/admin/status",
                Some(&format!("guess-{i}-xxxxxxxxxxxx")),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(2_500),
        "ten failures took {:?}",
        started.elapsed()
    );
    let (status, _) = edge
        .call(
            Method::GET,
            "/admin/status",
            Some("one-more-guess-xxxx"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = edge
        .send(Method::GET, "/admin/status", Some(ADMIN_TOKEN), &[], "")
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right token, too late"
    );
    assert!(r.headers.contains_key("retry-after"));
    // The storefront is not the operator API: shoppers from the address are served.
    assert!(edge.healthy().await);
    edge.create_cart("a-shopper").await;
}

/// A burst of wrong tokens at once is taken one by one: no more than the minute's allowance of
/// them is even looked at.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_guessed_operator_tokens_gets_no_more_tries() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..40 {
        let client = edge.client.clone();
        guesses.spawn(async move {
            client
                .send(
                    Method::GET,
                    "/admin/status",
                    Some(&format!("guess-{i:04}-xxxxxxxxxxx")),
                    &[],
                    "",
                )
                .await
                .status
        });
    }
    let mut checked = 0;
    while let Some(status) = guesses.join_next().await {
        match status.expect("a guess") {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    assert!(checked <= 11, "{checked} of 40 guesses were checked");
}
