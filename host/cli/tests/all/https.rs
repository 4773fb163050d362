//! The edge over HTTPS: three edges with a fleet CA forward, hand off and chart the fleet over
//! mutual TLS, and nothing without a fleet certificate is taken as a peer; a certificate renewed
//! on disk is served to new connections while open ones carry on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cart_edge::http_client::HttpClient;
use cart_edge::tls::TlsFiles;
use cart_edge::wire::{FLEET_SECRET, FORWARDED_BY, HANDOFF_PATH};
use cart_testkit::certs::{Issued, TestCa, client_config};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::one_fleet::{SECRET, signal};
use crate::support::{ADMIN_TOKEN, CartRef, Client, EdgeProcess, Fleet, TestEdge, sale};

/// Writes a certificate and its key as `name.crt` and `name.key` in `dir`.
fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).expect("write the certificate");
    std::fs::write(&key, &issued.key_pem).expect("write the key");
    (cert, key)
}

/// Writes a CA's certificate as `name.pem` in `dir`.
fn write_ca(dir: &Path, name: &str, ca: &TestCa) -> PathBuf {
    let file = dir.join(format!("{name}.pem"));
    std::fs::write(&file, ca.cert_pem()).expect("write the CA");
    file
}

/// An edge of `fleet` serving HTTPS with a certificate the fleet CA issued it.
async fn tls_edge(fleet: &Fleet, ca: &TestCa, edge_id: &str) -> TestEdge {
    let issued = ca
        .issue(&["127.0.0.1", "localhost"])
        .expect("a certificate");
    let (cert, key) = write_pair(fleet.dir.path(), edge_id, &issued);
    let mut config = fleet.config(edge_id);
    config.fleet_secret = Some(SECRET.into());
    config.tls = Some(TlsFiles {
        cert,
        key,
        fleet_ca: fleet.fleet_ca.clone(),
    });
    fleet.edge_with(config).await
}

/// A client that trusts `ca` and presents `identity`, if any.
fn client_as(ca: &TestCa, identity: Option<&Issued>) -> HttpClient {
    HttpClient::with_tls(
        Duration::from_secs(10),
        client_config(&ca.cert_pem(), identity).expect("a TLS client"),
    )
}

/// `PUT` of a line of `cart` through `url`, claiming to be edge-1 forwarding it, with the right
/// fleet secret.
async fn forged_put(client: &HttpClient, url: &str, cart: &CartRef) -> anyhow::Result<StatusCode> {
    let auth = format!("Bearer {}", cart.token);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        (FORWARDED_BY, "edge-1"),
        (FLEET_SECRET, SECRET),
    ];
    let path = format!("{url}/v1/carts/{}/items/BAG-1", cart.id);
    let answer = client
        .send(Method::PUT, &path, &headers, r#"{"quantity":5}"#)
        .await?;
    Ok(answer.status)
}

/// The cart's `BAG-1` quantity through `edge`, asked again while it is being handed off.
async fn quantity_of(edge: &Client, cart: &CartRef) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = edge.get_cart(cart).await;
        if status == StatusCode::OK {
            return body["lines"]
                .as_array()
                .and_then(|lines| lines.iter().find(|l| l["sku"] == "BAG-1"))
                .and_then(|l| l["quantity"].as_u64())
                .unwrap_or(0);
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            Instant::now() < deadline,
            "the cart is still moving: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_edges_over_https_forward_hand_off_and_chart_only_for_fleet_certificates() {
    let mut fleet = Fleet::new(&sale(&[("BAG-1", 1_000, 5)], -5)).await;
    let ca = TestCa::new("fleet CA").expect("a CA");
    fleet.fleet_ca = Some(write_ca(fleet.dir.path(), "fleet-ca", &ca));
    let mut edges = Vec::new();
    for id in ["edge-1", "edge-2", "edge-3"] {
        edges.push(tls_edge(&fleet, &ca, id).await);
    }
    let [one, two, three] = [&edges[0], &edges[1], &edges[2]];
    assert!(one.url.starts_with("https://"), "{}", one.url);

    // A cart made on edge-1, changed through edge-2: forwarded over mutual TLS.
    let cart = one.create_cart("alice").await;
    let (status, body) = two.set(&cart, "BAG-1", 2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(quantity_of(three, &cart).await, 2);

    // The dashboard's fan-out reaches every peer over mutual TLS.
    let (status, view) = three
        .call(Method::GET, "/admin/fleet", Some(ADMIN_TOKEN), Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let states: Vec<&str> = view["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["state"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(states, ["serving"; 3], "{view}");

    // With the fleet secret but no fleet certificate, nothing is taken as a peer's: not a
    // forward at the owner or at another edge, not a hand-off.
    let bare = client_as(&ca, None);
    for edge in [one, two] {
        let status = forged_put(&bare, &edge.url, &cart)
            .await
            .expect("an answer");
        assert_eq!(status, StatusCode::FORBIDDEN, "at {}", edge.url);
    }
    let handoff = bare
        .send(
            Method::POST,
            &format!("{}{HANDOFF_PATH}", two.url),
            &[(FORWARDED_BY, "edge-1"), (FLEET_SECRET, SECRET)],
            r#"{"carts":[]}"#,
        )
        .await
        .expect("an answer");
    assert_eq!(handoff.status, StatusCode::FORBIDDEN);
    // A certificate from another CA does not get past the handshake.
    let stranger = TestCa::new("stranger").expect("a CA");
    let impostor = stranger.issue(&["127.0.0.1"]).expect("a certificate");
    let outsider = client_as(&ca, Some(&impostor));
    let refused = forged_put(&outsider, &two.url, &cart).await;
    assert!(refused.is_err(), "{refused:?}");
    // A fleet certificate with a wrong secret is refused too; with the right one, the request
    // is a peer's (the check passes what it should: the owner applies it).
    let member = ca.issue(&["127.0.0.1"]).expect("a certificate");
    let peer = client_as(&ca, Some(&member));
    let wrong = peer
        .send(
            Method::POST,
            &format!("{}{HANDOFF_PATH}", two.url),
            &[(FORWARDED_BY, "edge-1"), (FLEET_SECRET, "not-the-secret")],
            r#"{"carts":[]}"#,
        )
        .await
        .expect("an answer");
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(quantity_of(one, &cart).await, 2, "no stock moved");
    assert_eq!(
        forged_put(&peer, &one.url, &cart).await.expect("an answer"),
        StatusCode::OK
    );
    assert_eq!(quantity_of(two, &cart).await, 5);

    // edge-3 drains: its carts are handed to the others over mutual TLS.
    let held: Vec<CartRef> = {
        let mut held = Vec::new();
        for i in 0..5 {
            let cart = three.create_cart(&format!("held-{i}")).await;
            let (status, body) = three.set(&cart, "BAG-1", 1).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            held.push(cart);
        }
        held
    };
    let (status, body) = three
        .call(Method::POST, "/admin/drain", Some(ADMIN_TOKEN), Value::Null)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let third = edges.pop().expect("edge-3");
    tokio::time::timeout(Duration::from_secs(30), third.stopped())
        .await
        .expect("edge-3 drains within 30 s");
    for cart in &held {
        assert_eq!(quantity_of(&edges[0], cart).await, 1, "{}", cart.id);
    }
    let report = crate::support::audit_report(
        &fleet,
        edges.iter().map(|e| e.url.clone()),
        Duration::from_secs(30),
    )
    .await;
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_connections_while_open_ones_carry_on() {
    let mut fleet = Fleet::new(&sale(&[("BAG-1", 10, 5)], -5)).await;
    let dir = fleet.dir.path().to_owned();
    let (first_ca, second_ca) = (
        TestCa::new("first").expect("CA"),
        TestCa::new("second").expect("CA"),
    );
    let first = first_ca.issue(&["127.0.0.1"]).expect("a certificate");
    let (cert, key) = write_pair(&dir, "edge", &first);
    fleet.fleet_ca = Some(write_ca(&dir, "first", &first_ca));
    let second_ca_file = write_ca(&dir, "second", &second_ca);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());

    // A fleet CA without a certificate to serve with is refused before anything starts.
    let (status, said) = EdgeProcess::refused(
        &fleet,
        "edge-1",
        "edge-1",
        &["--fleet-ca", &second_ca_file.display().to_string()],
    )
    .await;
    assert!(!status.success());
    assert!(said.contains("--tls-cert"), "{said}");

    let mut edge = EdgeProcess::start_with(
        &fleet,
        "edge-1",
        "edge-1",
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    )
    .await;
    let url = edge.client.url.clone();
    let fresh = |ca: &Path| Client::trusting(&url, Some(ca));
    let (first_file, second_file) = (fleet.fleet_ca.clone().expect("CA"), second_ca_file);
    // HTTPS only: plain HTTP gets no answer.
    let plain = Client::new(&url.replace("https://", "http://"));
    let answer = plain.try_send(Method::GET, "/healthz", None, &[], "").await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(!fresh(&second_file).healthy().await);
    // A connection opened before the renewal, kept alive.
    let open = fresh(&first_file);
    assert!(open.healthy().await);

    // Renewed on disk with a certificate of the second CA, then SIGHUP.
    let renewed = second_ca.issue(&["127.0.0.1"]).expect("a certificate");
    write_pair(&dir, "edge", &renewed);
    signal(&edge, "-HUP");
    crate::support::eventually("the renewed certificate", Duration::from_secs(10), || {
        let client = fresh(&second_file);
        async move { client.healthy().await }
    })
    .await;
    assert!(
        !fresh(&first_file).healthy().await,
        "the old certificate is gone"
    );
    assert!(open.healthy().await, "the open connection carries on");

    // A key that does not match is logged and the certificate in use kept.
    std::fs::write(&key, &first.key_pem).expect("write");
    signal(&edge, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fresh(&second_file).healthy().await);
    let log = std::fs::read_to_string(dir.join("edge-1.log")).expect("the log");
    assert!(log.contains("keeping the certificate in use"), "{log}");

    // Changed files are read again without a signal too.
    write_pair(&dir, "edge", &first);
    crate::support::eventually(
        "the certificate read again",
        Duration::from_secs(15),
        || {
            let client = fresh(&first_file);
            async move { client.healthy().await }
        },
    )
    .await;
    signal(&edge, "-TERM");
    let exited = tokio::time::timeout(Duration::from_secs(30), edge.child.wait())
        .await
        .expect("the edge exits")
        .expect("reaped");
    assert!(exited.success(), "{exited}");
}

/// `cart-host scale` over HTTPS: its front door serves the fleet's certificate, the edges it
/// starts serve it too and forward to each other over mutual TLS, and the audit passes with the
/// fleet CA. Plain HTTP at the door gets no answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_scaler_runs_its_fleet_over_https() {
    let mut fleet = Fleet::new(&sale(&[("BAG-1", 100, 2)], -60)).await;
    let ca = TestCa::new("fleet CA").expect("a CA");
    let dir = fleet.dir.path().to_owned();
    let issued = ca
        .issue(&["127.0.0.1", "localhost"])
        .expect("a certificate");
    let (cert, key) = write_pair(&dir, "fleet", &issued);
    let ca_file = write_ca(&dir, "fleet-ca", &ca);
    fleet.fleet_ca = Some(ca_file.clone());
    let (door, base) = (crate::support::free_port(), crate::support::free_run(2));
    let _scaler = crate::scale::scaler(&fleet, door, base, SECRET)
        .args(["--min-edges", "2", "--max-edges", "2"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--fleet-ca")
        .arg(&ca_file)
        .args(crate::scale::serve_args(&fleet))
        .spawn()
        .expect("cart-host scale starts");
    let edges: Vec<String> = (1..=2)
        .map(|n| format!("https://127.0.0.1:{}", base + n))
        .collect();
    // The scaler's record says when its door sends requests to both.
    crate::support::eventually(
        "the door to see both edges ready",
        Duration::from_secs(60),
        || async {
            std::fs::read_to_string(dir.join("scale.jsonl"))
                .unwrap_or_default()
                .lines()
                .last()
                .is_some_and(|l| l.contains(r#""ready":2"#))
        },
    )
    .await;

    // Through the door, carts land on both edges; each is read back through the door, half of
    // them forwarded from the other edge.
    let shop = Client::trusting(&format!("https://127.0.0.1:{door}"), Some(&ca_file));
    let mut on = std::collections::BTreeSet::new();
    let mut carts = Vec::new();
    for i in 0..6 {
        carts.push(shop.create_cart(&format!("shopper-{i}")).await);
    }
    for cart in &carts {
        assert_eq!(shop.set(cart, "BAG-1", 1).await.0, StatusCode::OK);
        for _ in 0..2 {
            let (status, body) = shop.get_cart(cart).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["lines"][0]["quantity"], 1, "{body}");
            on.insert(body["edge_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        on.len(),
        2,
        "carts on {on:?}; the scaler's record:\n{}",
        std::fs::read_to_string(dir.join("scale.jsonl")).unwrap_or_default()
    );
    let plain = Client::new(&format!("http://127.0.0.1:{door}"));
    let answer = plain.try_send(Method::GET, "/readyz", None, &[], "").await;
    assert!(
        answer.is_err(),
        "plain HTTP answered: {:?}",
        answer.map(|r| r.status)
    );
    crate::support::audit_passes(&fleet, edges).await;
}
