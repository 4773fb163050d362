//! The rules behind the WIT: each export converts the WIT's types to the rules' and back.
//! Shared by the real component and the faulty one (`guest/faulty`), which includes this file.

use alloc::vec::Vec;

use crate::bindings::exports::flashsale::cart::rules::{
    CheckoutOutcome, CheckoutRequest, SetRequest,
};
use crate::bindings::flashsale::cart::types::{CartError, CartStatus, Line, SkuInfo};

pub fn set_quantity(req: SetRequest) -> Result<Option<Line>, CartError> {
    let sku = sku(req.sku);
    let line = req.line.map(line);
    cart_rules::set_quantity(&cart_rules::SetRequest {
        now: req.now,
        status: status(req.status),
        sku: &sku,
        line: line.as_ref(),
        quantity: req.quantity,
        free: req.free,
        customer_elsewhere: req.customer_elsewhere,
    })
    .map(|l| l.map(wit_line))
    .map_err(error)
}

pub fn checkout(req: CheckoutRequest) -> Result<CheckoutOutcome, CartError> {
    let lines: Vec<_> = req.lines.into_iter().map(line).collect();
    let skus: Vec<_> = req.skus.into_iter().map(sku).collect();
    cart_rules::checkout(&cart_rules::CheckoutRequest {
        now: req.now,
        status: status(req.status),
        lines: &lines,
        skus: &skus,
        idempotency_key: &req.idempotency_key,
        placed_with: req.placed_with.as_deref(),
    })
    .map(|o| match o {
        cart_rules::CheckoutOutcome::Place => CheckoutOutcome::Place,
        cart_rules::CheckoutOutcome::Replay => CheckoutOutcome::Replay,
    })
    .map_err(error)
}

fn sku(s: SkuInfo) -> cart_rules::SkuInfo {
    cart_rules::SkuInfo {
        sku: s.sku,
        price_cents: s.price_cents,
        limit_per_customer: s.limit_per_customer,
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        hold_ttl_ms: hold_ttl_ms(s.hold_ttl_ms),
    }
}

/// How long a hold lasts: the sale's hold time (built with `short-holds`, two minutes at most).
fn hold_ttl_ms(sale: i64) -> i64 {
    if cfg!(feature = "short-holds") {
        sale.min(120_000)
    } else {
        sale
    }
}

fn line(l: Line) -> cart_rules::Line {
    cart_rules::Line {
        sku: l.sku,
        quantity: l.quantity,
        unit_price_cents: l.unit_price_cents,
        hold_expires_at: l.hold_expires_at,
        held: l.held,
    }
}

fn wit_line(l: cart_rules::Line) -> Line {
    Line {
        sku: l.sku,
        quantity: l.quantity,
        unit_price_cents: l.unit_price_cents,
        hold_expires_at: l.hold_expires_at,
        held: l.held,
    }
}

fn status(s: CartStatus) -> cart_rules::CartStatus {
    match s {
        CartStatus::Open => cart_rules::CartStatus::Open,
        CartStatus::CheckedOut => cart_rules::CartStatus::CheckedOut,
    }
}

fn error(e: cart_rules::CartError) -> CartError {
    use cart_rules::CartError as E;
    match e {
        E::SoldOut(n) => CartError::SoldOut(n),
        E::SaleNotStarted(t) => CartError::SaleNotStarted(t),
        E::SaleEnded(t) => CartError::SaleEnded(t),
        E::HoldExpired(skus) => CartError::HoldExpired(skus),
        E::CartClosed => CartError::CartClosed,
        E::CartEmpty => CartError::CartEmpty,
        E::LimitExceeded(n) => CartError::LimitExceeded(n),
        E::InvalidQuantity => CartError::InvalidQuantity,
    }
}
