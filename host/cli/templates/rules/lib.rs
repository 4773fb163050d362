//! Cart rules: what a shopper may hold and buy. The edge calls `set_quantity` for every change
//! to a cart and `checkout` for every checkout, each in a fresh instance, with everything the
//! decision needs in the request (see `wit/cart.wit`). The rules import nothing: no clock, no
//! files, no network. The edge keeps the books and checks every decision: it refuses one that
//! holds more units than are free, or changes a checked-out cart.
//!
//! These are the fleet's default rules, written out plainly. Change them, build, check:
//! `cargo build --release --target wasm32-wasip2`, then `cart-host rules check` on the module.

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "cart" });
}

use bindings::exports::flashsale::cart::rules::{
    CheckoutOutcome, CheckoutRequest, Guest, SetRequest,
};
use bindings::flashsale::cart::types::{CartError, CartStatus, Line};

/// The most units of one SKU a line may ask for: a larger quantity is `invalid-quantity`.
const MAX_QUANTITY: u32 = 10_000;

struct Rules;

impl Guest for Rules {
    /// A shopper sets a line's quantity: the line's new state (`None` removes it), or why not.
    fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
        if req.quantity > MAX_QUANTITY {
            return Err(CartError::InvalidQuantity);
        }
        if req.status != CartStatus::Open {
            return Err(CartError::CartClosed);
        }
        let (now, sku) = (req.now, &req.sku);
        // Units the line has reserved, and how many of them it still holds now: a lapsed hold
        // keeps its units until the edge's sweep releases them, but holds nothing for the
        // shopper.
        let reserved = req.line.as_ref().filter(|l| l.held).map_or(0, |l| l.quantity);
        let holding = req
            .line
            .as_ref()
            .filter(|l| l.held && l.hold_expires_at > now)
            .map_or(0, |l| l.quantity);
        if req.quantity == holding {
            // Nothing to hold or release.
            return Ok(if req.quantity == 0 { None } else { req.line });
        }
        if now >= sku.ends_at {
            return Err(CartError::SaleEnded(sku.ends_at));
        }
        if req.quantity < holding {
            // Lowering a line keeps its hold's expiry and price.
            return Ok(req.line.map(|l| Line {
                quantity: req.quantity,
                ..l
            }).filter(|l| l.quantity > 0));
        }
        if now < sku.starts_at {
            return Err(CartError::SaleNotStarted(sku.starts_at));
        }
        // The per-customer limit counts what the customer holds or bought anywhere in the
        // fleet (`customer-elsewhere`) besides this line.
        let wanted = u64::from(req.customer_elsewhere) + u64::from(req.quantity);
        if wanted > u64::from(sku.limit_per_customer) {
            return Err(CartError::LimitExceeded(sku.limit_per_customer));
        }
        let needed = req.quantity.saturating_sub(reserved);
        if needed > req.free {
            // How many more the line could hold: the free units, and those of its lapsed hold.
            return Err(CartError::SoldOut(
                req.free.saturating_add(reserved.saturating_sub(holding)),
            ));
        }
        // Raising a line places a fresh hold at the SKU's price.
        Ok(Some(Line {
            sku: sku.sku.clone(),
            quantity: req.quantity,
            unit_price_cents: sku.price_cents,
            hold_expires_at: now.saturating_add(sku.hold_ttl_ms),
            held: true,
        }))
    }

    /// A shopper checks out: place the order, answer with the one placed under the same key,
    /// or why neither.
    fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
        if req.status == CartStatus::CheckedOut {
            return match &req.placed_with {
                Some(key) if *key == req.idempotency_key => Ok(CheckoutOutcome::Replay),
                _ => Err(CartError::CartClosed),
            };
        }
        if req.lines.is_empty() {
            return Err(CartError::CartEmpty);
        }
        for line in req.lines.iter().filter(|l| l.held) {
            let ends_at = req
                .skus
                .iter()
                .find(|s| s.sku == line.sku)
                .map_or(i64::MIN, |s| s.ends_at);
            if req.now >= ends_at {
                return Err(CartError::SaleEnded(ends_at.max(0)));
            }
        }
        let lapsed: Vec<String> = req
            .lines
            .iter()
            .filter(|l| !(l.held && l.hold_expires_at > req.now))
            .map(|l| l.sku.clone())
            .collect();
        if lapsed.is_empty() {
            Ok(CheckoutOutcome::Place)
        } else {
            Err(CartError::HoldExpired(lapsed))
        }
    }
}

bindings::export!(Rules with_types_in bindings);
