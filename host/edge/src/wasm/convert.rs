//! The rules' types ([`cart_rules`]) to the WIT bindings' and back: what a call into the
//! component costs on the host's side before the canonical ABI copies it into the guest.

use crate::bindings as wit;

pub fn set_request(r: &cart_rules::SetRequest<'_>) -> wit::SetRequest {
    wit::SetRequest {
        now: r.now,
        status: status(r.status),
        sku: sku(r.sku),
        line: r.line.map(wit_line),
        quantity: r.quantity,
        free: r.free,
        customer_elsewhere: r.customer_elsewhere,
    }
}

pub fn checkout_request(r: &cart_rules::CheckoutRequest<'_>) -> wit::CheckoutRequest {
    wit::CheckoutRequest {
        now: r.now,
        status: status(r.status),
        lines: r.lines.iter().map(wit_line).collect(),
        skus: r.skus.iter().map(sku).collect(),
        idempotency_key: r.idempotency_key.to_owned(),
        placed_with: r.placed_with.map(str::to_owned),
    }
}

pub fn line(l: wit::Line) -> cart_rules::Line {
    cart_rules::Line {
        sku: l.sku,
        quantity: l.quantity,
        unit_price_cents: l.unit_price_cents,
        hold_expires_at: l.hold_expires_at,
        held: l.held,
    }
}

pub fn outcome(o: wit::CheckoutOutcome) -> cart_rules::CheckoutOutcome {
    match o {
        wit::CheckoutOutcome::Place => cart_rules::CheckoutOutcome::Place,
        wit::CheckoutOutcome::Replay => cart_rules::CheckoutOutcome::Replay,
    }
}

pub fn error(e: wit::CartError) -> cart_rules::CartError {
    use cart_rules::CartError as E;
    match e {
        wit::CartError::SoldOut(n) => E::SoldOut(n),
        wit::CartError::SaleNotStarted(t) => E::SaleNotStarted(t),
        wit::CartError::SaleEnded(t) => E::SaleEnded(t),
        wit::CartError::HoldExpired(skus) => E::HoldExpired(skus),
        wit::CartError::CartClosed => E::CartClosed,
        wit::CartError::CartEmpty => E::CartEmpty,
        wit::CartError::LimitExceeded(n) => E::LimitExceeded(n),
        wit::CartError::InvalidQuantity => E::InvalidQuantity,
    }
}

fn wit_line(l: &cart_rules::Line) -> wit::Line {
    wit::Line {
        sku: l.sku.clone(),
        quantity: l.quantity,
        unit_price_cents: l.unit_price_cents,
        hold_expires_at: l.hold_expires_at,
        held: l.held,
    }
}

fn sku(s: &cart_rules::SkuInfo) -> wit::SkuInfo {
    wit::SkuInfo {
        sku: s.sku.clone(),
        price_cents: s.price_cents,
        limit_per_customer: s.limit_per_customer,
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        hold_ttl_ms: s.hold_ttl_ms,
    }
}

fn status(s: cart_rules::CartStatus) -> wit::CartStatus {
    match s {
        cart_rules::CartStatus::Open => wit::CartStatus::Open,
        cart_rules::CartStatus::CheckedOut => wit::CartStatus::CheckedOut,
    }
}
