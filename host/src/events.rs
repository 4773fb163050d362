//! Outbox events as stored on the edge and applied by central: JSON, one object per event.

use serde::{Deserialize, Serialize};

use crate::bindings::{self, Event};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxEvent {
    /// The held quantity of a SKU in a cart is now `quantity` (0: released).
    HoldChanged {
        cart_id: String,
        customer_id: String,
        sku: String,
        quantity: u32,
        expires_at: i64,
    },
    /// A cart became an order; its holds are now sales.
    OrderPlaced {
        order_id: String,
        cart_id: String,
        customer_id: String,
        lines: Vec<EventLine>,
        total_cents: i64,
        placed_at: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

impl OutboxEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HoldChanged { .. } => "hold_changed",
            Self::OrderPlaced { .. } => "order_placed",
        }
    }
}

impl From<Event> for OutboxEvent {
    fn from(e: Event) -> Self {
        match e {
            Event::HoldChanged(h) => Self::HoldChanged {
                cart_id: h.cart_id,
                customer_id: h.customer_id,
                sku: h.sku,
                quantity: h.quantity,
                expires_at: h.expires_at,
            },
            Event::OrderPlaced(o) => Self::OrderPlaced {
                order_id: o.order_id,
                cart_id: o.cart_id,
                customer_id: o.customer_id,
                lines: o.lines.into_iter().map(EventLine::from).collect(),
                total_cents: o.total_cents,
                placed_at: o.placed_at,
            },
        }
    }
}

impl From<bindings::OrderLine> for EventLine {
    fn from(l: bindings::OrderLine) -> Self {
        Self {
            sku: l.sku,
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
        }
    }
}

/// One outbox row on its way to central.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: i64,
    pub event: OutboxEvent,
}
