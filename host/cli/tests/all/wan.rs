//! Across a bad network, through the test kit's proxy ([`cart_testkit::link`]): central
//! blackholed for a minute mid-sale costs shoppers nothing, and the books catch up when it
//! returns; a blackholed peer edge costs a request for its carts a `503` with `Retry-After`
//! within the forward deadline, and nothing else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cart_edge::http::forward::FORWARD_SLACK;
use cart_edge::server;
use cart_testkit::Postgres;
use cart_testkit::link::{Link, Mode};
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::one_fleet::SECRET;
use crate::support::{
    ADMIN_TOKEN, CartRef, Client, EdgeProcess, Fleet, audit_passes, eventually, sale,
};

/// How long central stays blackholed.
const OUTAGE: Duration = Duration::from_secs(60);

/// One shopper's round: a new cart, a hold of one unit, the hold let go. Each answer's status
/// and time.
async fn round(edge: &Client, shopper: &str) -> Vec<(StatusCode, Duration)> {
    let mut answers = Vec::new();
    let started = Instant::now();
    let (status, body) = edge
        .call(
            Method::POST,
            "/v1/carts",
            None,
            serde_json::json!({ "customer_id": shopper }),
        )
        .await;
    answers.push((status, started.elapsed()));
    if status != StatusCode::CREATED {
        return answers;
    }
    let cart = CartRef::from_created(&body);
    let started = Instant::now();
    let (status, _) = edge.set(&cart, "BAG-1", 1).await;
    answers.push((status, started.elapsed()));
    let started = Instant::now();
    let (status, _) = edge
        .call(
            Method::DELETE,
            &format!("/v1/carts/{}/items/BAG-1", cart.id),
            Some(&cart.token),
            Value::Null,
        )
        .await;
    answers.push((status, started.elapsed()));
    answers
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn central_blackholed_for_a_minute_costs_shoppers_nothing_and_the_books_catch_up() {
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("blackhole").await.expect("database");
    let fleet = Fleet::on(url.clone(), &sale(&[("BAG-1", 1_000, 5)], -60)).await;
    let target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse().expect("address");
    let link = Link::start(target).await.expect("a link to central");
    let edge = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1",
        // The lease outlasts the outage, so the edge may sell through it (an edge cut off for
        // longer stops at its lease's end: see the partition test in `oversell`); shoppers
        // short of units wait as long as in production.
        &[
            "--central",
            &link.url(&url, target),
            "--lease-secs",
            "90",
            "--shortage-wait-ms",
            "150",
        ],
    )
    .await;
    let client = edge.client.clone();
    // Four shoppers, from 3 s before the cut (so the edge holds about a second of their demand,
    // as it would mid-sale) to its end; what they asked after the cut is measured.
    let cut_at = Instant::now() + Duration::from_secs(3);
    let ends_at = cut_at + OUTAGE;
    let mut shoppers = JoinSet::new();
    for s in 0..4 {
        let client = client.clone();
        shoppers.spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while Instant::now() < ends_at {
                let started = Instant::now();
                let said = round(&client, &format!("shopper-{s}-{n}")).await;
                if started >= cut_at {
                    answers.extend(said);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        });
    }
    tokio::time::sleep_until(cut_at.into()).await;
    link.set(Mode::Blackholed);
    let mut answers = Vec::new();
    while let Some(more) = shoppers.join_next().await {
        answers.extend(more.expect("a shopper"));
    }
    let (status, during) = client
        .call(Method::GET, "/admin/status", Some(ADMIN_TOKEN), Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    link.heal();

    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| !status.is_success())
        .collect();
    let mut times: Vec<Duration> = answers.iter().map(|(_, took)| *took).collect();
    times.sort();
    let (p50, p99, worst) = (
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
    println!(
        "{} answers with central blackholed for {OUTAGE:?}: p50 {p50:?}, p99 {p99:?}, worst \
         {worst:?}; outbox backlog at the end {}",
        answers.len(),
        during["outbox_backlog"]
    );
    assert!(answers.len() > 1_000, "{} answers", answers.len());
    assert!(
        refused.is_empty(),
        "refused while central was away: {refused:?}"
    );
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
    assert!(worst < Duration::from_secs(1), "a request waited {worst:?}");
    assert!(
        during["outbox_backlog"].as_i64().unwrap_or(0) > 0,
        "nothing waited for central: {during}"
    );

    // Back: the outbox drains (its stuck connections time out first) and the books agree.
    let healed = Instant::now();
    loop {
        let (_, status) = client
            .call(Method::GET, "/admin/status", Some(ADMIN_TOKEN), Value::Null)
            .await;
        if status["outbox_backlog"] == 0 {
            println!(
                "the outbox drained {:?} after the link healed",
                healed.elapsed()
            );
            break;
        }
        if healed.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(fleet.dir.path().join("edge-1.log"));
            panic!(
                "the outbox did not drain within 60 s of the link healing: {status}\n{}",
                log.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    audit_passes(&fleet, [client.url.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blackholed_peer_costs_its_carts_a_503_within_the_forward_deadline() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -5)).await;
    let shortage_wait = Duration::from_millis(150);
    let mut config = fleet.config("edge-1");
    config.fleet_secret = Some(SECRET.into());
    config.shortage_wait = shortage_wait;
    let one = fleet.edge_with(config).await;
    // edge-2, known to the fleet by the proxy's address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let link = Link::start(listener.local_addr().expect("address"))
        .await
        .expect("a link to edge-2");
    let mut config = fleet.config("edge-2");
    config.fleet_secret = Some(SECRET.into());
    config.public_url = Some(format!("http://{}", link.addr()));
    let running = server::start(listener, config)
        .await
        .expect("edge-2 starts");
    let two = Client::new(&format!("http://{}", link.addr()));

    let theirs = two.create_cart("bob").await;
    let ours = one.create_cart("alice").await;
    assert_eq!(one.get_cart(&theirs).await.0, StatusCode::OK, "forwarded");

    link.set(Mode::Blackholed);
    let deadline = shortage_wait + FORWARD_SLACK;
    let started = Instant::now();
    let answer = one
        .send(
            Method::PUT,
            &format!("/v1/carts/{}/items/BAG-1", theirs.id),
            Some(&theirs.token),
            &[],
            r#"{"quantity":1}"#,
        )
        .await;
    let took = started.elapsed();
    println!(
        "a request for a blackholed peer's cart answered {} in {took:?}",
        answer.status
    );
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key("retry-after"));
    assert!(
        !String::from_utf8_lossy(&answer.body).contains("127.0.0.1"),
        "no internal address shown"
    );
    assert!(took >= deadline, "answered before the deadline: {took:?}");
    assert!(took < deadline + Duration::from_secs(1), "{took:?}");
    // The edge's own carts are not held up.
    let started = Instant::now();
    let (status, body) = one.set(&ours, "BAG-1", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() < Duration::from_millis(250));

    link.heal();
    eventually("edge-2 reached again", Duration::from_secs(10), || {
        let (one, theirs) = (one.client.clone(), theirs.clone());
        async move { one.get_cart(&theirs).await.0 == StatusCode::OK }
    })
    .await;
    running.stop().await.expect("edge-2 stops");
}
