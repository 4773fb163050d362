//! A request that breaks a rule, made as simple as it can be while it still breaks it: each
//! step tries requests a little simpler (a line dropped, a number nearer zero or its default, a
//! time back to its default, a closed cart open) and keeps the first that still breaks the
//! rule; shrinking stops when none does. Simpler means shorter as a case file writes it, then
//! smaller numbers in it, so every step is strictly simpler and shrinking ends.

use cart_edge::asked::{Asked, CheckoutAsked, SetAsked, defaults};
use cart_rules::{CartStatus, Line, Millis, SkuInfo};
use serde_json::Value;

/// Steps taken at most: past them, the request reached is reported as it is.
const STEPS: usize = 2_000;

/// The simplest request found from `asked` of which `breaks` still holds.
pub fn shrink(mut asked: Asked, breaks: impl Fn(&Asked) -> bool) -> Asked {
    let mut weight = weight(&asked);
    'step: for _ in 0..STEPS {
        for candidate in simpler(&asked) {
            let lighter = self::weight(&candidate);
            if lighter < weight && breaks(&candidate) {
                (asked, weight) = (candidate, lighter);
                continue 'step;
            }
        }
        break;
    }
    asked
}

/// How complicated a request is: the length of its case-file form, then the sum of the
/// numbers in it (in thousandths, as times are kept).
pub fn weight(asked: &Asked) -> (usize, u64) {
    let form = serde_json::to_value(asked.form()).unwrap_or_default();
    (form.to_string().len(), magnitude(&form))
}

fn magnitude(value: &Value) -> u64 {
    match value {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Value::Number(n) => (n.as_f64().unwrap_or_default().abs() * 1_000.0) as u64,
        Value::Array(items) => items.iter().map(magnitude).sum(),
        Value::Object(fields) => fields.values().map(magnitude).sum(),
        _ => 0,
    }
}

/// Requests one step simpler than `asked`, the likeliest to help first.
fn simpler(asked: &Asked) -> Vec<Asked> {
    match asked {
        Asked::Set(a) => simpler_set(a).into_iter().map(Asked::Set).collect(),
        Asked::Checkout(a) => simpler_checkout(a)
            .into_iter()
            .map(Asked::Checkout)
            .collect(),
    }
}

fn simpler_set(a: &SetAsked) -> Vec<SetAsked> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut SetAsked)| {
        let mut b = a.clone();
        f(&mut b);
        b
    };
    if a.status == CartStatus::CheckedOut {
        out.push(with(&|b| b.status = CartStatus::Open));
    }
    if a.line.is_some() {
        out.push(with(&|b| b.line = None));
    }
    for q in toward(a.quantity, &[0, 1]) {
        out.push(with(&|b| b.quantity = q));
    }
    for f in toward(a.free, &[defaults::free(), 0]) {
        out.push(with(&|b| b.free = f));
    }
    for e in toward(a.customer_elsewhere, &[0]) {
        out.push(with(&|b| b.customer_elsewhere = e));
    }
    if let Some(line) = &a.line {
        for l in simpler_line(line, &a.sku, a.now) {
            out.push(with(&|b| b.line = Some(l.clone())));
        }
    }
    for s in simpler_sku(&a.sku, a.now) {
        out.push(with(&|b| b.sku = s.clone()));
    }
    out
}

fn simpler_checkout(a: &CheckoutAsked) -> Vec<CheckoutAsked> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut CheckoutAsked)| {
        let mut b = a.clone();
        f(&mut b);
        b
    };
    // As an edge asks: a cart is checked out with a key, and open without one.
    if a.status == CartStatus::CheckedOut {
        out.push(with(&|b| {
            b.status = CartStatus::Open;
            b.placed_with = None;
        }));
    }
    if a.placed_with
        .as_deref()
        .is_some_and(|p| p != defaults::key())
    {
        out.push(with(&|b| b.placed_with = Some(defaults::key())));
    }
    if a.idempotency_key != defaults::key() {
        out.push(with(&|b| b.idempotency_key = defaults::key()));
    }
    // A SKU dropped, and its lines with it; a line dropped, its SKU kept.
    for (i, sku) in a.skus.iter().enumerate() {
        out.push(with(&|b| {
            b.skus.remove(i);
            b.lines.retain(|l| l.sku != sku.sku);
        }));
    }
    for i in 0..a.lines.len() {
        out.push(with(&|b| {
            b.lines.remove(i);
        }));
    }
    for (i, line) in a.lines.iter().enumerate() {
        let Some(sku) = a.skus.iter().find(|s| s.sku == line.sku) else {
            continue;
        };
        for l in simpler_line(line, sku, a.now) {
            out.push(with(&|b| b.lines[i] = l.clone()));
        }
    }
    for (i, sku) in a.skus.iter().enumerate() {
        for s in simpler_sku(sku, a.now) {
            out.push(with(&|b| b.skus[i] = s.clone()));
        }
    }
    out
}

fn simpler_line(line: &Line, sku: &SkuInfo, now: Millis) -> Vec<Line> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Line)| {
        let mut l = line.clone();
        f(&mut l);
        l
    };
    if !line.held {
        out.push(with(&|l| l.held = true));
    }
    for q in toward(line.quantity, &[1]).into_iter().filter(|q| *q >= 1) {
        out.push(with(&|l| l.quantity = q));
    }
    if line.unit_price_cents != sku.price_cents {
        out.push(with(&|l| l.unit_price_cents = sku.price_cents));
    }
    for t in toward_time(line.hold_expires_at - now, &[sku.hold_ttl_ms, 0]) {
        out.push(with(&|l| l.hold_expires_at = now + t));
    }
    out
}

fn simpler_sku(sku: &SkuInfo, now: Millis) -> Vec<SkuInfo> {
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut SkuInfo)| {
        let mut s = sku.clone();
        f(&mut s);
        s
    };
    let price = i64::try_from(defaults::price()).unwrap_or_default();
    for p in toward_time(sku.price_cents, &[price, 0]) {
        out.push(with(&|s| s.price_cents = p));
    }
    for l in toward(sku.limit_per_customer, &[defaults::limit(), 1]) {
        out.push(with(&|s| s.limit_per_customer = l));
    }
    for t in toward_time(sku.starts_at - now, &[defaults::starts().0, 0]) {
        out.push(with(&|s| s.starts_at = now + t));
    }
    for t in toward_time(sku.ends_at - now, &[defaults::ends().0, 0]) {
        out.push(with(&|s| s.ends_at = now + t));
    }
    for t in toward_time(sku.hold_ttl_ms, &[defaults::hold().0]) {
        out.push(with(&|s| s.hold_ttl_ms = t));
    }
    out
}

/// Values nearer `targets` than `n`: each target, half of `n`, one less.
fn toward(n: u32, targets: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = targets.to_vec();
    out.extend([n / 2, n.saturating_sub(1)]);
    out.retain(|v| *v != n);
    out.dedup();
    out
}

/// [`toward`] for times and prices, which may be below zero: halves and steps go toward zero,
/// times in whole seconds.
fn toward_time(n: i64, targets: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = targets.to_vec();
    let second = if n.abs() >= 1_000 && n % 1_000 == 0 {
        1_000
    } else {
        1
    };
    out.extend([n / 2 / second * second, n - n.signum() * second]);
    out.retain(|v| *v != n);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(quantity: u32, free: u32) -> Asked {
        Asked::Set(SetAsked {
            now: 0,
            status: CartStatus::CheckedOut,
            sku: SkuInfo {
                sku: "SKU-1".into(),
                price_cents: 31_337,
                limit_per_customer: 4,
                starts_at: -60_000,
                ends_at: 60_000,
                hold_ttl_ms: 30_000,
            },
            line: Some(Line {
                sku: "SKU-1".into(),
                quantity: 3,
                unit_price_cents: 31_337,
                hold_expires_at: -540_000,
                held: false,
            }),
            quantity,
            free,
            customer_elsewhere: 2,
        })
    }

    /// A "rule" broken whenever more is asked than is free shrinks to the least such request,
    /// everything else back to its default.
    #[test]
    fn a_request_shrinks_to_what_breaks_the_rule_and_no_more() {
        let breaks = |a: &Asked| matches!(a, Asked::Set(s) if s.quantity > s.free);
        let shrunk = shrink(set(17, 6), breaks);
        assert_eq!(
            serde_json::to_string(&shrunk.form()).expect("JSON"),
            r#"{"set_quantity":{"sku":{"sku":"SKU-1"},"quantity":1,"free":0}}"#
        );
        // Nothing simpler breaks it, so it stays.
        let least = shrink(shrunk.clone(), breaks);
        assert_eq!(least, shrunk);
    }

    #[test]
    fn a_checkout_loses_the_lines_that_do_not_matter() {
        let sku = |name: &str| SkuInfo {
            sku: name.into(),
            price_cents: 1_000,
            limit_per_customer: 10,
            starts_at: -3_600_000,
            ends_at: 3_600_000,
            hold_ttl_ms: 600_000,
        };
        let line = |name: &str, held| Line {
            sku: name.into(),
            quantity: 2,
            unit_price_cents: 1_000,
            hold_expires_at: 600_000,
            held,
        };
        let asked = Asked::Checkout(CheckoutAsked {
            now: 0,
            status: CartStatus::Open,
            skus: vec![sku("A"), sku("B"), sku("C")],
            lines: vec![line("A", true), line("B", false), line("C", true)],
            idempotency_key: "key-2".into(),
            placed_with: None,
        });
        let breaks = |a: &Asked| matches!(a, Asked::Checkout(c) if c.lines.iter().any(|l| !l.held));
        assert_eq!(
            serde_json::to_string(&shrink(asked, breaks).form()).expect("JSON"),
            r#"{"checkout":{"skus":[{"sku":"B"}],"lines":[{"sku":"B","quantity":1,"held":false}]}}"#
        );
    }
}
