//! The benchmark baseline: the cart rules compiled into the host and called directly, on the
//! same store, transaction and checks as the component, with no WebAssembly between.

use cart_rules::{CartError, CheckoutOutcome, CheckoutRequest, Line, SetRequest};

use cart_edge::rules::{CartRules, GuestFault};

/// The rules of `guest/rules`, natively.
pub struct NativeRules;

impl CartRules for NativeRules {
    fn version(&self) -> &str {
        "native-baseline"
    }

    fn set_quantity(
        &self,
        req: &SetRequest<'_>,
    ) -> Result<Result<Option<Line>, CartError>, GuestFault> {
        Ok(cart_rules::set_quantity(req))
    }

    fn checkout(
        &self,
        req: &CheckoutRequest<'_>,
    ) -> Result<Result<CheckoutOutcome, CartError>, GuestFault> {
        Ok(cart_rules::checkout(req))
    }
}
