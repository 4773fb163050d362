//! Requests generated from a seed around the edges a rule turns on: the sale's start and end, a
//! hold's expiry, the limit, the units free, a checked-out cart, a replayed checkout. `rules
//! diff` and `rules test` ask modules these, so a run is repeatable: one seed, one sequence.

use cart_edge::asked::{Asked, CheckoutAsked, SetAsked};
use cart_rules::{CartStatus, Line, MAX_QUANTITY, SkuInfo};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// The generator for `seed`.
fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Now, in every generated request: the times are around it.
pub const NOW: i64 = 1_780_000_000_000;
const MINUTE: i64 = 60_000;

/// A SKU whose sale is about to start, running, or just over.
fn sku(rng: &mut StdRng, n: usize) -> SkuInfo {
    let starts_at = NOW + [-60, -1, 0, 1][rng.random_range(0..4)] * MINUTE;
    SkuInfo {
        sku: format!("SKU-{n}"),
        price_cents: rng.random_range(1..=50_000),
        limit_per_customer: rng.random_range(1..=5),
        starts_at,
        ends_at: NOW + [-1, 0, 1, 60][rng.random_range(0..4)] * MINUTE,
        hold_ttl_ms: [30, 120, 600, 3600][rng.random_range(0..4)] * 1_000,
    }
}

/// A line of `sku`: held and holding, held but lapsed, or unheld.
fn line(rng: &mut StdRng, sku: &SkuInfo) -> Line {
    Line {
        sku: sku.sku.clone(),
        quantity: rng.random_range(1..=sku.limit_per_customer + 1),
        unit_price_cents: sku.price_cents,
        hold_expires_at: NOW + rng.random_range(-10..=10) * MINUTE,
        held: rng.random_bool(0.8),
    }
}

fn status(rng: &mut StdRng) -> CartStatus {
    if rng.random_bool(0.9) {
        CartStatus::Open
    } else {
        CartStatus::CheckedOut
    }
}

/// A generated set-quantity request.
pub fn set(rng: &mut StdRng) -> Asked {
    let sku = sku(rng, 1);
    let line = rng.random_bool(0.6).then(|| line(rng, &sku));
    let quantity = if rng.random_bool(0.02) {
        MAX_QUANTITY + 1
    } else if rng.random_bool(0.02) {
        // Past the limit and the units free, where rules' arithmetic is least tried.
        rng.random_range(0..=20)
    } else {
        rng.random_range(0..=sku.limit_per_customer + 2)
    };
    Asked::Set(SetAsked {
        now: NOW,
        status: status(rng),
        quantity,
        free: rng.random_range(0..=6),
        customer_elsewhere: rng.random_range(0..=sku.limit_per_customer + 1),
        sku,
        line,
    })
}

/// A generated checkout request.
pub fn checkout(rng: &mut StdRng) -> Asked {
    let skus: Vec<_> = (0..rng.random_range(0..=3)).map(|n| sku(rng, n)).collect();
    let lines: Vec<Line> = skus.iter().map(|s| line(rng, s)).collect();
    // As an edge asks: the SKUs of the held lines only.
    let skus = skus
        .into_iter()
        .filter(|s| lines.iter().any(|l| l.held && l.sku == s.sku))
        .collect();
    let status = status(rng);
    let idempotency_key = format!("key-{}", rng.random_range(1..=2));
    let placed_with =
        (status == CartStatus::CheckedOut).then(|| format!("key-{}", rng.random_range(1..=2)));
    Asked::Checkout(CheckoutAsked {
        now: NOW,
        status,
        skus,
        lines,
        idempotency_key,
        placed_with,
    })
}

/// `requests` of each kind from `seed`, a set-quantity and a checkout in turn.
pub fn requests(requests: usize, seed: u64) -> impl Iterator<Item = Asked> {
    let mut rng = seeded(seed);
    (0..requests).flat_map(move |_| [set(&mut rng), checkout(&mut rng)])
}
