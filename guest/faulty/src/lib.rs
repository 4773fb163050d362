//! A deliberately broken cart component, for the host's tests only.
//!
//! It runs the real rules, except for three magic quantities in `set-quantity`:
//! - [`TRAP_AFTER_WRITES`]: applies the real update (stock, line, outbox), then panics, so the host
//!   must roll back writes the guest already made;
//! - [`LOOP_FOREVER`]: never returns, so the host's epoch deadline must stop it;
//! - [`GROW_FOREVER`]: allocates until the host's memory cap refuses.
//!
//! Built with the `smoke-fail` feature, its checkout forgets idempotency (a replay places the
//! order again), which the host's smoke call must catch before such a module serves.

mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "cart" });
}
// The real rules, compiled into this component too.
#[path = "../../src/db.rs"]
mod db;
#[path = "../../src/rules.rs"]
mod rules;

use bindings::exports::flashsale::cart::cart_api::Guest;
use bindings::flashsale::cart::types::{Cart, CartError, CheckoutResult};

pub const TRAP_AFTER_WRITES: u32 = 13;
pub const LOOP_FOREVER: u32 = 14;
pub const GROW_FOREVER: u32 = 15;

struct Faulty;

impl Guest for Faulty {
    fn create_cart(
        cart_id: String,
        customer_id: String,
        token_hash: String,
    ) -> Result<Cart, CartError> {
        rules::create_cart(&cart_id, &customer_id, &token_hash)
    }

    fn get_cart(cart_id: String, token_hash: String) -> Result<Cart, CartError> {
        rules::get_cart(&cart_id, &token_hash)
    }

    fn set_quantity(
        cart_id: String,
        token_hash: String,
        sku: String,
        quantity: u32,
    ) -> Result<Cart, CartError> {
        match quantity {
            TRAP_AFTER_WRITES => {
                let applied = rules::set_quantity(&cart_id, &token_hash, &sku, quantity);
                panic!(
                    "deliberate trap after the update applied: {:?}",
                    applied.is_ok()
                );
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
            _ => rules::set_quantity(&cart_id, &token_hash, &sku, quantity),
        }
    }

    fn remove_line(cart_id: String, token_hash: String, sku: String) -> Result<Cart, CartError> {
        rules::set_quantity(&cart_id, &token_hash, &sku, 0)
    }

    fn checkout(
        cart_id: String,
        token_hash: String,
        idempotency_key: String,
    ) -> Result<CheckoutResult, CartError> {
        let done = rules::checkout(&cart_id, &token_hash, &idempotency_key);
        if cfg!(feature = "smoke-fail") {
            done.map(|d| CheckoutResult {
                replayed: false,
                ..d
            })
        } else {
            done
        }
    }

    fn sweep(now: i64) -> u32 {
        rules::sweep(now)
    }
}

bindings::export!(Faulty with_types_in bindings);
