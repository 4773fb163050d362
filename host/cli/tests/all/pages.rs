//! The storefront and the dashboard in headless Chromium, against real edges: what a shopper and
//! an operator see and do, checked against the API and central. Screenshots of each page go to
//! `target/screenshots/`.

use std::time::{Duration, Instant};

use cart_edge::config::EdgeConfig;
use cart_edge::customer::CustomerKey;
use cart_testkit::Browser;
use fantoccini::Locator;
use fantoccini::elements::Element;
use hyper::StatusCode;
use serde_json::Value;

use crate::support::{
    ADMIN_TOKEN, CartRef, Client, Fleet, TestEdge, audit_passes, eventually, repo, sale,
};

/// Desktop and phone windows, in CSS pixels.
const DESKTOP: (u32, u32) = (1200, 1000);
const PHONE: (u32, u32) = (390, 844);
/// The dashboard, whole.
const TALL: (u32, u32) = (1200, 1500);
/// Longest wait for the page to show something.
const SHOWS_WITHIN: Duration = Duration::from_secs(15);

/// A browser on one page.
struct Page {
    browser: Browser,
}

impl Page {
    async fn open(url: &str, (width, height): (u32, u32)) -> Self {
        let browser = Browser::open(width, height).await.expect("Chromium opens");
        browser.client.goto(url).await.expect("the page loads");
        Self { browser }
    }

    async fn reload(&self) {
        self.browser.client.refresh().await.expect("reload");
    }

    /// The element, once it is on the page.
    async fn find(&self, css: &str) -> Element {
        self.browser
            .client
            .wait()
            .at_most(SHOWS_WITHIN)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.until(&format!("{css} enabled"), || async {
            element.is_enabled().await.unwrap_or(false)
        })
        .await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Whether the element is shown.
    async fn shown(&self, css: &str) -> bool {
        self.find(css)
            .await
            .is_displayed()
            .await
            .unwrap_or_else(|e| panic!("is {css} shown: {e}"))
    }

    /// Presses Enter on whatever has the focus, as a keyboard user would.
    async fn press_enter(&self) {
        let focused = self.browser.client.active_element().await.expect("focus");
        focused.send_keys("\u{E007}").await.expect("Enter");
    }

    /// The text of the element, as shown (empty when it is hidden).
    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// What a script returns.
    async fn js(&self, script: &str) -> Value {
        self.browser
            .client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Waits until `check` holds, or fails the test saying what was awaited.
    async fn until<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(what, SHOWS_WITHIN, check).await;
    }

    async fn until_text(&self, css: &str, wanted: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if wanted(&text) {
                return text;
            }
            assert!(
                started.elapsed() < SHOWS_WITHIN,
                "{css} still shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves what the window shows as `target/screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.browser.client.screenshot().await.expect("screenshot");
        let dir = repo().join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    async fn close(self) {
        self.browser.close().await.expect("Chromium closes");
    }

    /// The cart the page keeps, as the API sees it.
    async fn cart(&self, edge: &TestEdge) -> Value {
        let kept = self
            .js("return JSON.parse(localStorage.getItem('flash-sale.cart'))")
            .await;
        let cart = CartRef {
            id: kept["cart_id"].as_str().expect("a kept cart").to_owned(),
            token: kept["cart_token"].as_str().expect("its token").to_owned(),
        };
        let (status, body) = edge.get_cart(&cart).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// A fleet of one in-process edge selling `skus` (code, units, limit) since a minute ago, with
/// its first units granted.
async fn one_edge(skus: &[(&str, u32, u32)]) -> (Fleet, TestEdge) {
    let fleet = Fleet::new(&sale(skus, -60)).await;
    let edge = fleet.edge("edge-a").await;
    eventually("the first grants", Duration::from_secs(10), || async {
        let mut granted = true;
        for (sku, units, _) in skus {
            granted &= *units == 0 || edge.available(sku).await > 0;
        }
        granted
    })
    .await;
    (fleet, edge)
}

/// The orders central has of the edge, once the audit has passed.
async fn audited_orders(fleet: &Fleet, edge: &TestEdge) -> Vec<cart_central::events::Order> {
    audit_passes(fleet, [edge.url.clone()]).await;
    let central = fleet.central().await;
    central.orders_of("edge-a").await.expect("orders")
}

fn countdown(text: &str) -> Option<u32> {
    let left = text.strip_prefix("Held for ")?;
    let (m, s) = left.split_once(':')?;
    Some(m.parse::<u32>().ok()? * 60 + s.parse::<u32>().ok()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shopper_holds_two_items_sees_them_count_down_and_checks_out_once() {
    let (fleet, edge) = one_edge(&[("BAG-1", 10, 2), ("HAT-1", 10, 5)]).await;
    let page = Page::open(&format!("{}/", edge.url), DESKTOP).await;

    page.click("#items li[data-sku='BAG-1'] button.add").await;
    page.find("#cart-lines li[data-sku='BAG-1']").await;
    page.click("#items li[data-sku='HAT-1'] button.add").await;
    page.find("#cart-lines li[data-sku='HAT-1']").await;

    // Both holds count down from the sale's ten minutes, second by second.
    let mut first = Vec::new();
    for sku in ["BAG-1", "HAT-1"] {
        let css = format!("#cart-lines li[data-sku='{sku}'] .countdown");
        let text = page.until_text(&css, |t| countdown(t).is_some()).await;
        let left = countdown(&text).expect("mm:ss");
        assert!((590..=600).contains(&left), "{sku}: {text}");
        first.push((css, left));
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    for (css, before) in &first {
        let text = page.text(css).await;
        let now = countdown(&text).expect("still counting");
        assert!(
            now < *before && now + 4 >= *before,
            "{css}: {before} then {text}"
        );
    }

    // One more hat: the page and the edge agree.
    page.click("#cart-lines li[data-sku='HAT-1'] button.plus")
        .await;
    page.until_text("#cart-lines li[data-sku='HAT-1'] .qty", |t| t == "2")
        .await;
    let cart = page.cart(&edge).await;
    let quantities: Vec<(String, i64)> = cart["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap_or("").to_owned(),
                l["quantity"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(quantities, [("BAG-1".into(), 1), ("HAT-1".into(), 2)]);
    assert!(page.text("#cart-total").await.contains("$30.00"));
    page.screenshot("storefront-cart").await;

    // A double click places one order.
    let checkout = page.find("#checkout").await;
    checkout.click().await.expect("click");
    let _ = checkout.click().await;
    page.find("#order:not([hidden])").await;
    let order_id = page.until_text("#order-id", |t| t.starts_with("o_")).await;
    // The items now say what the order holds, not what a cart holds.
    page.until_text("#items li[data-sku='HAT-1'] .in-cart", |t| {
        t == "2 in your order"
    })
    .await;
    page.screenshot("storefront-order").await;

    // A reload shows the same order: the checkout is replayed with the kept key.
    page.reload().await;
    let again = page.until_text("#order-id", |t| t.starts_with("o_")).await;
    assert_eq!(again, order_id);

    let orders = audited_orders(&fleet, &edge).await;
    assert_eq!(
        orders
            .iter()
            .map(|o| o.order_id.as_str())
            .collect::<Vec<_>>(),
        [order_id.as_str()],
        "exactly the page's order is at central"
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sold_out_and_the_limit_are_told_in_words_and_change_nothing() {
    let (_fleet, edge) = one_edge(&[("BAG-1", 10, 2), ("WATCH-7", 1, 1)]).await;
    // Another shopper holds the only watch.
    let rival = edge.create_cart("rival").await;
    let (status, body) = edge.set(&rival, "WATCH-7", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let page = Page::open(&format!("{}/", edge.url), PHONE).await;
    // What is left in the sale, not what this edge holds: the bag's 10, though the edge was
    // granted a tenth of them.
    page.until_text("#items li[data-sku='BAG-1'] .left", |t| t == "10 left")
        .await;
    // Sold out across the fleet once central counts the rival's hold: the button waits.
    page.until_text("#items li[data-sku='WATCH-7'] .left", |t| t == "Sold out")
        .await;
    assert!(
        page.js(
            "return document.querySelector(\"#items li[data-sku='WATCH-7'] button.add\").disabled"
        )
        .await
        .as_bool()
        .unwrap_or(false),
        "a sold-out item can still be added"
    );
    // A shopper whose page had not caught up yet is told in words.
    page.js("setQuantity('WATCH-7', 1)").await;
    let said = page.until_text("#message", |t| !t.is_empty()).await;
    assert!(said.ends_with("is sold out."), "{said}");
    assert!(page.shown("#cart-empty").await);

    // Two bags is the limit: a third is refused and the cart keeps two. The steps are taken
    // from the keyboard: Enter on the focused "+", which keeps the focus through each redraw.
    page.click("#items li[data-sku='BAG-1'] button.add").await;
    page.until_text("#cart-lines li[data-sku='BAG-1'] .qty", |t| t == "1")
        .await;
    let plus = "#cart-lines li[data-sku='BAG-1'] button.plus";
    page.js(&format!("document.querySelector(\"{plus}\").focus()"))
        .await;
    page.press_enter().await;
    page.until_text("#cart-lines li[data-sku='BAG-1'] .qty", |t| t == "2")
        .await;
    page.until("the focus back on +", || async {
        page.js(&format!(
            "return document.activeElement.matches(\"{plus}\")"
        ))
        .await
            == Value::Bool(true)
    })
    .await;
    page.press_enter().await;
    let said = page
        .until_text("#message", |t| t.starts_with("You can have"))
        .await;
    assert!(said.contains("at most 2 of"), "{said}");
    assert_eq!(
        page.text("#cart-lines li[data-sku='BAG-1'] .qty").await,
        "2"
    );
    let cart = page.cart(&edge).await;
    assert_eq!(cart["lines"].as_array().map(Vec::len), Some(1), "{cart}");
    assert_eq!(cart["lines"][0]["quantity"], 2, "{cart}");
    page.screenshot("storefront-phone-limit").await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lapsed_hold_is_shown_lapsed_and_checkout_refuses_it() {
    let (fleet, edge) = one_edge(&[("BAG-1", 10, 2)]).await;
    let page = Page::open(&format!("{}/", edge.url), DESKTOP).await;
    page.click("#items li[data-sku='BAG-1'] button.add").await;
    page.until_text("#cart-lines li[data-sku='BAG-1'] .countdown", |t| {
        countdown(t).is_some()
    })
    .await;

    // The edge's clock moves past the hold's ten minutes; the page learns it from the edge.
    edge.clock.advance(Duration::from_secs(601));
    page.until_text("#cart-lines li[data-sku='BAG-1'] .countdown", |t| {
        t == "Hold lapsed"
    })
    .await;
    assert!(
        page.shown("#cart-lines li[data-sku='BAG-1'].lapsed").await,
        "the line stays, marked lapsed"
    );
    page.click("#checkout").await;
    let said = page.until_text("#message", |t| !t.is_empty()).await;
    assert!(said.starts_with("Your hold on"), "{said}");
    assert!(said.contains("ran out"), "{said}");
    page.screenshot("storefront-lapsed").await;

    let cart = page.cart(&edge).await;
    assert_eq!(cart["status"], "open", "{cart}");
    let orders = audited_orders(&fleet, &edge).await;
    assert!(orders.is_empty(), "no order was placed: {orders:?}");
    page.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn before_the_sale_the_page_counts_down_to_it_and_its_buttons_wait() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], 120)).await;
    let edge = fleet.edge("edge-a").await;
    let page = Page::open(&format!("{}/", edge.url), DESKTOP).await;
    let text = page
        .until_text("#items li[data-sku='BAG-1'] .starts", |t| {
            t.starts_with("Sale starts in ")
        })
        .await;
    let left = text.trim_start_matches("Sale starts in ");
    assert!(left.starts_with("1:5") || left == "2:00", "{text}");
    let add = page.find("#items li[data-sku='BAG-1'] button.add").await;
    assert!(
        !add.is_enabled().await.expect("enabled?"),
        "Add waits for the sale"
    );
    assert!(
        page.text("#sale-state")
            .await
            .starts_with("Next sale starts in")
    );
    page.screenshot("storefront-before-the-sale").await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_that_signs_in_its_shoppers_is_told_so_without_a_cart_made() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let storefront = crate::customers::Storefront::new(7);
    let key = CustomerKey::from_pem(storefront.public_pem.as_bytes()).expect("a public key");
    let edge = fleet
        .edge_with(EdgeConfig {
            customer_key: Some(std::sync::Arc::new(key)),
            ..fleet.config("edge-a")
        })
        .await;
    let page = Page::open(&format!("{}/", edge.url), DESKTOP).await;
    page.click("#items li[data-sku='BAG-1'] button.add").await;
    let said = page.until_text("#message", |t| !t.is_empty()).await;
    assert!(said.contains("sign in"), "{said}");
    let kept = page
        .js("return localStorage.getItem('flash-sale.cart')")
        .await;
    assert_eq!(kept, Value::Null, "no cart is kept");
    assert!(page.shown("#cart-empty").await);
    page.close().await;
}

/// Shoppers on both edges for `for_how_long`: each new cart holds one or two of a SKU.
async fn small_load(edges: [crate::support::Client; 2], for_how_long: Duration) -> usize {
    let until = Instant::now() + for_how_long;
    let mut updates = 0;
    let mut i = 0usize;
    while Instant::now() < until {
        let edge = &edges[i % 2];
        let cart = edge.create_cart(&format!("load-{i}")).await;
        let sku = ["BAG-1", "HAT-1"][i % 2];
        let (status, _) = edge.set(&cart, sku, 1 + (i % 2) as i64).await;
        updates += usize::from(status == StatusCode::OK);
        if i.is_multiple_of(3) {
            edge.checkout(&cart, &format!("k-{i}")).await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    updates
}

/// What the dashboard's stock table shows for a SKU at an edge: free, held, sold.
async fn shown_units(page: &Page, sku: &str, edge_id: &str) -> Option<[u64; 3]> {
    let css = format!("#stock tr[data-sku='{sku}'] td.units[data-edge='{edge_id}']");
    let text = page.text(&css).await;
    let parts: Vec<u64> = text
        .split(" / ")
        .filter_map(|n| n.trim().replace(',', "").parse().ok())
        .collect();
    <[u64; 3]>::try_from(parts).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_fleet_as_its_edges_count_it_and_charts_the_rush() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 400, 2), ("HAT-1", 400, 2)], -60)).await;
    let (a, b) = (fleet.edge("edge-a").await, fleet.edge("edge-b").await);
    let page = Page::open(&format!("{}/admin/", a.url), TALL).await;

    // A wrong token is refused and shows nothing.
    page.find("#token")
        .await
        .send_keys("not-the-token")
        .await
        .expect("typing");
    page.click("#login button[type='submit']").await;
    let said = page
        .until_text("#dash-state", |t| t.contains("refused"))
        .await;
    assert!(said.starts_with("That token was refused"), "{said}");
    assert!(!page.shown("#board").await);

    page.find("#token")
        .await
        .send_keys(ADMIN_TOKEN)
        .await
        .expect("typing");
    page.click("#login button[type='submit']").await;
    page.until("both edges listed as serving", || async {
        let states = page
            .js("return [...document.querySelectorAll('#edges td.state')].map(td => td.textContent)")
            .await;
        states == serde_json::json!(["serving", "serving"])
    })
    .await;

    assert!(!page.shown("#login").await, "the token is asked for once");

    // A small load run: the charts move while it lasts.
    let load = tokio::spawn(small_load(
        [a.client.clone(), b.client.clone()],
        Duration::from_secs(8),
    ));
    let sell_chart = "return document.querySelector('#sell-chart canvas').toDataURL()";
    let before = page.js(sell_chart).await;
    let sold_share =
        "return JSON.parse(document.querySelector('#sell-chart').dataset.last || '{}')";
    page.until("cart updates charted for both edges", || async {
        let charted = page
            .js("return [...document.querySelectorAll('#edge-charts .chart')].map(c => Number(c.dataset.updates))")
            .await;
        charted.as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|n| n.as_u64() > Some(0)))
    })
    .await;
    page.until("the sell-through chart rising and redrawn", || async {
        let shares = page.js(sold_share).await;
        let rising = ["BAG-1", "HAT-1"]
            .iter()
            .all(|sku| shares[sku].as_f64().is_some_and(|share| share > 0.0));
        rising && page.js(sell_chart).await != before
    })
    .await;
    // Its time axis reads as a clock, on whole seconds.
    let ticks = page.js("return charts.sell.axes[0]._values").await;
    let ticks: Vec<&str> = ticks
        .as_array()
        .expect("the time axis's labels")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        !ticks.is_empty()
            && ticks.iter().all(|t| {
                t.len() == 8
                    && t.bytes().enumerate().all(|(i, b)| {
                        if i % 3 == 2 {
                            b == b':'
                        } else {
                            b.is_ascii_digit()
                        }
                    })
            }),
        "{ticks:?}"
    );
    page.until("updates per second shown", || async {
        let rate = page.text("#edges tr[data-edge='edge-a'] td.rate").await;
        rate.parse::<u64>().is_ok_and(|n| n > 0)
    })
    .await;
    let updates = load.await.expect("load");
    assert!(updates > 20, "the load made only {updates} updates");

    // Once it is quiet, the table says what each edge's /admin/status and central say.
    let edges = [("edge-a", &a), ("edge-b", &b)];
    let central = fleet.central().await;
    page.until(
        "the stock table equal to /admin/status and central",
        || async {
            let snapshot = central.snapshot().await.expect("central's snapshot");
            for sku in ["BAG-1", "HAT-1"] {
                let mut sold = 0;
                for (edge_id, edge) in edges {
                    let units = &edge.status().await["skus"][sku];
                    let wanted =
                        ["free", "held", "sold"].map(|k| units[k].as_u64().unwrap_or(u64::MAX));
                    sold += wanted[2];
                    if shown_units(&page, sku, edge_id).await != Some(wanted) {
                        return false;
                    }
                }
                // The chart: central's orders, from the sale's start, equal to the edges' count.
                let shares = page.js(sold_share).await;
                if shares[sku].as_f64() != Some(100.0 * sold as f64 / 400.0) {
                    return false;
                }
                let unallocated = crate::support::ledger(&snapshot, sku).unallocated;
                let wanted = [
                    ("stock-total", "400".to_owned()),
                    ("sold", sold.to_string()),
                    ("unallocated", unallocated.to_string()),
                ];
                for (cell, value) in wanted {
                    let css = format!("#stock tr[data-sku='{sku}'] td.{cell}");
                    if page.text(&css).await.replace(',', "") != value {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    let charted = central
        .sell_through(300)
        .await
        .expect("central's sell-through");
    let from = page
        .js("return Number(document.querySelector('#sell-chart').dataset.from)")
        .await;
    assert_eq!(
        from.as_f64(),
        Some(charted[0].starts_at as f64 / 1000.0),
        "the chart starts at the sale's start"
    );
    page.screenshot("dashboard").await;
    page.close().await;
}

/// `cart-host demo`, as `make run` starts it: the README's pictures of both pages. A shopper
/// holds two of the demo's items; after a small load through both demo edges, the dashboard
/// shows the sale from its start. Saved as `target/screenshots/readme-*.png`; `make
/// screenshots` copies them to where the README shows them.
#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_pictures_are_of_the_demo() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = crate::support::demo_port();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["demo", "--port", &port.to_string(), "--data"])
        .arg(data.path())
        .args(["--create-rate", "0"])
        .env("CART_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cart-host demo starts");
    let edges = [port, port + 1].map(|p| Client::new(&format!("http://127.0.0.1:{p}")));
    for edge in &edges {
        eventually("the demo to serve", Duration::from_secs(60), || {
            let edge = edge.clone();
            async move { edge.healthy().await && edge.available("BAG-1").await > 0 }
        })
        .await;
    }

    let shop = Page::open(&format!("http://127.0.0.1:{port}/"), DESKTOP).await;
    for sku in ["BAG-1", "WATCH-7"] {
        shop.click(&format!("#items li[data-sku='{sku}'] button.add"))
            .await;
        shop.find(&format!("#cart-lines li[data-sku='{sku}']"))
            .await;
    }
    shop.until_text("#cart-lines li[data-sku='WATCH-7'] .countdown", |t| {
        countdown(t).is_some()
    })
    .await;
    shop.screenshot("readme-storefront").await;
    shop.close().await;

    let load = tokio::spawn(demo_load(edges.clone(), Duration::from_secs(6)));
    let dashboard = Page::open(&format!("http://127.0.0.1:{port}/admin/"), TALL).await;
    let token = std::fs::read_to_string(data.path().join("admin-token")).expect("admin token");
    dashboard
        .find("#token")
        .await
        .send_keys(token.trim())
        .await
        .expect("typing");
    dashboard.click("#login button[type='submit']").await;
    assert!(load.await.expect("load") > 20, "the load was served");
    let sold_share =
        "return JSON.parse(document.querySelector('#sell-chart').dataset.last || '{}')";
    dashboard
        .until("every demo item charted as selling", || async {
            let shares = dashboard.js(sold_share).await;
            ["BAG-1", "SNEAKER-42", "WATCH-7"]
                .iter()
                .all(|sku| shares[sku].as_f64().is_some_and(|share| share > 0.0))
        })
        .await;
    dashboard.screenshot("readme-dashboard").await;
    dashboard.close().await;
    demo.start_kill().expect("stop the demo");
}

/// Shoppers of the demo's three items through both of its edges for `for_how_long`, each
/// checking out; how many updates were served.
async fn demo_load(edges: [Client; 2], for_how_long: Duration) -> usize {
    let until = Instant::now() + for_how_long;
    let (mut updates, mut i) = (0, 0usize);
    while Instant::now() < until {
        let edge = &edges[i % 2];
        let cart = edge.create_cart(&format!("shopper-{i}")).await;
        let sku = ["BAG-1", "SNEAKER-42", "WATCH-7"][i % 3];
        let (status, _) = edge.set(&cart, sku, 1).await;
        updates += usize::from(status == StatusCode::OK);
        if status == StatusCode::OK && i % 4 != 3 {
            edge.checkout(&cart, &format!("k-{i}")).await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    updates
}
