//! What the rules decided of an [`crate::asked::Asked`], and the decision as a case's `expect`
//! writes it (as `rules test` and `rules diff` show it, and a deploy's smoke check tells it):
//! `{"line": ...}`, `{"outcome": "place"}`, `{"error": "sold-out", "available": 2}`, or a
//! guest's fault in a line.

use cart_rules::{CartError, CheckoutOutcome, Line, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rules::GuestFault;

/// What the rules decided of an [`crate::asked::Asked`].
#[derive(Debug)]
pub enum Decided {
    Set(Result<Result<Option<Line>, CartError>, GuestFault>),
    Checkout(Result<Result<CheckoutOutcome, CartError>, GuestFault>),
}

impl Decided {
    /// The decision as a case's `expect` writes it, times from `now` (the request's).
    pub fn json(&self, now: Millis) -> Value {
        match self {
            Self::Set(d) => set_json(d, now),
            Self::Checkout(d) => checkout_json(d, now),
        }
    }

    /// The call it answers, and the kind of decision it is (`hold`, `sold-out`, `place`...).
    pub fn kind(&self) -> (&'static str, String) {
        match self {
            Self::Set(d) => (
                "set-quantity",
                match d {
                    Ok(Ok(Some(l))) if l.held => "hold".into(),
                    Ok(Ok(Some(_))) => "line unheld".into(),
                    Ok(Ok(None)) => "no line".into(),
                    Ok(Err(e)) => error_kind(e),
                    Err(_) => "guest fault".into(),
                },
            ),
            Self::Checkout(d) => (
                "checkout",
                match d {
                    Ok(Ok(CheckoutOutcome::Place)) => "place".into(),
                    Ok(Ok(CheckoutOutcome::Replay)) => "replay".into(),
                    Ok(Err(e)) => error_kind(e),
                    Err(_) => "guest fault".into(),
                },
            ),
        }
    }
}

/// Seconds from a request's `now`, kept to the millisecond; written whole when whole.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub Millis);

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1_000 == 0 {
            s.serialize_i64(self.0 / 1_000)
        } else {
            #[expect(clippy::cast_precision_loss, reason = "times of days, in milliseconds")]
            let seconds = self.0 as f64 / 1_000.0;
            s.serialize_f64(seconds)
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seconds = f64::deserialize(d)?;
        // Case files hold times of hours and days, well within an f64's integers; anything
        // past an i64 saturates.
        #[expect(clippy::cast_possible_truncation)]
        let ms = (seconds * 1_000.0).round() as Millis;
        Ok(Self(ms))
    }
}

/// The rules' time, as seconds from `now` (whole ones written without a fraction).
fn from_now(ms: Millis, now: Millis) -> Value {
    json!(Seconds(ms.saturating_sub(now)))
}

/// An error as a case's `expect` writes it.
fn error_json(e: &CartError, now: Millis) -> Value {
    let kind = error_kind(e);
    match e {
        CartError::SoldOut(n) => json!({"error": kind, "available": n}),
        CartError::SaleNotStarted(t) => json!({"error": kind, "starts_at": from_now(*t, now)}),
        CartError::SaleEnded(t) => json!({"error": kind, "ended_at": from_now(*t, now)}),
        CartError::HoldExpired(skus) => json!({"error": kind, "skus": skus}),
        CartError::LimitExceeded(n) => json!({"error": kind, "limit": n}),
        CartError::CartClosed | CartError::CartEmpty | CartError::InvalidQuantity => {
            json!({"error": kind})
        }
    }
}

fn set_json(decided: &Result<Result<Option<Line>, CartError>, GuestFault>, now: Millis) -> Value {
    match decided {
        Ok(Ok(None)) => json!({"line": null}),
        Ok(Ok(Some(l))) => json!({"line": {
            "sku": l.sku, "quantity": l.quantity, "unit_price_cents": l.unit_price_cents,
            "hold_expires_at": from_now(l.hold_expires_at, now), "held": l.held,
        }}),
        Ok(Err(e)) => error_json(e, now),
        Err(fault) => fault_json(fault),
    }
}

/// A trap, an overrun or a guest out of memory, in a line: what it was and what the guest
/// said, without the backtrace.
fn fault_json(fault: &impl std::fmt::Display) -> Value {
    let said = fault.to_string();
    let told: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with(|c: char| c.is_ascii_digit())
                || l.starts_with("note:")
                || l.ends_with("backtrace:")
                || *l == "Caused by:")
        })
        .collect();
    json!({"fault": told.join("; ")})
}

fn checkout_json(
    decided: &Result<Result<CheckoutOutcome, CartError>, GuestFault>,
    now: Millis,
) -> Value {
    match decided {
        Ok(Ok(CheckoutOutcome::Place)) => json!({"outcome": "place"}),
        Ok(Ok(CheckoutOutcome::Replay)) => json!({"outcome": "replay"}),
        Ok(Err(e)) => error_json(e, now),
        Err(fault) => fault_json(fault),
    }
}

/// Each error a decision may be, with the detail it carries.
pub const ERRORS: &[(&str, Option<&str>)] = &[
    ("sold-out", Some("available")),
    ("sale-not-started", Some("starts_at")),
    ("sale-ended", Some("ended_at")),
    ("hold-expired", Some("skus")),
    ("cart-closed", None),
    ("cart-empty", None),
    ("limit-exceeded", Some("limit")),
    ("invalid-quantity", None),
];

/// The name a case file gives an error.
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_780_000_000_000;

    /// Each error is written with the name and the one detail `ERRORS` gives it, which is what
    /// a case file's `expect` is checked against.
    #[test]
    fn each_error_is_written_as_errors_names_it() {
        for e in [
            CartError::SoldOut(1),
            CartError::SaleNotStarted(NOW),
            CartError::SaleEnded(NOW),
            CartError::HoldExpired(vec!["A".into()]),
            CartError::CartClosed,
            CartError::CartEmpty,
            CartError::LimitExceeded(2),
            CartError::InvalidQuantity,
        ] {
            let written = error_json(&e, NOW);
            let kind = error_kind(&e);
            let detail = ERRORS.iter().find(|(k, _)| *k == kind).map(|(_, d)| *d);
            let mut keys: Vec<&str> = written
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys().map(String::as_str))
                .collect();
            keys.sort_unstable();
            let mut expected = vec!["error"];
            expected.extend(detail.flatten());
            expected.sort_unstable();
            assert_eq!(written["error"], json!(kind), "{e:?}");
            assert_eq!(keys, expected, "{e:?}");
        }
    }
}
