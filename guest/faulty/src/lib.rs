//! A deliberately broken cart component, for the host's tests only.
//!
//! It runs the real rules (`guest/cart/src/rules.rs`, included by path), except for four magic
//! quantities in `set-quantity`:
//! - [`TRAP`]: decides the update, then panics, so the host must apply nothing;
//! - [`LOOP_FOREVER`]: never returns, so the host's epoch deadline must stop it;
//! - [`GROW_FOREVER`]: allocates until the host's memory cap refuses;
//! - [`HOLD_TOO_MUCH`]: decides a hold of more units than are free, which the host must refuse.
//!
//! Built with the `smoke-fail` feature, its checkout forgets idempotency (a replay places the
//! order again), which the host's smoke check must catch before such a module serves.

extern crate alloc;

mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "cart" });
}
#[path = "../../cart/src/rules.rs"]
mod rules;

use bindings::exports::flashsale::cart::rules::{
    CheckoutOutcome, CheckoutRequest, Guest, SetRequest,
};
use bindings::flashsale::cart::types::{CartError, CartStatus, Line};

pub const TRAP: u32 = 13;
pub const LOOP_FOREVER: u32 = 14;
pub const GROW_FOREVER: u32 = 15;
pub const HOLD_TOO_MUCH: u32 = 16;

struct Faulty;

impl Guest for Faulty {
    fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
        match req.quantity {
            TRAP => {
                let decided = rules::set_quantity(req);
                panic!("deliberate trap after deciding: {:?}", decided.is_ok());
            }
            LOOP_FOREVER => loop {
                std::hint::spin_loop();
            },
            GROW_FOREVER => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                }
            }
            HOLD_TOO_MUCH => Ok(Some(Line {
                quantity: req.free.saturating_add(1).max(HOLD_TOO_MUCH),
                unit_price_cents: req.sku.price_cents,
                hold_expires_at: req.now + req.sku.hold_ttl_ms,
                held: true,
                sku: req.sku.sku,
            })),
            _ => rules::set_quantity(req),
        }
    }

    fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
        if cfg!(feature = "smoke-fail") && req.status == CartStatus::CheckedOut {
            return Ok(CheckoutOutcome::Place);
        }
        rules::checkout(req)
    }
}

bindings::export!(Faulty with_types_in bindings);
