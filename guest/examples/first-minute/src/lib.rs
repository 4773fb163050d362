//! A worked example of cart rules of one's own: in a sale's first minute, a line holds one unit
//! at most, so that the rush's first shoppers spread the stock among more of them; after that
//! minute, the fleet's default rules. Only what the request carries decides: the time and the
//! sale's start.
//!
//! Everything else is the default rules (`guest/cart/src/rules.rs`, included by path). A crate
//! that `cart-host rules new` writes has the default rules written out instead; the change
//! below goes around its `set_quantity` the same way.

extern crate alloc;

mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "cart" });
}
#[path = "../../../cart/src/rules.rs"]
mod rules;

use bindings::exports::flashsale::cart::rules::{
    CheckoutOutcome, CheckoutRequest, Guest, SetRequest,
};
use bindings::flashsale::cart::types::{CartError, Line};

/// How long after its start a sale holds one unit a line.
const FIRST_MINUTE_MS: i64 = 60_000;

struct FirstMinute;

impl Guest for FirstMinute {
    fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
        let starts = req.sku.starts_at;
        let rush = (starts..starts.saturating_add(FIRST_MINUTE_MS)).contains(&req.now);
        // What the default rules decide stands, unless it holds more than one unit in the rush:
        // then the shopper is told so as the per-customer limit is, and may hold one.
        match rules::set_quantity(req)? {
            Some(line) if rush && line.held && line.quantity > 1 => {
                Err(CartError::LimitExceeded(1))
            }
            decided => Ok(decided),
        }
    }

    fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
        rules::checkout(req)
    }
}

bindings::export!(FirstMinute with_types_in bindings);
