//! The `cart-host` commands as a user runs them, from outside the checkout.

use std::process::Stdio;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::support::{Client, demo_port, eventually};

/// `cart-host demo` in an empty folder elsewhere, with no `--module`: the component built into
/// the binary serves the sale.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_from_any_folder_on_its_built_in_component() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let port = demo_port();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["demo", "--data", "demo-data", "--port", &port.to_string()])
        .current_dir(elsewhere.path())
        .env("CART_LOG", "warn")
        .stdout(std::fs::File::create(elsewhere.path().join("demo.out")).expect("demo.out"))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cart-host demo starts");
    let edge = Client::new(&format!("http://127.0.0.1:{port}"));
    eventually("the demo to serve", Duration::from_secs(60), || {
        let edge = edge.clone();
        async move { edge.healthy().await }
    })
    .await;
    let cart = edge.create_cart("c-42").await;
    eventually("the demo's first grant", Duration::from_secs(10), || {
        let edge = edge.clone();
        async move { edge.available("BAG-1").await > 0 }
    })
    .await;
    let (status, body) = edge.set(&cart, "BAG-1", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lines"][0]["sku"], json!("BAG-1"));
    assert!(elsewhere.path().join("demo-data/central.db").exists());
    // Its secrets are its own user's to read.
    for secret in ["admin-token", "fleet-secret"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(elsewhere.path().join("demo-data").join(secret))
            .expect(secret)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}: {mode:o}");
    }
    // The lines it prints to try paste as they are: a cart, an item, an order.
    let out = elsewhere.path().join("demo.out");
    eventually(
        "the demo to print its lines",
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&out).is_ok_and(|o| o.contains("Ctrl-C stops the demo"))
        },
    )
    .await;
    let printed = std::fs::read_to_string(&out).expect("demo.out");
    let lines: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("or try"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let tried = std::process::Command::new("bash")
        .args(["-c", &lines.join("\n")])
        .output()
        .expect("bash");
    let said = String::from_utf8_lossy(&tried.stdout);
    let stderr = String::from_utf8_lossy(&tried.stderr);
    assert!(tried.status.success(), "{said}{stderr}");
    assert!(said.contains(r#""order_id""#), "{printed}\n{said}");
    demo.start_kill().expect("stop the demo");
}

/// The README's example sale file ran on a day now past: loading it as it is would put a sale that
/// has already ended on the calendar, so it is refused with nothing loaded; `--starts-at now`
/// runs the same sale from now, for its length.
#[test]
fn an_ended_sale_is_refused_and_starts_at_now_runs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = format!("sqlite:{}", dir.path().join("central.db").display());
    let example = crate::support::repo().join("schema/examples/sale.json");
    let cart_host = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
            .arg("sale")
            .args(args)
            .args(["--central", &central])
            .output()
            .expect("cart-host sale runs")
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let refused = cart_host(&["load", example.to_str().expect("utf-8 path")]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("ended at"), "{}", text(&refused));
    let listed = cart_host(&["list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(!text(&listed).contains("noon-drop"), "{}", text(&listed));

    let loaded = cart_host(&[
        "load",
        example.to_str().expect("utf-8 path"),
        "--starts-at",
        "now",
    ]);
    assert!(loaded.status.success(), "{}", text(&loaded));
    let listed = text(&cart_host(&["list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with("noon-drop"))
        .unwrap_or_else(|| panic!("noon-drop listed:\n{listed}"));
    assert!(row.contains("running"), "{row}");
}

/// `serve --cors-origin` takes an origin as browsers send it, and nothing else.
#[test]
fn a_cors_origin_with_a_path_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args([
            "serve",
            "--data",
            "unused",
            "--edge-id",
            "e",
            "--central",
            "sqlite:unused",
        ])
        .args(["--cors-origin", "https://shop.example/cart"])
        .output()
        .expect("cart-host runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("is not an origin"), "{said}");
    assert!(!std::path::Path::new("unused").exists());
}
