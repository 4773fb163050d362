//! The rules, one decision at a time.

use alloc::string::ToString;
use alloc::vec;

use super::*;

const NOW: Millis = 1_000_000;

fn bag() -> SkuInfo {
    SkuInfo {
        sku: "BAG-1".to_string(),
        price_cents: 1_000,
        limit_per_customer: 3,
        starts_at: NOW - 1,
        ends_at: NOW + 1_000_000,
        hold_ttl_ms: 600_000,
    }
}

fn line(quantity: u32, expires: Millis, held: bool) -> Line {
    Line {
        sku: "BAG-1".to_string(),
        quantity,
        unit_price_cents: 900,
        hold_expires_at: expires,
        held,
    }
}

fn set(
    sku: &SkuInfo,
    line: Option<&Line>,
    quantity: u32,
    free: u32,
) -> Result<Option<Line>, CartError> {
    set_quantity(&SetRequest {
        now: NOW,
        status: CartStatus::Open,
        sku,
        line,
        quantity,
        free,
        customer_elsewhere: 0,
    })
}

#[test]
fn raising_places_a_fresh_hold_at_the_current_price() {
    let held = set(&bag(), None, 2, 5).expect("holds").expect("a line");
    assert_eq!(
        (held.quantity, held.unit_price_cents, held.held),
        (2, 1_000, true)
    );
    assert_eq!(held.hold_expires_at, NOW + 600_000);
}

#[test]
fn lowering_keeps_the_expiry_and_price_and_zero_removes() {
    let live = line(3, NOW + 10, true);
    let lowered = set(&bag(), Some(&live), 1, 0)
        .expect("lowers")
        .expect("a line");
    assert_eq!(
        lowered,
        Line {
            quantity: 1,
            ..live.clone()
        }
    );
    assert_eq!(set(&bag(), Some(&live), 0, 0), Ok(None));
}

#[test]
fn too_few_free_units_is_sold_out_with_what_could_be_added() {
    let live = line(2, NOW + 10, true);
    assert_eq!(set(&bag(), Some(&live), 3, 0), Err(CartError::SoldOut(0)));
    // A lapsed hold's units come back to the line first.
    let lapsed = line(2, NOW, true);
    assert_eq!(set(&bag(), Some(&lapsed), 3, 0), Err(CartError::SoldOut(2)));
    assert!(set(&bag(), Some(&lapsed), 2, 0).is_ok());
}

#[test]
fn the_limit_counts_the_customers_other_units() {
    let req = |elsewhere| {
        set_quantity(&SetRequest {
            now: NOW,
            status: CartStatus::Open,
            sku: &bag(),
            line: None,
            quantity: 2,
            free: 10,
            customer_elsewhere: elsewhere,
        })
    };
    assert!(req(1).is_ok());
    assert_eq!(req(2), Err(CartError::LimitExceeded(3)));
    assert_eq!(req(u32::MAX), Err(CartError::LimitExceeded(3)));
}

#[test]
fn the_sale_window_bounds_changes() {
    let early = SkuInfo {
        starts_at: NOW + 5,
        ..bag()
    };
    assert_eq!(
        set(&early, None, 1, 5),
        Err(CartError::SaleNotStarted(NOW + 5))
    );
    let over = SkuInfo {
        ends_at: NOW,
        ..bag()
    };
    assert_eq!(set(&over, None, 1, 5), Err(CartError::SaleEnded(NOW)));
    let live = line(2, NOW + 10, true);
    assert_eq!(
        set(&over, Some(&live), 1, 5),
        Err(CartError::SaleEnded(NOW))
    );
    // Asking for what the line already holds changes nothing, so it is no change after the end.
    assert_eq!(set(&over, Some(&live), 2, 5), Ok(Some(live)));
}

#[test]
fn closed_carts_and_absurd_quantities_are_refused() {
    let closed = SetRequest {
        now: NOW,
        status: CartStatus::CheckedOut,
        sku: &bag(),
        line: None,
        quantity: 1,
        free: 1,
        customer_elsewhere: 0,
    };
    assert_eq!(set_quantity(&closed), Err(CartError::CartClosed));
    assert_eq!(
        set(&bag(), None, MAX_QUANTITY + 1, u32::MAX),
        Err(CartError::InvalidQuantity)
    );
}

fn checkout_of(
    lines: &[Line],
    status: CartStatus,
    placed: Option<&str>,
    key: &str,
) -> Result<CheckoutOutcome, CartError> {
    checkout(&CheckoutRequest {
        now: NOW,
        status,
        lines,
        skus: &[bag()],
        idempotency_key: key,
        placed_with: placed,
    })
}

#[test]
fn checkout_places_replays_and_refuses() {
    let live = [line(1, NOW + 10, true)];
    assert_eq!(
        checkout_of(&live, CartStatus::Open, None, "k"),
        Ok(CheckoutOutcome::Place)
    );
    assert_eq!(
        checkout_of(&[], CartStatus::Open, None, "k"),
        Err(CartError::CartEmpty)
    );
    assert_eq!(
        checkout_of(&[line(1, NOW, true)], CartStatus::Open, None, "k"),
        Err(CartError::HoldExpired(vec!["BAG-1".to_string()]))
    );
    assert_eq!(
        checkout_of(&live, CartStatus::CheckedOut, Some("k"), "k"),
        Ok(CheckoutOutcome::Replay)
    );
    assert_eq!(
        checkout_of(&live, CartStatus::CheckedOut, Some("k"), "other"),
        Err(CartError::CartClosed)
    );
}

#[test]
fn a_held_line_of_an_ended_sale_cannot_be_bought() {
    let live = [line(1, NOW + 10, true)];
    let over = [SkuInfo {
        ends_at: NOW,
        ..bag()
    }];
    let req = CheckoutRequest {
        now: NOW,
        status: CartStatus::Open,
        lines: &live,
        skus: &over,
        idempotency_key: "k",
        placed_with: None,
    };
    assert_eq!(checkout(&req), Err(CartError::SaleEnded(NOW)));
    // A SKU the host could not name is treated as ended, never sold.
    let unknown = CheckoutRequest { skus: &[], ..req };
    assert_eq!(checkout(&unknown), Err(CartError::SaleEnded(0)));
}
