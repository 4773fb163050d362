//! The flash-sale cart rules, compiled to a WebAssembly component.
//!
//! Everything a shopper can be told about is decided here: holds and their time-to-live, the
//! per-customer limit, the sale's start, checkout and its idempotency, closed carts, and the sweep
//! that expires lapsed holds. The host supplies the transaction, the stock, the outbox, the clock
//! and the catalog (see `wit/cart.wit`).
//!
//! - [`db`]: typed helpers over the host's `store` interface.
//! - [`rules`]: the cart operations, one function each.
//!
//! The host's tests build a deliberately broken component from these same rules
//! (`guest/faulty`, which includes `db.rs` and `rules.rs` by path). With the `native` feature the
//! rules compile into the host instead, over [`native`]'s stand-ins for the bindings: the
//! benchmarks' baseline without WebAssembly.

pub mod db;
pub mod rules;

#[cfg(not(feature = "native"))]
pub mod bindings {
    wit_bindgen::generate!({ path: "../wit", world: "cart" });
}

#[cfg(feature = "native")]
pub mod native;
#[cfg(feature = "native")]
pub use native as bindings;

#[cfg(not(feature = "native"))]
mod component {
    use super::rules;
    use crate::bindings::exports::flashsale::cart::cart_api::Guest;
    use crate::bindings::flashsale::cart::types::{Cart as CartView, CartError, CheckoutResult};

    /// The cart rules as the component's export.
    pub struct Cart;

    impl Guest for Cart {
        fn create_cart(
            cart_id: String,
            customer_id: String,
            token_hash: String,
        ) -> Result<CartView, CartError> {
            rules::create_cart(&cart_id, &customer_id, &token_hash)
        }

        fn get_cart(cart_id: String, token_hash: String) -> Result<CartView, CartError> {
            rules::get_cart(&cart_id, &token_hash)
        }

        fn set_quantity(
            cart_id: String,
            token_hash: String,
            sku: String,
            quantity: u32,
        ) -> Result<CartView, CartError> {
            rules::set_quantity(&cart_id, &token_hash, &sku, quantity)
        }

        fn remove_line(
            cart_id: String,
            token_hash: String,
            sku: String,
        ) -> Result<CartView, CartError> {
            rules::set_quantity(&cart_id, &token_hash, &sku, 0)
        }

        fn checkout(
            cart_id: String,
            token_hash: String,
            idempotency_key: String,
        ) -> Result<CheckoutResult, CartError> {
            rules::checkout(&cart_id, &token_hash, &idempotency_key)
        }

        fn sweep(now: i64) -> u32 {
            rules::sweep(now)
        }
    }

    crate::bindings::export!(Cart with_types_in crate::bindings);
}
