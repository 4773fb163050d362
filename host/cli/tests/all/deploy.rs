//! Deploying cart components to running edges: validation, signatures, rollback under load,
//! the rolling `deploy` command, and the active version surviving a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cart_host::commands::deploy::{self, DeployConfig};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::{
    ADMIN_TOKEN, Client, Fleet, eventually, faulty_wasm, guest_wasm, sale, smoke_fail_wasm,
};

/// The same component with a custom section appended: other bytes, another sha256, same code.
pub(crate) fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = b"cart-test-variant";
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    leb(content.len(), &mut out);
    out.extend(content);
    out
}

/// A valid component for some other world.
pub(crate) fn other_world() -> Vec<u8> {
    wat::parse_str(
        r#"(component
             (core module $m (func (export "hello") (result i32) i32.const 42))
             (core instance $i (instantiate $m))
             (func $hello (result u32) (canon lift (core func $i "hello")))
             (instance $api (export "hello" (func $hello)))
             (export "acme:greeter/api@1.0.0" (instance $api)))"#,
    )
    .expect("WAT")
}

pub(crate) async fn put_module(
    edge: &Client,
    bytes: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = edge
        .send(
            Method::PUT,
            "/admin/modules",
            Some(ADMIN_TOKEN),
            headers,
            bytes,
        )
        .await;
    (r.status, r.json().expect("JSON"))
}

pub(crate) async fn modules(edge: &Client) -> Value {
    let (status, body) = edge
        .call(
            Method::GET,
            "/admin/modules",
            Some(ADMIN_TOKEN),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_modules_are_refused_and_change_nothing() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let before = modules(&edge).await;

    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases = [
        ("random bytes", random, "not a WebAssembly component"),
        ("another world", other_world(), "flashsale:cart/rules"),
        (
            "a failing smoke call",
            std::fs::read(smoke_fail_wasm()).expect("module"),
            "smoke check",
        ),
    ];
    for (what, bytes, says) in cases {
        let (status, body) = put_module(&edge, bytes, &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
        // In words, not the parser's dump of both headers as byte arrays.
        assert!(
            !message.contains('[') && !message.contains('\n'),
            "{what}: {message}"
        );
        assert_eq!(
            modules(&edge).await,
            before,
            "{what} changed the edge's modules"
        );
    }
    // The smoke check left no trace in the edge's data.
    let status = edge.status().await;
    assert_eq!(status["skus"]["BAG-1"]["held"], 0);
    assert_eq!(status["skus"]["BAG-1"]["sold"], 0);
    assert_eq!(status["outbox_backlog"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_got_in_costs_one_request_per_fault() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let mut config = fleet.config("edge-a");
    config.sandbox.deadline = Duration::from_millis(200);
    config.sandbox.memory_bytes = 8 << 20;
    let edge = fleet.edge_with(config).await;
    // The faulty module passes the smoke call: its faults hide behind magic quantities.
    let faulty = std::fs::read(faulty_wasm()).expect("module");
    let (status, body) = put_module(&edge, faulty, &[("x-module-version", "faulty")]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cart = edge.create_cart("c").await;
    for (magic, what) in [(13, "trap"), (14, "endless loop"), (15, "endless growth")] {
        let (status, body) = edge.set(&cart, "BAG-1", magic).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}: {body}");
        assert_eq!(body["error"]["code"], "guest_fault", "{what}");
        assert!(edge.healthy().await, "{what}");
        assert_eq!(
            edge.set(&cart, "BAG-1", 1).await.0,
            StatusCode::OK,
            "after the {what}"
        );
    }
    // Roll back to the module the edge started with.
    let first = modules(&edge).await["modules"][0]["version"]
        .as_str()
        .expect("v")
        .to_owned();
    let (status, _) = edge
        .call(
            Method::POST,
            &format!("/admin/modules/{first}/activate"),
            Some(ADMIN_TOKEN),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = edge.set(&cart, "BAG-1", 13).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the real rules hold 13 units: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn five_deploys_and_two_rollbacks_while_shoppers_update_at_full_speed() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 1_000_000, 10_000)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let initial = modules(&edge).await["active"]
        .as_str()
        .expect("active")
        .to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers: Vec<_> = (0..8)
        .map(|i| {
            let (edge, stop) = (edge.client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let cart = edge.create_cart(&format!("s-{i}")).await;
                let path = format!("/v1/carts/{}/items/BAG-1", cart.id);
                let mut seen = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = format!(r#"{{"quantity": {}}}"#, 1 + n % 3);
                    let r = edge
                        .try_send(Method::PUT, &path, Some(&cart.token), &[], body)
                        .await
                        .expect("every request is answered");
                    assert_eq!(
                        r.status,
                        StatusCode::OK,
                        "{}",
                        String::from_utf8_lossy(&r.body)
                    );
                    let versions: Vec<_> = r.headers.get_all("x-module-version").iter().collect();
                    assert_eq!(versions.len(), 1, "one module answered each request");
                    seen.push(versions[0].to_str().expect("ASCII").to_owned());
                }
                seen
            })
        })
        .collect();

    let original = std::fs::read(guest_wasm()).expect("module");
    let mut expected = vec![initial.clone()];
    let wait_for = |version: String| {
        let edge = edge.client.clone();
        async move {
            eventually(
                &format!("{version} active"),
                Duration::from_secs(30),
                || {
                    let (edge, version) = (edge.clone(), version.clone());
                    async move { modules(&edge).await["active"] == version.as_str() }
                },
            )
            .await;
        }
    };
    for v in 1..=5 {
        let version = format!("v{v}");
        let bytes = variant(&original, &version);
        let (status, body) = put_module(&edge, bytes, &[("x-module-version", &version)]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        wait_for(version.clone()).await;
        expected.push(version);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for back_to in ["v2", "v4"] {
        let path = format!("/admin/modules/{back_to}/activate");
        let (status, body) = edge
            .call(Method::POST, &path, Some(ADMIN_TOKEN), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        wait_for(back_to.to_owned()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answered_by = std::collections::BTreeSet::new();
    for s in shoppers {
        for v in s.await.expect("shopper") {
            assert!(expected.contains(&v), "answered by unknown version {v}");
            answered_by.insert(v);
        }
    }
    assert!(
        answered_by.len() >= 4,
        "shoppers saw the versions change: {answered_by:?}"
    );
    let listed = modules(&edge).await;
    assert_eq!(listed["active"], "v4");
    assert_eq!(listed["modules"].as_array().map(Vec::len), Some(6));
}

/// A fixed ed25519 key pair, in the PEM forms openssl writes.
pub(crate) fn key_pair(seed: u8) -> (String, String) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8")
        .to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI");
    (private, public)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_with_a_trusted_key_takes_only_modules_it_signed() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let (private, public) = key_pair(7);
    let (stranger, _) = key_pair(9);
    let mut config = fleet.config("edge-a");
    config.trusted_keys = vec![cart_edge::modules::read_public_key(&public).expect("key")];
    let edge = fleet.edge_with(config).await;
    let bytes = variant(&std::fs::read(guest_wasm()).expect("module"), "signed");

    let (status, body) = put_module(&edge, bytes.clone(), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "unsigned: {body}");
    let wrong = deploy::sign(&stranger, &bytes).expect("sign");
    let (status, body) = put_module(&edge, bytes.clone(), &[("x-module-signature", &wrong)]).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "wrongly signed: {body}"
    );
    let (status, body) = put_module(
        &edge,
        bytes.clone(),
        &[("x-module-signature", "not base64!")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "garbage signature: {body}"
    );
    let right = deploy::sign(&private, &bytes).expect("sign");
    let (status, body) = put_module(&edge, bytes, &[("x-module-signature", &right)]).await;
    assert_eq!(status, StatusCode::CREATED, "signed: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_command_rolls_edge_by_edge_and_stops_at_the_first_failure() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let (private, public) = key_pair(3);
    let a = fleet.edge("edge-a").await;
    let mut config = fleet.config("edge-b");
    config.trusted_keys = vec![cart_edge::modules::read_public_key(&public).expect("key")];
    let b = fleet.edge_with(config).await;
    let c = fleet.edge("edge-c").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("cart.wasm");
    std::fs::write(
        &module,
        variant(&std::fs::read(guest_wasm()).expect("module"), "rolled"),
    )
    .expect("write");
    let before_c = modules(&c).await["active"].clone();
    let mut config = DeployConfig {
        module,
        edges: vec![a.url.clone(), b.url.clone(), c.url.clone()],
        admin_token: Some(ADMIN_TOKEN.into()),
        signing_key: None,
        version: Some("rolled-1".into()),
        fleet_ca: None,
        progress: false,
    };

    // Unsigned: edge-a takes it, edge-b refuses, edge-c is never touched.
    let report = deploy::run(&config).await.expect("deploy runs");
    assert!(!report.succeeded(), "{report}");
    assert_eq!(report.updated, vec![a.url.clone()]);
    assert_eq!(
        report.failed.as_ref().map(|f| f.0.clone()),
        Some(b.url.clone())
    );
    assert_eq!(report.running[0].1, "rolled-1", "{report}");
    assert_ne!(report.running[1].1, "rolled-1", "{report}");
    assert_eq!(modules(&c).await["active"], before_c);

    // Signed: every edge, in order.
    let key = dir.path().join("signing.pem");
    std::fs::write(&key, private).expect("write key");
    config.signing_key = Some(key);
    let report = deploy::run(&config).await.expect("deploy runs");
    assert!(report.succeeded(), "{report}");
    assert!(
        report.running.iter().all(|(_, v)| v == "rolled-1"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_active_version_survives_a_restart() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    let bytes = variant(&std::fs::read(guest_wasm()).expect("module"), "kept");
    let (status, _) = put_module(&edge, bytes, &[("x-module-version", "kept-1")]).await;
    assert_eq!(status, StatusCode::CREATED);
    edge.stop().await;
    // The same data folder, the same --module: the deployed version is still the active one.
    let edge = fleet.edge("edge-a").await;
    assert_eq!(modules(&edge).await["active"], "kept-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_module_api_needs_the_operator_token() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let edge = fleet.edge("edge-a").await;
    for (method, path) in [
        (Method::GET, "/admin/modules"),
        (Method::PUT, "/admin/modules"),
        (Method::POST, "/admin/modules/v1/activate"),
    ] {
        for token in [None, Some("wrong")] {
            let r = edge.send(method.clone(), path, token, &[], "").await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
        }
    }
    let mut config = fleet.config("edge-b");
    config.admin_token = None;
    let closed = fleet.edge_with(config).await;
    let r = closed
        .send(Method::GET, "/admin/modules", Some(ADMIN_TOKEN), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// The fleet runs an unsigned module; a new edge that trusts only a signing key cannot run it.
/// It starts on its own module but is not ready (`/readyz` says why), so nothing sells under
/// other rules than the fleet's, until an operator deploys a module it can run.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_that_cannot_run_the_fleets_module_is_not_ready_until_one_is_deployed() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let a = fleet.edge("edge-a").await;
    let guest = std::fs::read(guest_wasm()).expect("module");
    let (status, body) = put_module(
        &a.client,
        variant(&guest, "fleet"),
        &[("x-module-version", "v-fleet")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (private, public) = key_pair(5);
    let mut config = fleet.config("edge-b");
    config.trusted_keys = vec![cart_edge::modules::read_public_key(&public).expect("key")];
    let b = fleet.edge_with(config).await;
    let readyz = |edge: &Client| {
        let edge = edge.clone();
        async move {
            let r = edge.send(Method::GET, "/readyz", None, &[], "").await;
            (r.status, String::from_utf8_lossy(&r.body).into_owned())
        }
    };
    let (status, why) = readyz(&b.client).await;
    println!("edge-b's /readyz: {status} {why}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{why}");
    assert!(why.contains("fleet's cart rules"), "{why}");
    assert_ne!(modules(&b.client).await["active"], "v-fleet");

    let bytes = variant(&guest, "signed-for-b");
    let signature = deploy::sign(&private, &bytes).expect("sign");
    let (status, body) = put_module(
        &b.client,
        bytes,
        &[
            ("x-module-signature", &signature),
            ("x-module-version", "v-b"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually("edge-b to be ready", Duration::from_secs(10), || async {
        readyz(&b.client).await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(readyz(&a.client).await.0, StatusCode::OK);
}

/// `cart-host activate` of a version the edges store: every edge central registered, in turn,
/// and the fleet's module recorded at central; a version one edge lacks stops the roll-out
/// there, the edges before it changed and the ones after it not.
#[tokio::test(flavor = "multi_thread")]
async fn activate_rolls_a_stored_version_across_the_registered_fleet() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 50)], -60)).await;
    let edges = [
        fleet.edge("edge-a").await,
        fleet.edge("edge-b").await,
        fleet.edge("edge-c").await,
    ];
    let before = modules(&edges[0].client).await["active"]
        .as_str()
        .expect("a version")
        .to_owned();
    let guest = std::fs::read(guest_wasm()).expect("module");
    for (i, edge) in edges.iter().enumerate() {
        let (status, body) = put_module(
            &edge.client,
            variant(&guest, "newer"),
            &[("x-module-version", "newer")],
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // Edges a and b also store a version that edge c lacks.
        if i < 2 {
            put_module(
                &edge.client,
                variant(&guest, "ab"),
                &[("x-module-version", "v-ab")],
            )
            .await;
            put_module(
                &edge.client,
                variant(&guest, "newer"),
                &[("x-module-version", "newer")],
            )
            .await;
        }
        assert_eq!(modules(&edge.client).await["active"], "newer");
    }
    let token = fleet.dir.path().join("admin-token");
    std::fs::write(&token, ADMIN_TOKEN).expect("token");
    let activate = |version: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
            .args([
                "activate",
                "--version",
                version,
                "--central",
                &fleet.central_url,
            ])
            .arg("--admin-token-file")
            .arg(&token)
            .env("CART_LOG", "warn")
            .output()
            .expect("cart-host runs");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            said + &String::from_utf8_lossy(&out.stderr),
        )
    };

    // Rolled back on all three, and recorded as the fleet's for edges that join.
    let (ok, said) = activate(&before);
    assert!(ok, "{said}");
    assert!(said.contains("active on all 3 edge(s)"), "{said}");
    for edge in &edges {
        assert_eq!(
            modules(&edge.client).await["active"],
            before.as_str(),
            "{said}"
        );
    }
    let central = fleet.central().await;
    let recorded = central
        .fleet_module_id()
        .await
        .expect("central")
        .expect("one");
    assert_eq!(recorded.0, before);

    // v-ab: edges a and b, then a stop at edge c, which does not store it.
    let (ok, said) = activate("v-ab");
    assert!(!ok, "{said}");
    let c = &edges[2].client.url;
    assert!(
        said.contains(&format!("stopped at {c} after 2 edge(s)")),
        "{said}"
    );
    let active: Vec<Value> = [
        modules(&edges[0].client).await,
        modules(&edges[1].client).await,
        modules(&edges[2].client).await,
    ]
    .iter()
    .map(|m| m["active"].clone())
    .collect();
    assert_eq!(active, ["v-ab", "v-ab", before.as_str()], "{said}");
}
