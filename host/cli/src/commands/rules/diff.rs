//! `rules diff`: two modules on the same requests, and where their decisions differ. The
//! requests are generated from a seed around the edges a rule turns on (the sale's start and
//! end, a hold's expiry, the limit, the units free, a checked-out cart, a replayed checkout), so
//! a run is repeatable and two runs with one seed ask the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cart_edge::rules::{CartRules, GuestFault};
use cart_rules::{
    CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, MAX_QUANTITY, SetRequest,
    SkuInfo,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Examples kept of each kind of difference.
const EXAMPLES: usize = 2;

/// What two modules decided differently.
#[derive(Debug, Default)]
pub struct Diff {
    pub asked: usize,
    /// By kind (`set-quantity: hold → sold-out`), how many, and the first few.
    pub kinds: BTreeMap<String, (usize, Vec<String>)>,
}

impl Diff {
    pub fn differing(&self) -> usize {
        self.kinds.values().map(|(n, _)| n).sum()
    }

    /// The report `rules diff` prints.
    pub fn report(&self, old: &str, new: &str) -> String {
        let mut s = format!(
            "{} requests: {} decided differently by {new} than by {old}\n",
            self.asked,
            self.differing()
        );
        for (kind, (n, examples)) in &self.kinds {
            let _ = writeln!(s, "\n{n} × {kind}");
            for e in examples {
                let _ = writeln!(s, "{e}");
            }
        }
        s
    }
}

/// Asks both modules `requests` set-quantity and `requests` checkout requests from `seed`.
pub fn diff(old: &dyn CartRules, new: &dyn CartRules, requests: usize, seed: u64) -> Diff {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut diff = Diff::default();
    for _ in 0..requests {
        let case = SetCase::new(&mut rng);
        let req = case.request();
        let (a, b) = (old.set_quantity(&req), new.set_quantity(&req));
        diff.note("set-quantity", &req, set_kind(&a), set_kind(&b), &a, &b);
        let case = CheckoutCase::new(&mut rng);
        let req = case.request();
        let (a, b) = (old.checkout(&req), new.checkout(&req));
        diff.note(
            "checkout",
            &req,
            checkout_kind(&a),
            checkout_kind(&b),
            &a,
            &b,
        );
    }
    diff.asked = 2 * requests;
    diff
}

impl Diff {
    fn note<R: std::fmt::Debug, D: std::fmt::Debug>(
        &mut self,
        call: &str,
        req: &R,
        old_kind: String,
        new_kind: String,
        old: &D,
        new: &D,
    ) {
        let (old, new) = (format!("{old:?}"), format!("{new:?}"));
        if old == new {
            return;
        }
        let kind = if old_kind == new_kind {
            format!("{call}: {old_kind} either way, differing in detail")
        } else {
            format!("{call}: {old_kind} → {new_kind}")
        };
        let (n, examples) = self.kinds.entry(kind).or_default();
        *n += 1;
        if examples.len() < EXAMPLES {
            examples.push(format!("  request: {req:?}\n  old: {old}\n  new: {new}"));
        }
    }
}

type Decided<T> = Result<Result<T, CartError>, GuestFault>;

fn set_kind(d: &Decided<Option<Line>>) -> String {
    match d {
        Ok(Ok(Some(l))) if l.held => "hold".into(),
        Ok(Ok(Some(_))) => "line unheld".into(),
        Ok(Ok(None)) => "no line".into(),
        Ok(Err(e)) => error_kind(e),
        Err(_) => "guest fault".into(),
    }
}

fn checkout_kind(d: &Decided<CheckoutOutcome>) -> String {
    match d {
        Ok(Ok(CheckoutOutcome::Place)) => "place".into(),
        Ok(Ok(CheckoutOutcome::Replay)) => "replay".into(),
        Ok(Err(e)) => error_kind(e),
        Err(_) => "guest fault".into(),
    }
}

fn error_kind(e: &CartError) -> String {
    match e {
        CartError::SoldOut(_) => "sold-out",
        CartError::SaleNotStarted(_) => "sale-not-started",
        CartError::SaleEnded(_) => "sale-ended",
        CartError::HoldExpired(_) => "hold-expired",
        CartError::CartClosed => "cart-closed",
        CartError::CartEmpty => "cart-empty",
        CartError::LimitExceeded(_) => "limit-exceeded",
        CartError::InvalidQuantity => "invalid-quantity",
    }
    .into()
}

/// Now, in every generated request: the times are around it.
const NOW: i64 = 1_780_000_000_000;
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
struct SetCase {
    sku: SkuInfo,
    line: Option<Line>,
    status: CartStatus,
    quantity: u32,
    free: u32,
    elsewhere: u32,
}

impl SetCase {
    fn new(rng: &mut StdRng) -> Self {
        let sku = sku(rng, 1);
        let line = rng.random_bool(0.6).then(|| line(rng, &sku));
        let quantity = if rng.random_bool(0.02) {
            MAX_QUANTITY + 1
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

    fn request(&self) -> SetRequest<'_> {
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
struct CheckoutCase {
    skus: Vec<SkuInfo>,
    lines: Vec<Line>,
    status: CartStatus,
    key: String,
    placed_with: Option<String>,
}

impl CheckoutCase {
    fn new(rng: &mut StdRng) -> Self {
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

    fn request(&self) -> CheckoutRequest<'_> {
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
