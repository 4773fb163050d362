//! Outbox events as stored on the edge and applied by central: JSON, one object per event.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxEvent {
    /// The held quantity of a SKU in a cart is now `quantity` (0: released).
    HoldChanged {
        cart_id: String,
        customer_id: String,
        sale_id: String,
        sku: String,
        quantity: u32,
        expires_at: i64,
    },
    /// A cart became an order; its holds are now sales.
    OrderPlaced(Order),
}

/// An order: a checked-out cart's lines, sold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub cart_id: String,
    pub customer_id: String,
    pub lines: Vec<EventLine>,
    pub total_cents: i64,
    pub placed_at: i64,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub sale_id: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

impl OutboxEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HoldChanged { .. } => "hold_changed",
            Self::OrderPlaced(_) => "order_placed",
        }
    }
}

/// One outbox row on its way to central.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: i64,
    pub event: OutboxEvent,
}
