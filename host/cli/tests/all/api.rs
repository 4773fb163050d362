//! The OpenAPI document is a contract machines check: it validates, and Schemathesis drives a
//! live edge from it (every phase, stateful included) without one disagreement.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Client, demo_port, eventually, repo};

/// A tool `make test` installs; the test fails, saying so, when it is missing.
fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from);
    match path {
        Some(p) if p.exists() => p,
        _ => panic!("{var} does not name an installed tool: run the tests with `make test`"),
    }
}

#[test]
fn the_openapi_document_is_valid() {
    let out = std::process::Command::new(tool("CART_OPENAPI_VALIDATOR"))
        .arg(repo().join("schema/openapi.yaml"))
        .output()
        .expect("openapi-spec-validator runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_disagreement_with_a_live_edge() {
    let st = tool("CART_SCHEMATHESIS");
    let data = tempfile::tempdir().expect("tempdir");
    let port = demo_port();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["demo", "--port", &port.to_string(), "--data"])
        .arg(data.path())
        // Schemathesis sends wrong tokens on purpose, many a minute.
        .args(["--failed-logins-per-minute", "0"])
        .env("CART_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cart-host demo starts");
    let url = format!("http://127.0.0.1:{port}");
    let edge = Client::new(&url);
    eventually("the demo to serve", Duration::from_secs(60), || {
        let edge = edge.clone();
        async move { edge.healthy().await }
    })
    .await;
    let spec = repo().join("schema/openapi.yaml");
    let here = repo().join("host/cli/tests/api");
    // The storefront, with the cart tokens the document's links carry.
    let storefront = tokio::process::Command::new(&st)
        .current_dir(&here)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(&spec)
        .args([
            "--url",
            &url,
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ])
        .args(["--checks", "all", "--include-path-regex", "^/v1/"])
        .args(["-n", "60", "--max-time", "90", "--no-color"])
        .args(["--generation-database", "none"])
        .output()
        .await
        .expect("schemathesis runs");
    // The operator API, with the operator token (which would override the carts' own).
    let token = std::fs::read_to_string(data.path().join("admin-token")).expect("admin token");
    let operator = tokio::process::Command::new(&st)
        .current_dir(&here)
        .arg("run")
        .arg(&spec)
        .args([
            "--url",
            &url,
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ])
        .args([
            "--checks",
            "all",
            "--include-path-regex",
            "^/(admin|healthz|metrics)",
        ])
        // Deploying is tested on its own; a drain would end the edge under test.
        .args(["--exclude-operation-id", "deployModule"])
        .args(["--exclude-operation-id", "drainEdge"])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-n", "60", "--no-color"])
        .args(["--generation-database", "none"])
        .output()
        .await
        .expect("schemathesis runs");
    demo.start_kill().expect("stop the demo");
    for (what, out) in [("storefront", storefront), ("operator API", operator)] {
        assert!(
            out.status.success(),
            "schemathesis on the {what}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
