//! The flash-sale cart rules ([`cart_rules`]) as a WebAssembly component: the `rules` export of
//! `wit/cart.wit`.
//!
//! - [`rules`]: each export, converting the WIT's types to the rules' and back.

mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "cart" });
}
mod rules;

use bindings::exports::flashsale::cart::rules::{
    CheckoutOutcome, CheckoutRequest, Guest, SetRequest,
};
use bindings::flashsale::cart::types::{CartError, Line};

struct Cart;

impl Guest for Cart {
    fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
        rules::set_quantity(req)
    }

    fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
        rules::checkout(req)
    }
}

bindings::export!(Cart with_types_in bindings);
