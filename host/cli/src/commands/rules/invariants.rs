//! `rules test`: a module asked generated requests ([`super::generate`]), each decision held to
//! what the edge's books need of any rules, whatever else they decide. For each rule broken, how
//! often, and the simplest request found that breaks it, with the decision.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cart_edge::rules::CartRules;
use cart_rules::{
    CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, MAX_PRICE_CENTS, MAX_QUANTITY,
    SetRequest,
};

use super::diff::Decided;
use super::generate::{CheckoutCase, SetCase, seeded};

/// Every rule a decision is held to, in the order reported.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "no-fault",
        "a call neither traps nor runs past its deadline or memory",
    ),
    (
        "free",
        "a set-quantity never holds more units than are free at the edge",
    ),
    (
        "limit",
        "a line raised to hold more never takes the customer past the SKU's limit, counting \
         customer-elsewhere",
    ),
    (
        "closed",
        "a set-quantity never changes a checked-out cart's line",
    ),
    (
        "line",
        "a line is of the SKU asked, 1 to 10,000 units, at a price from 0",
    ),
    (
        "sold-out",
        "sold-out(n) never offers more than the free units and the line's own",
    ),
    (
        "place",
        "checkout places only an open cart with lines, every one of them held",
    ),
    ("replay", "checkout replays only a checked-out cart"),
    (
        "hold-expired",
        "hold-expired names SKUs of the cart's lines, and only at checkout",
    ),
];

/// One rule broken: how often, and the simplest case (its size, and the text shown).
#[derive(Debug, Default)]
pub struct Broken {
    pub times: usize,
    pub simplest: Option<(u64, String)>,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Found {
    pub asked: usize,
    pub broken: BTreeMap<&'static str, Broken>,
}

impl Found {
    fn note(&mut self, rule: &'static str, size: u64, shown: impl FnOnce() -> String) {
        let broken = self.broken.entry(rule).or_default();
        broken.times += 1;
        if broken.simplest.as_ref().is_none_or(|(s, _)| size < *s) {
            broken.simplest = Some((size, shown()));
        }
    }

    /// The report `rules test` prints.
    pub fn report(&self, module: &str) -> String {
        let mut s = format!("{module}: {} requests\n", self.asked);
        for (rule, what) in INVARIANTS {
            match self.broken.get(rule) {
                None => {
                    let _ = writeln!(s, "  ok      {rule}: {what}");
                }
                Some(b) => {
                    let _ = writeln!(s, "  BROKEN  {rule}: {what} ({} times)", b.times);
                    if let Some((_, shown)) = &b.simplest {
                        let _ = writeln!(s, "{shown}");
                    }
                }
            }
        }
        s
    }
}

/// Asks `rules` `requests` set-quantity and `requests` checkout requests from `seed`.
pub fn test(rules: &dyn CartRules, requests: usize, seed: u64) -> Found {
    let mut rng = seeded(seed);
    let mut found = Found::default();
    for _ in 0..requests {
        let case = SetCase::new(&mut rng);
        let req = case.request();
        let decided = rules.set_quantity(&req);
        for rule in set_broken(&req, &decided) {
            found.note(rule, case.size(), || shown(&req, &decided));
        }
        let case = CheckoutCase::new(&mut rng);
        let req = case.request();
        let decided = rules.checkout(&req);
        for rule in checkout_broken(&req, &decided) {
            found.note(rule, case.size(), || shown(&req, &decided));
        }
    }
    found.asked = 2 * requests;
    found
}

fn shown(req: &impl std::fmt::Debug, decided: &impl std::fmt::Debug) -> String {
    format!("          request: {req:?}\n          decided: {decided:?}")
}

/// The rules a set-quantity decision breaks.
fn set_broken(req: &SetRequest<'_>, decided: &Decided<Option<Line>>) -> Vec<&'static str> {
    let mut broken = Vec::new();
    let decision = match decided {
        Err(_) => return vec!["no-fault"],
        Ok(d) => d,
    };
    let before = req.line.map_or(0, Line::reserved);
    let holding = req
        .line
        .filter(|l| l.holds_at(req.now))
        .map_or(0, |l| l.quantity);
    match decision {
        Ok(line) => {
            let after = line.as_ref().map_or(0, Line::reserved);
            if after > before && after - before > req.free {
                broken.push("free");
            }
            if let Some(l) = line
                && l.holds_at(req.now)
                && l.quantity > holding
                && u64::from(req.customer_elsewhere) + u64::from(l.quantity)
                    > u64::from(req.sku.limit_per_customer)
            {
                broken.push("limit");
            }
            if req.status == CartStatus::CheckedOut && line.as_ref() != req.line {
                broken.push("closed");
            }
            if let Some(l) = line {
                let sane = l.sku == req.sku.sku
                    && (1..=MAX_QUANTITY).contains(&l.quantity)
                    && (0..=MAX_PRICE_CENTS).contains(&l.unit_price_cents);
                if !sane {
                    broken.push("line");
                }
            }
        }
        Err(CartError::SoldOut(n)) if u64::from(*n) > u64::from(req.free) + u64::from(before) => {
            broken.push("sold-out");
        }
        Err(CartError::HoldExpired(_)) => broken.push("hold-expired"),
        Err(_) => {}
    }
    broken
}

/// The rules a checkout decision breaks.
fn checkout_broken(
    req: &CheckoutRequest<'_>,
    decided: &Decided<CheckoutOutcome>,
) -> Vec<&'static str> {
    match decided {
        Err(_) => vec!["no-fault"],
        Ok(Ok(CheckoutOutcome::Place))
            if req.status != CartStatus::Open
                || req.lines.is_empty()
                || req.lines.iter().any(|l| !l.held) =>
        {
            vec!["place"]
        }
        Ok(Ok(CheckoutOutcome::Replay)) if req.status != CartStatus::CheckedOut => {
            vec!["replay"]
        }
        Ok(Err(CartError::HoldExpired(skus)))
            if skus.is_empty() || skus.iter().any(|s| !req.lines.iter().any(|l| &l.sku == s)) =>
        {
            vec!["hold-expired"]
        }
        Ok(_) => Vec::new(),
    }
}
