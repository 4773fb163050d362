//! What the central tests share.

use cart_central::events::EventKey;
use cart_central::sale::Sale;
use cart_central::time::wall_ms;
use cart_central::{Central, Claim};

/// Claims `edge_id` for a new process (`<edge_id>-process`, serving `<edge_id>-history`) whose
/// lease runs `lease_ms` from now; its incarnation and key.
pub async fn claim(central: &Central, edge_id: &str, lease_ms: i64) -> (String, EventKey) {
    let key = EventKey::generate();
    let incarnation = format!("{edge_id}-process");
    central
        .claim_edge(&Claim {
            edge_id: edge_id.into(),
            url: format!("http://{edge_id}.invalid"),
            history_id: format!("{edge_id}-history"),
            incarnation: incarnation.clone(),
            previous_incarnation: None,
            local_seq: 0,
            lease_ms,
            take_over: false,
            taking_over: false,
            folder: String::new(),
            public_key: key.public_key(),
        })
        .await
        .expect("claimed");
    (incarnation, key)
}

/// Loads the sale `sale`, on for the next hour, of `stock` units of one SKU, `BAG`.
#[allow(
    dead_code,
    reason = "each test binary compiles this module, and not every one sells"
)]
pub async fn load_bags(central: &Central, stock: u32) {
    let now = wall_ms();
    let sale = Sale::parse(
        &serde_json::json!({
            "sale_id": "sale",
            "starts_at": cart_central::time::rfc3339(now - 60_000),
            "ends_at": cart_central::time::rfc3339(now + 3_600_000),
            "hold_ttl_seconds": 600,
            "skus": [{"sku": "BAG", "name": "bag", "price_cents": 100, "stock": stock,
                      "limit_per_customer": 5}],
        })
        .to_string(),
    )
    .expect("a sale");
    central.load_sale(&sale).await.expect("loaded");
}
