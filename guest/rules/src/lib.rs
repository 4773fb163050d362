//! The flash-sale cart rules, as plain Rust.
//!
//! Everything a shopper can be told about is decided here: holds and their time to live, the
//! per-customer limit, the sale's start and end, checkout and its idempotency, closed carts.
//! The functions are pure: the host hands in what it loaded, and applies what comes back.
//!
//! - [`types`]: the types of `wit/cart.wit`, and the limits host and guest both keep.
//! - [`set_quantity`] and [`checkout`]: the two decisions.
//!
//! The cart component (`guest/cart`) exports these rules through the WIT; the host's benchmark
//! baseline and property tests call them directly, with no conversion the component does not
//! also pay.

#![no_std]

extern crate alloc;

pub mod types;

use alloc::vec::Vec;

pub use types::*;

/// The line's new state after a shopper sets `quantity` of the request's SKU (`None`: the line
/// goes), or why not.
pub fn set_quantity(req: &SetRequest<'_>) -> Result<Option<Line>, CartError> {
    if req.quantity > MAX_QUANTITY {
        return Err(CartError::InvalidQuantity);
    }
    if req.status != CartStatus::Open {
        return Err(CartError::CartClosed);
    }
    let (now, sku) = (req.now, req.sku);
    // Units the line has in stock now, and how many of them it still holds at `now`: a lapsed
    // hold keeps its units until the sweep, but holds nothing for the shopper.
    let reserved = req.line.filter(|l| l.held).map_or(0, |l| l.quantity);
    let holding = req
        .line
        .filter(|l| l.holds_at(now))
        .map_or(0, |l| l.quantity);
    if req.quantity == holding {
        // Nothing to hold or release; a lapsed line stays as it is until the sweep.
        return Ok(if req.quantity == 0 {
            None
        } else {
            req.line.cloned()
        });
    }
    if now >= sku.ends_at {
        return Err(CartError::SaleEnded(sku.ends_at));
    }
    if req.quantity < holding {
        // Lowering keeps the hold's expiry and price.
        return Ok(req
            .line
            .map(|l| Line {
                quantity: req.quantity,
                ..l.clone()
            })
            .filter(|l| l.quantity > 0));
    }
    if now < sku.starts_at {
        return Err(CartError::SaleNotStarted(sku.starts_at));
    }
    let wanted = u64::from(req.customer_elsewhere) + u64::from(req.quantity);
    if wanted > u64::from(sku.limit_per_customer) {
        return Err(CartError::LimitExceeded(sku.limit_per_customer));
    }
    let needed = req.quantity.saturating_sub(reserved);
    if needed > req.free {
        // Free units, and those of this line's lapsed hold: what could be added to its hold.
        return Err(CartError::SoldOut(
            req.free.saturating_add(reserved.saturating_sub(holding)),
        ));
    }
    // Raising places a fresh hold at the SKU's price.
    Ok(Some(Line {
        sku: sku.sku.clone(),
        quantity: req.quantity,
        unit_price_cents: sku.price_cents,
        hold_expires_at: now.saturating_add(sku.hold_ttl_ms),
        held: true,
    }))
}

/// Whether a checkout places the order, answers with the one placed, or why neither.
pub fn checkout(req: &CheckoutRequest<'_>) -> Result<CheckoutOutcome, CartError> {
    if req.status == CartStatus::CheckedOut {
        return match req.placed_with {
            Some(key) if key == req.idempotency_key => Ok(CheckoutOutcome::Replay),
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
    let lapsed: Vec<_> = req
        .lines
        .iter()
        .filter(|l| !l.holds_at(req.now))
        .map(|l| l.sku.clone())
        .collect();
    if lapsed.is_empty() {
        Ok(CheckoutOutcome::Place)
    } else {
        Err(CartError::HoldExpired(lapsed))
    }
}

#[cfg(test)]
mod tests;
