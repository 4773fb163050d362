//! A broken guest costs one request, never the host: traps, endless loops and endless growth.

use std::time::{Duration, Instant};

use hyper::StatusCode;

use crate::support::{Fleet, faulty_wasm, module, sale};

/// The faulty component's magic quantities (see guest/faulty/src/lib.rs).
const TRAP: i64 = 13;
const LOOP_FOREVER: i64 = 14;
const GROW_FOREVER: i64 = 15;
const HOLD_TOO_MUCH: i64 = 16;

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_guest_rolls_back_only_its_request() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    let edge = fleet.edge_with(config).await;
    let cart = edge.create_cart("c").await;
    assert_eq!(edge.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
    let before = edge.status().await;

    // The guest decides to hold 13 units, then traps before answering.
    let (status, body) = edge.set(&cart, "BAG-1", TRAP).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "guest_fault");

    // Nothing of it stayed: same line, same stock, no extra outbox event.
    let (_, got) = edge.get_cart(&cart).await;
    assert_eq!(got["lines"][0]["quantity"], 2);
    let after = edge.status().await;
    assert_eq!(
        after["skus"]["BAG-1"]["held"],
        before["skus"]["BAG-1"]["held"]
    );
    assert_eq!(
        edge.set(&cart, "BAG-1", 3).await.0,
        StatusCode::OK,
        "the next request is served"
    );
    let metrics = edge
        .send(hyper::Method::GET, "/metrics", None, &[], "")
        .await;
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("cart_guest_faults_total 1"),
        "the fault is counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_or_greedy_guest_is_stopped_and_the_host_serves_on() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    config.sandbox.deadline = Duration::from_millis(200);
    config.sandbox.memory_bytes = 8 << 20;
    let edge = fleet.edge_with(config).await;
    let cart = edge.create_cart("c").await;

    let started = Instant::now();
    let (status, body) = edge.set(&cart, "BAG-1", LOOP_FOREVER).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "guest_fault");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered within the deadline, took {:?}",
        started.elapsed()
    );

    let (status, body) = edge.set(&cart, "BAG-1", GROW_FOREVER).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "guest_fault");

    assert!(edge.healthy().await);
    let (status, body) = edge.set(&cart, "BAG-1", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(edge.status().await["skus"]["BAG-1"]["held"], 1);
}

/// A cart read never waits for the writer: while an endless guest call holds it, a cart is read
/// at once, as last committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_cart_is_read_while_the_writer_is_held() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    config.sandbox.deadline = Duration::from_secs(4);
    // `/healthz` turns 503 once a job has run this long: how the test knows the writer is held.
    config.writer.stuck_after = Duration::from_millis(300);
    let edge = fleet.edge_with(config).await;
    let (cart, other) = (edge.create_cart("c").await, edge.create_cart("d").await);
    assert_eq!(edge.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);

    let looping = tokio::spawn({
        let client = edge.client.clone();
        async move { client.set(&other, "BAG-1", LOOP_FOREVER).await }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let health = edge
            .send(hyper::Method::GET, "/healthz", None, &[], "")
            .await;
        if health.status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(Instant::now() < deadline, "the writer was never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The guest's deadline frees the writer about 3.7 s from now: a read that waited for it
    // would take that long.
    let asked = Instant::now();
    let (status, body) = edge.get_cart(&cart).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"][0]["quantity"], 2);
    assert!(
        asked.elapsed() < Duration::from_secs(1) && !looping.is_finished(),
        "the read waited for the writer: {:?}",
        asked.elapsed()
    );
    let (status, body) = looping.await.expect("the looping update");
    assert_eq!(body["error"]["code"], "guest_fault", "{status}: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_sheds_load_with_503() {
    // Stock enough that the first grant covers the demand: no top-up takes the queue's place.
    let fleet = Fleet::new(&sale(&[("BAG-1", 100_000, 50)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    config.sandbox.deadline = Duration::from_secs(2);
    config.writer.queue = 1;
    // No sweeps to take the one place in the queue.
    config.sweep_every = Duration::from_secs(3600);
    let edge = fleet.edge_with(config).await;
    // The first grant's jobs may hold the queue's one place for a moment.
    let mut cart = None;
    while cart.is_none() {
        let (status, body) = edge
            .call(
                hyper::Method::POST,
                "/v1/carts",
                None,
                serde_json::json!({"customer_id": "c"}),
            )
            .await;
        if status == StatusCode::CREATED {
            cart = Some(crate::support::CartRef {
                id: body["cart_id"].as_str().expect("id").into(),
                token: body["cart_token"].as_str().expect("token").into(),
            });
        }
    }
    let cart = cart.expect("a cart");
    // One request keeps the writer busy for two seconds (it waits its turn if background work
    // holds the queue's one place); the updates behind it are shed while it runs. (Reads never
    // queue for the writer.)
    let busy = tokio::spawn({
        let (edge, cart) = (edge.client.clone(), cart.clone());
        async move {
            loop {
                let answer = edge.set(&cart, "BAG-1", LOOP_FOREVER).await;
                if answer.0 != StatusCode::SERVICE_UNAVAILABLE {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut shed = 0;
    while shed == 0 && !busy.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let wave: Vec<_> = (0..4)
            .map(|_| {
                let (edge, cart) = (edge.client.clone(), cart.clone());
                tokio::spawn(async move {
                    let path = format!("/v1/carts/{}/items/BAG-1", cart.id);
                    edge.send(
                        hyper::Method::PUT,
                        &path,
                        Some(&cart.token),
                        &[],
                        r#"{"quantity": 1}"#,
                    )
                    .await
                })
            })
            .collect();
        for r in wave {
            let r = r.await.expect("request");
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                shed += 1;
                assert_eq!(r.json().expect("JSON")["error"]["code"], "overloaded");
                assert!(r.headers.contains_key("retry-after"));
            } else {
                assert_eq!(r.status, StatusCode::OK);
            }
        }
    }
    assert!(
        shed >= 1,
        "nothing was shed with a queue of one behind a busy writer"
    );
    assert_eq!(
        busy.await.expect("busy").0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_in_a_group_commit_costs_only_itself() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100_000, 1000)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    let edge = fleet.edge_with(config).await;
    let carts: Vec<_> = {
        let mut carts = Vec::new();
        for i in 0..20 {
            carts.push(edge.create_cart(&format!("c-{i}")).await);
        }
        carts
    };
    // Traps and ordinary updates land in the same batches: each trap costs only itself.
    let calls: Vec<_> = carts
        .iter()
        .enumerate()
        .map(|(i, cart)| {
            let (edge, cart) = (edge.client.clone(), cart.clone());
            let quantity = if i % 5 == 0 { TRAP } else { 2 };
            tokio::spawn(async move { (quantity, edge.set(&cart, "BAG-1", quantity).await) })
        })
        .collect();
    for call in calls {
        let (quantity, (status, body)) = call.await.expect("call");
        let expected = if quantity == TRAP {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "{body}");
    }
    assert_eq!(edge.status().await["skus"]["BAG-1"]["held"], 16 * 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_that_hold_more_than_is_free_are_refused_by_the_books() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 20, 1000)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    let edge = fleet.edge_with(config).await;
    let cart = edge.create_cart("c").await;
    // The faulty rules claim a hold of one more unit than the edge has free.
    let (status, body) = edge.set(&cart, "BAG-1", HOLD_TOO_MUCH).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "guest_fault");
    let stock = &edge.status().await["skus"]["BAG-1"];
    assert_eq!(stock["held"], 0, "nothing was held: {stock}");
    let (_, got) = edge.get_cart(&cart).await;
    assert_eq!(got["lines"], serde_json::json!([]));
}

/// With instances made ahead (`serve --instances-ahead`), each still serves one call: its
/// deadline counts from the call, not from when it was made; a trap or a loop costs only its
/// own request; and the calls do run on instances made ahead.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_made_ahead_is_timed_from_its_call_and_serves_one_call() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.module = module(faulty_wasm());
    config.sandbox.deadline = Duration::from_millis(200);
    config.sandbox.instances_ahead = 4;
    let edge = fleet.edge_with(config).await;
    let cart = edge.create_cart("c").await;
    // Time passing is the point: the instances were made longer ago than the deadline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = edge.set(&cart, "BAG-1", 2).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an instance made ahead has its whole deadline: {body}"
    );

    let (status, body) = edge.set(&cart, "BAG-1", TRAP).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let started = Instant::now();
    let (status, body) = edge.set(&cart, "BAG-1", LOOP_FOREVER).await;
    assert_eq!(body["error"]["code"], "guest_fault", "{status} {body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the loop was stopped"
    );
    for quantity in [3, 1, 2] {
        let (status, body) = edge.set(&cart, "BAG-1", quantity).await;
        assert_eq!(status, StatusCode::OK, "served after the faults: {body}");
        assert_eq!(body["lines"][0]["quantity"], quantity);
    }
    let metrics = edge
        .send(hyper::Method::GET, "/metrics", None, &[], "")
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    let ahead = text
        .lines()
        .find_map(|l| l.strip_prefix("cart_guest_instances_made_ahead_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(ahead >= 1.0, "calls ran on instances made ahead:\n{text}");
}
