//! Requests generated from a seed around the edges a rule turns on: the sale's start and end, a
//! hold's expiry, the limit, the units free, a checked-out cart, a replayed checkout. `rules
//! diff` and `rules test` ask modules these, so a run is repeatable: one seed, one sequence.

use cart_rules::{CartStatus, CheckoutRequest, Line, MAX_QUANTITY, SetRequest, SkuInfo};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// The generator for `seed`.
pub fn seeded(seed: u64) -> StdRng {
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

/// A generated set-quantity request, owning what the request refers to.
pub struct SetCase {
    sku: SkuInfo,
    line: Option<Line>,
    status: CartStatus,
    quantity: u32,
    free: u32,
    elsewhere: u32,
}

impl SetCase {
    pub fn new(rng: &mut StdRng) -> Self {
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
        Self {
            status: status(rng),
            quantity,
            free: rng.random_range(0..=6),
            elsewhere: rng.random_range(0..=sku.limit_per_customer + 1),
            sku,
            line,
        }
    }

    /// How big the request is, for keeping the simplest of those that fail.
    pub fn size(&self) -> u64 {
        u64::from(self.quantity)
            + u64::from(self.free)
            + u64::from(self.elsewhere)
            + self.line.as_ref().map_or(0, |l| 1 + u64::from(l.quantity))
    }

    pub fn request(&self) -> SetRequest<'_> {
        SetRequest {
            now: NOW,
            status: self.status,
            sku: &self.sku,
            line: self.line.as_ref(),
            quantity: self.quantity,
            free: self.free,
            customer_elsewhere: self.elsewhere,
        }
    }
}

/// A generated checkout request, owning what the request refers to.
pub struct CheckoutCase {
    skus: Vec<SkuInfo>,
    lines: Vec<Line>,
    status: CartStatus,
    key: String,
    placed_with: Option<String>,
}

impl CheckoutCase {
    pub fn new(rng: &mut StdRng) -> Self {
        let skus: Vec<_> = (0..rng.random_range(0..=3)).map(|n| sku(rng, n)).collect();
        let lines = skus.iter().map(|s| line(rng, s)).collect();
        let status = status(rng);
        let key = format!("key-{}", rng.random_range(1..=2));
        let placed_with =
            (status == CartStatus::CheckedOut).then(|| format!("key-{}", rng.random_range(1..=2)));
        Self {
            skus,
            lines,
            status,
            key,
            placed_with,
        }
    }

    /// How big the request is, for keeping the simplest of those that fail.
    pub fn size(&self) -> u64 {
        self.lines.iter().map(|l| 1 + u64::from(l.quantity)).sum()
    }

    pub fn request(&self) -> CheckoutRequest<'_> {
        CheckoutRequest {
            now: NOW,
            status: self.status,
            lines: &self.lines,
            skus: &self.skus,
            idempotency_key: &self.key,
            placed_with: self.placed_with.as_deref(),
        }
    }
}
