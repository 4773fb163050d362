//! `rules test`: a module asked generated requests ([`super::generate`]), each decision held to
//! what the edge's books need of any rules, whatever else they decide. For each rule broken, how
//! often, and the simplest request that breaks it ([`super::shrink`]), with the decision.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cart_edge::asked::{Asked, Decided, Form};
use cart_edge::rules::{CartRules, GuestFault};
use cart_rules::{
    CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, MAX_PRICE_CENTS, MAX_QUANTITY,
    SetRequest,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::decided::decision_json;
use super::shrink;

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

/// One rule broken: how often, and the simplest request found that breaks it (as a case file
/// writes it) with the decision (as a case's `expect` would).
#[derive(Debug, Serialize)]
pub struct Broken {
    pub times: usize,
    pub request: Form,
    pub decided: Value,
}

/// What a run found.
#[derive(Debug, Default, Serialize)]
pub struct Found {
    pub asked: usize,
    pub broken: BTreeMap<&'static str, Broken>,
}

impl Found {
    /// The report `rules test` prints.
    pub fn report(&self, module: &str) -> String {
        let mut s = format!("{module}: {} requests\n", self.asked);
        for (rule, what) in INVARIANTS {
            match self.broken.get(rule) {
                None => {
                    let _ = writeln!(s, "  ok      {rule}: {what}");
                }
                Some(b) => {
                    let times = match b.times {
                        1 => "once".to_owned(),
                        n => format!("{n} times"),
                    };
                    let request = serde_json::to_string(&b.request).unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "  BROKEN  {rule}: {what} ({times}); the simplest request found:\n          \
                         request: {request}\n          decided: {}",
                        b.decided
                    );
                }
            }
        }
        s
    }

    /// The report as JSON: every rule, whether it held, and for a broken one what broke it.
    pub fn json(&self) -> Value {
        let rules: Vec<Value> = INVARIANTS
            .iter()
            .map(|(rule, what)| {
                let mut held = json!({"rule": rule, "what": what, "held": true});
                if let Some(b) = self.broken.get(rule) {
                    held["held"] = json!(false);
                    held["broken"] = json!(b);
                }
                held
            })
            .collect();
        json!({"asked": self.asked, "rules": rules})
    }
}

/// Asks `rules` each of `requests`, holds each decision to every rule, and shrinks the
/// simplest request found to break a rule to the simplest that still does.
pub fn test(rules: &dyn CartRules, requests: impl IntoIterator<Item = Asked>) -> Found {
    let mut asked_of = 0;
    // For each rule broken: how often, and the simplest request found that breaks it.
    let mut simplest: BTreeMap<&'static str, (usize, (usize, u64), Asked)> = BTreeMap::new();
    for asked in requests {
        asked_of += 1;
        for rule in broken(&asked, &asked.ask(rules)) {
            let weight = shrink::weight(&asked);
            let found = simplest
                .entry(rule)
                .or_insert_with(|| (0, weight, asked.clone()));
            found.0 += 1;
            if weight < found.1 {
                (found.1, found.2) = (weight, asked.clone());
            }
        }
    }
    let broken = simplest
        .into_iter()
        .map(|(rule, (times, _, asked))| {
            let asked = shrink::shrink(asked, |a| broken(a, &a.ask(rules)).contains(&rule));
            let found = Broken {
                times,
                request: asked.form(),
                decided: decision_json(&asked.ask(rules)),
            };
            (rule, found)
        })
        .collect();
    Found {
        asked: asked_of,
        broken,
    }
}

/// The rules a decision of `asked` breaks.
fn broken(asked: &Asked, decided: &Decided) -> Vec<&'static str> {
    match (asked, decided) {
        (Asked::Set(a), Decided::Set(d)) => set_broken(&a.request(), d),
        (Asked::Checkout(a), Decided::Checkout(d)) => checkout_broken(&a.request(), d),
        _ => Vec::new(),
    }
}

/// The rules a set-quantity decision breaks.
fn set_broken(
    req: &SetRequest<'_>,
    decided: &Result<Result<Option<Line>, CartError>, GuestFault>,
) -> Vec<&'static str> {
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
    decided: &Result<Result<CheckoutOutcome, CartError>, GuestFault>,
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
