//! A worked example of cart rules of one's own: when few units are left at the edge, a new hold
//! lasts two minutes at most, whatever the sale's hold time, so that units a shopper does not
//! buy come back to the others sooner; with plenty left, the sale's hold time. Only what the
//! request carries decides: the units free at this edge and the time.
//!
//! Everything else is the default rules (`guest/cart/src/rules.rs`, included by path). A crate
//! that `cart-host rules new` writes has the default rules written out instead; the change
//! below goes where its `set_quantity` places a fresh hold.

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

/// Units free at the edge below which a new hold is short.
const SCARCE: u32 = 10;
/// How long a new hold lasts then.
const SHORT_HOLD_MS: i64 = 120_000;

struct ScarceHolds;

impl Guest for ScarceHolds {
    fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
        let scarce = req.free < SCARCE;
        let (now, fresh_until) = (req.now, req.now.saturating_add(req.sku.hold_ttl_ms));
        rules::set_quantity(req).map(|line| {
            line.map(|mut l| {
                // A hold placed by this very decision (an older one keeps its expiry).
                if scarce && l.held && l.hold_expires_at == fresh_until {
                    l.hold_expires_at = fresh_until.min(now.saturating_add(SHORT_HOLD_MS));
                }
                l
            })
        })
    }

    fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
        rules::checkout(req)
    }
}

bindings::export!(ScarceHolds with_types_in bindings);
