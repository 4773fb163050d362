//! What the central tests share.

use cart_central::events::EventKey;
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
            folder: String::new(),
            public_key: key.public_key(),
        })
        .await
        .expect("claimed");
    (incarnation, key)
}
