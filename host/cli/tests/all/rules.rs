//! Writing one's own cart rules: `rules new`, changed as an author would, built with cargo for
//! wasm32-wasip2 as its README says, checked with `rules check`, and deployed to a running edge
//! that then decides with it; `rules check` refuses what a deploy refuses, in the same words.

use std::path::{Path, PathBuf};

use cart_central::time::{parse_rfc3339, wall_ms};
use hyper::StatusCode;

use crate::deploy::{other_world, put_module};
use crate::support::{Fleet, sale, smoke_fail_wasm};

/// `cart-host` with `args`: whether it succeeded, and what it printed.
async fn cart_host(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(args)
        .output()
        .await
        .expect("cart-host runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// `rules check` of `module`.
async fn check(module: &Path) -> (bool, String) {
    cart_host(&["rules".as_ref(), "check".as_ref(), module.as_ref()]).await
}

/// `rules diff OLD NEW`: whether they decided alike, and the report.
async fn diff(old: &Path, new: &Path) -> (bool, String) {
    cart_host(&[
        "rules".as_ref(),
        "diff".as_ref(),
        old.as_ref(),
        new.as_ref(),
    ])
    .await
}

/// Builds the crate in `dir` as its README says, in a target folder of its own beside this
/// workspace's (so that a second run reuses it); the module's path.
async fn build(dir: &Path, lib: &str) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/rules-new");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = tokio::process::Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .await
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the new crate builds: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join(format!("wasm32-wasip2/release/{lib}.wasm"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_rules_crate_builds_checks_and_decides_on_a_running_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("Gift Rules");
    let new = || async { cart_host(&["rules".as_ref(), "new".as_ref(), crate_dir.as_ref()]).await };
    let (ok, said) = new().await;
    assert!(ok, "{said}");
    assert!(said.contains("gift_rules.wasm"), "{said}");
    let lib_rs = crate_dir.join("src/lib.rs");
    let default_rules = std::fs::read_to_string(&lib_rs).expect("src/lib.rs");
    // Never over a folder that exists.
    let (ok, said) = new().await;
    assert!(!ok && said.contains("exists"), "{said}");
    assert_eq!(
        std::fs::read_to_string(&lib_rs).expect("src/lib.rs"),
        default_rules
    );

    // As written, the new crate decides as the shipped rules do.
    let template = build(&crate_dir, "gift_rules").await;
    let template_copy = dir.path().join("template.wasm");
    std::fs::copy(&template, &template_copy).expect("a copy of the module");
    let shipped = crate::support::guest_wasm();
    let (same, said) = diff(&shipped, &template_copy).await;
    assert!(same && said.contains(": 0 decided differently"), "{said}");
    let cases = crate_dir.join("cases.json");
    let test_cases = |module: PathBuf| {
        let cases = cases.clone();
        async move {
            let args = ["rules", "test", "--requests", "100", "--cases"];
            let mut args: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
            args.push(cases.as_ref());
            args.push(module.as_ref());
            cart_host(&args).await
        }
    };
    let (ok, said) = test_cases(template_copy.clone()).await;
    assert!(ok && !said.contains("FAILED"), "{said}");

    // The author's change: holds of a minute at most, whatever the sale's hold time.
    let fresh_hold = "hold_expires_at: now.saturating_add(sku.hold_ttl_ms),";
    assert!(default_rules.contains(fresh_hold), "{default_rules}");
    let minute = default_rules.replace(
        fresh_hold,
        "hold_expires_at: now.saturating_add(sku.hold_ttl_ms.min(60_000)),",
    );
    std::fs::write(&lib_rs, minute).expect("the change");
    let module = build(&crate_dir, "gift_rules").await;
    let (ok, said) = check(&module).await;
    assert!(ok && said.contains("an edge would take it"), "{said}");
    // The written cases say what the change changes: a hold of the sale's hold time.
    let (ok, said) = test_cases(module.clone()).await;
    let failed: Vec<_> = said.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(
        !ok && failed.len() == 1 && failed[0].contains("for the sale's hold time"),
        "{said}"
    );
    // What the change changes, and only that: some holds, shorter.
    let (same, said) = diff(&template_copy, &module).await;
    assert!(!same, "{said}");
    let kinds: Vec<_> = said.lines().filter(|l| l.contains(" × ")).collect();
    assert!(
        kinds.len() == 1
            && kinds[0].ends_with("× set-quantity: hold either way, differing in detail"),
        "{said}"
    );

    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-1").await;
    let bytes = std::fs::read(&module).expect("the module");
    let (status, body) = put_module(&edge, bytes, &[("x-module-version", "gift-1")]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cart = edge.create_cart("gift-shopper").await;
    let (status, body) = edge.set(&cart, "BAG-1", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expires = body["lines"][0]["hold_expires_at"]
        .as_str()
        .and_then(parse_rfc3339)
        .expect("a hold's expiry");
    // The sale's holds last ten minutes; the author's a minute.
    let left = expires - wall_ms();
    assert!((0..=60_000).contains(&left), "{left} ms: {body}");
}

/// What a deploy refuses, `rules check` refuses, saying the same.
#[tokio::test(flavor = "multi_thread")]
async fn rules_check_refuses_what_a_deploy_refuses_in_the_same_words() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("not WebAssembly", b"plain text, not a module".to_vec()),
        ("another world", other_world()),
        (
            "a failing smoke call",
            std::fs::read(smoke_fail_wasm()).expect("module"),
        ),
    ];
    for (what, bytes) in cases {
        let file = dir.path().join(format!("{what}.wasm"));
        std::fs::write(&file, &bytes).expect("module file");
        let (status, body) = put_module(&edge, bytes, &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        let edge_says = body["error"]["message"].as_str().expect("a message");
        let (ok, said) = check(&file).await;
        assert!(!ok, "{what}: {said}");
        assert!(said.contains(edge_says), "{what}: {said} / {edge_says}");
    }
}

/// Changes to the default rules, each breaking one rule `rules test` holds modules to: the rule,
/// the text replaced and its replacement in `src/lib.rs`.
const BREAKS: &[(&str, &str, &str)] = &[
    (
        "no-fault",
        "if req.quantity > MAX_QUANTITY {",
        "if req.quantity == 3 { panic!(\"three\") }\n        if req.quantity > MAX_QUANTITY {",
    ),
    (
        "free",
        "if needed > req.free {",
        "if needed > req.free + 1 {",
    ),
    (
        "limit",
        "if wanted > u64::from(sku.limit_per_customer) {",
        "if wanted > u64::from(sku.limit_per_customer) + 1 {",
    ),
    (
        "closed",
        "if req.status != CartStatus::Open {\n            return Err(CartError::CartClosed);",
        "if req.status == CartStatus::Open && req.quantity == u32::MAX {\n            return Err(CartError::CartClosed);",
    ),
    (
        "line",
        "unit_price_cents: sku.price_cents,",
        "unit_price_cents: -sku.price_cents,",
    ),
    (
        "sold-out",
        "req.free.saturating_add(reserved.saturating_sub(holding)),",
        "req.free.saturating_add(reserved) + 1,",
    ),
    (
        "place",
        "if req.lines.is_empty() {",
        "if req.lines.is_empty() && req.idempotency_key.is_empty() {",
    ),
    (
        "replay",
        "if req.status == CartStatus::CheckedOut {",
        "if req.idempotency_key == \"key-2\" {\n            return Ok(CheckoutOutcome::Replay);\n        }\n        if req.status == CartStatus::CheckedOut {",
    ),
    (
        "hold-expired",
        ".map(|l| l.sku.clone())",
        ".map(|l| format!(\"{}-elsewhere\", l.sku))",
    ),
];

/// `rules test` passes the shipped rules and the `rules new` crate as written, and finds each
/// rule broken in a module built to break it, showing a request that breaks it.
#[tokio::test(flavor = "multi_thread")]
async fn rules_test_passes_the_default_rules_and_finds_each_broken_rule() {
    let test = |module: PathBuf| async move {
        cart_host(&["rules".as_ref(), "test".as_ref(), module.as_ref()]).await
    };
    let (ok, said) = test(crate::support::guest_wasm()).await;
    assert!(ok && !said.contains("BROKEN"), "{said}");
    // The test kit's faulty module traps, loops, grows and holds too much at four quantities.
    let (ok, said) = test(crate::support::faulty_wasm()).await;
    assert!(!ok, "{said}");
    for rule in ["no-fault", "free"] {
        assert!(said.contains(&format!("BROKEN  {rule}:")), "{said}");
    }
    // The same findings as JSON, each request as a case file writes it: one that breaks
    // "free" holds more than is free.
    let faulty = crate::support::faulty_wasm();
    let (ok, said) = cart_host(&[
        "rules".as_ref(),
        "test".as_ref(),
        faulty.as_ref(),
        "--json".as_ref(),
    ])
    .await;
    let report: serde_json::Value = serde_json::from_str(&said).expect("JSON");
    assert!(!ok && report["passed"] == false, "{said}");
    let free = report["invariants"]["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == "free"))
        .expect("the rule free");
    let set = &free["broken"]["request"]["set_quantity"];
    let free_units = set["free"].as_u64().unwrap_or(100);
    let held = free["broken"]["decided"]["line"]["quantity"].as_u64();
    assert!(
        free["held"] == false && held.is_some_and(|q| q > free_units),
        "{said}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("breaking");
    let (ok, said) = cart_host(&["rules".as_ref(), "new".as_ref(), crate_dir.as_ref()]).await;
    assert!(ok, "{said}");
    let lib_rs = crate_dir.join("src/lib.rs");
    let rules = std::fs::read_to_string(&lib_rs).expect("src/lib.rs");
    let (ok, said) = test(build(&crate_dir, "breaking").await).await;
    assert!(ok && !said.contains("BROKEN"), "{said}");
    for (rule, from, to) in BREAKS {
        assert_eq!(rules.matches(from).count(), 1, "{rule}: {from}");
        std::fs::write(&lib_rs, rules.replace(from, to)).expect("the change");
        let (ok, said) = test(build(&crate_dir, "breaking").await).await;
        assert!(!ok, "{rule}: {said}");
        let broken = said
            .lines()
            .skip_while(|l| !l.starts_with(&format!("  BROKEN  {rule}:")))
            .take(3)
            .collect::<Vec<_>>();
        assert!(
            broken.len() == 3 && broken[1].contains("request:") && broken[2].contains("decided:"),
            "{rule}: {said}"
        );
    }
}

/// The worked examples (`guest/examples`) keep every rule, pass the checks a deploy makes, and
/// decide differently from the shipped rules only as they say: in a sale's first minute a hold
/// of more than one unit is refused as over the limit; with few units free a new hold is
/// shorter.
#[tokio::test(flavor = "multi_thread")]
async fn the_worked_examples_keep_every_rule_and_differ_only_as_they_say() {
    let shipped = crate::support::guest_wasm();
    for (example, difference) in [
        ("first-minute", "× set-quantity: hold → limit-exceeded"),
        (
            "scarce-holds",
            "× set-quantity: hold either way, differing in detail",
        ),
    ] {
        let module = crate::support::example_wasm(example);
        let (ok, said) = check(&module).await;
        assert!(ok, "{example}: {said}");
        let (ok, said) = cart_host(&["rules".as_ref(), "test".as_ref(), module.as_ref()]).await;
        assert!(ok && !said.contains("BROKEN"), "{example}: {said}");
        // The author's own cases: the example decides each as its file says, and the shipped
        // rules, which do not do what the example is for, fail some, each shown.
        let cases = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../guest/examples")
            .join(example)
            .join("cases.json");
        let with_cases = |module: PathBuf| {
            let cases = cases.clone();
            async move {
                cart_host(&[
                    "rules".as_ref(),
                    "test".as_ref(),
                    module.as_ref(),
                    "--cases".as_ref(),
                    cases.as_ref(),
                    "--requests".as_ref(),
                    "100".as_ref(),
                ])
                .await
            }
        };
        let (ok, said) = with_cases(module.clone()).await;
        assert!(
            ok && said.contains("  ok      ") && !said.contains("FAILED"),
            "{example}: {said}"
        );
        let (ok, said) = with_cases(shipped.clone()).await;
        assert!(
            !ok && said.contains("FAILED")
                && said.contains("expected:")
                && said.contains("decided:"),
            "the shipped rules on {example}'s cases: {said}"
        );
        let (same, said) = diff(&shipped, &module).await;
        let kinds: Vec<_> = said.lines().filter(|l| l.contains(" × ")).collect();
        assert!(
            !same && kinds.len() == 1 && kinds[0].ends_with(difference),
            "{example}: {said}"
        );
    }
}

/// `deploy --diff` shows what the new module decides differently from the fleet's (the one
/// central records), on generated requests and the edges' own, before it deploys: with `--yes` it goes on; on no terminal without it, it
/// deploys nothing and says why.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_diff_shows_the_change_against_the_fleets_module_before_it_deploys() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -60)).await;
    let edge = fleet.edge("edge-1").await;
    let token = fleet.dir.path().join("admin-token");
    std::fs::write(&token, crate::support::ADMIN_TOKEN).expect("token file");
    let deploy = |module: PathBuf, more: &'static [&'static str]| {
        let (url, central, token) = (
            edge.client.url.clone(),
            fleet.central_url.clone(),
            token.clone(),
        );
        async move {
            let mut args: Vec<std::ffi::OsString> = vec![
                "deploy".into(),
                "--module".into(),
                module.into(),
                "--edge".into(),
                url.into(),
                "--admin-token-file".into(),
                token.into(),
                "--diff".into(),
                "--central".into(),
                central.into(),
            ];
            args.extend(more.iter().map(Into::into));
            let args: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
            cart_host(&args).await
        }
    };
    let first = crate::support::example_wasm("first-minute");
    let (ok, said) = deploy(first.clone(), &["--yes"]).await;
    assert!(ok && said.contains("active on all 1 edge(s)"), "{said}");

    // Now the fleet's module is first-minute: scarce-holds is compared with it.
    let scarce = crate::support::example_wasm("scarce-holds");
    let (ok, said) = deploy(scarce.clone(), &[]).await;
    assert!(
        !ok && said.contains("decided differently") && said.contains("add --yes"),
        "{said}"
    );
    assert!(!said.contains("active on all"), "{said}");
    let (ok, said) = deploy(scarce, &["--yes"]).await;
    let recorded = format!("(recorded at {}): ", edge.client.url);
    assert!(
        ok && said.contains("the fleet's module")
            && said.contains(&recorded)
            && said.contains("× set-quantity: limit-exceeded → hold")
            && said.contains("active on all 1 edge(s)"),
        "{said}"
    );
}

/// `rules diff --edge` asks both modules the requests the edge's rules were asked most
/// recently too (as `/admin/rules/asked` gives them, with no customer, cart or key kept), and
/// is refused them without the operator token.
#[tokio::test(flavor = "multi_thread")]
async fn rules_diff_asks_the_edges_own_recent_requests_too() {
    // A sale in its first minute, where first-minute holds one unit at most.
    let fleet = Fleet::new(&sale(&[("BAG-1", 100, 5)], -20)).await;
    let edge = fleet.edge("edge-1").await;
    for n in 0..3 {
        let cart = edge.client.create_cart(&format!("shopper-{n}")).await;
        let (status, body) = edge.client.set(&cart, "BAG-1", 2).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = edge.client.checkout(&cart, "a-shoppers-own-key").await;
        assert!(status.is_success(), "{body}");
        if n == 2 {
            // A replay: a checked-out cart, its lines sold, no longer held.
            let (status, body) = edge.client.checkout(&cart, "a-shoppers-own-key").await;
            assert!(status.is_success(), "{body}");
        }
    }
    let (status, body) = edge
        .client
        .call(
            hyper::Method::GET,
            "/admin/rules/asked",
            Some(crate::support::ADMIN_TOKEN),
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Three checkouts, and a set-quantity for each cart (and again after a grant, when the
    // edge had no units yet).
    let asked = body["asked"].as_array().expect("a list");
    let checkouts: Vec<_> = asked.iter().filter_map(|a| a.get("checkout")).collect();
    assert_eq!(checkouts.len(), 4, "{body}");
    assert_eq!(checkouts[3]["status"], "checked-out", "{body}");
    assert_eq!(checkouts[3]["placed_with"], "key-1", "{body}");
    assert!(
        checkouts.iter().all(|c| c["lines"][0]["quantity"] == 2),
        "{body}"
    );
    assert!(
        asked.len() >= 6 && asked[0]["set_quantity"]["quantity"] == 2,
        "{body}"
    );
    let text = body.to_string();
    for kept in ["shopper-", "a-shoppers-own-key", &edge.client.url] {
        assert!(!text.contains(kept), "{kept}: {text}");
    }

    let token = fleet.dir.path().join("admin-token");
    std::fs::write(&token, crate::support::ADMIN_TOKEN).expect("token file");
    let (shipped, first) = (
        crate::support::guest_wasm(),
        crate::support::example_wasm("first-minute"),
    );
    let url = edge.client.url.clone();
    let diff = |token: Option<PathBuf>| {
        let (shipped, first, url) = (shipped.clone(), first.clone(), url.clone());
        async move {
            let mut args: Vec<std::ffi::OsString> = vec![
                "rules".into(),
                "diff".into(),
                shipped.into(),
                first.into(),
                "--edge".into(),
                url.into(),
                "--requests".into(),
                "100".into(),
            ];
            if let Some(token) = token {
                args.extend(["--admin-token-file".into(), token.into()]);
            }
            let args: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
            cart_host(&args).await
        }
    };
    let (ok, said) = diff(Some(token)).await;
    let recorded = format!("{} requests (recorded at {url}): ", asked.len());
    assert!(
        !ok && said.contains(&recorded)
            && !said.contains("could not be read")
            && said.contains("× set-quantity: hold → limit-exceeded"),
        "{said}"
    );
    let (ok, said) = diff(None).await;
    assert!(!ok && said.contains("401"), "{said}");
}
