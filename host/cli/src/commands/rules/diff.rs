//! `rules diff`: two modules on the same generated requests ([`super::generate`]), and where
//! their decisions differ.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cart_edge::rules::{CartRules, GuestFault};
use cart_rules::{CartError, CheckoutOutcome, Line};

use super::generate::{CheckoutCase, SetCase, seeded};

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
    let mut rng = seeded(seed);
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

pub type Decided<T> = Result<Result<T, CartError>, GuestFault>;

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

pub fn error_kind(e: &CartError) -> String {
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
