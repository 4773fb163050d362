//! What the cart rules are asked, owned, and written as authors write it: the requests of a
//! case file (`schema/rules-cases.schema.json`), times in seconds from the request's `now`,
//! and whatever equals a default left out. `rules test --cases` reads them, `rules test` prints
//! the request that breaks a rule as one, and an edge keeps its own recent ones ([`Sample`]) for
//! `rules diff --edge` to ask two modules.

use std::collections::VecDeque;
use std::sync::Mutex;

use cart_rules::{
    CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, MAX_PRICE_CENTS, Millis,
    SetRequest, SkuInfo,
};
use serde::{Deserialize, Serialize};

use crate::decided::Decided;
pub use crate::decided::Seconds;
use crate::rules::{CartRules, GuestFault};

/// A request the rules are asked, owning what it refers to.
#[derive(Clone, Debug, PartialEq)]
pub enum Asked {
    Set(SetAsked),
    Checkout(CheckoutAsked),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SetAsked {
    pub now: Millis,
    pub status: CartStatus,
    pub sku: SkuInfo,
    pub line: Option<Line>,
    pub quantity: u32,
    pub free: u32,
    pub customer_elsewhere: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckoutAsked {
    pub now: Millis,
    pub status: CartStatus,
    pub skus: Vec<SkuInfo>,
    pub lines: Vec<Line>,
    pub idempotency_key: String,
    pub placed_with: Option<String>,
}

impl SetAsked {
    pub fn of(req: &SetRequest<'_>) -> Self {
        Self {
            now: req.now,
            status: req.status,
            sku: req.sku.clone(),
            line: req.line.cloned(),
            quantity: req.quantity,
            free: req.free,
            customer_elsewhere: req.customer_elsewhere,
        }
    }

    pub fn request(&self) -> SetRequest<'_> {
        SetRequest {
            now: self.now,
            status: self.status,
            sku: &self.sku,
            line: self.line.as_ref(),
            quantity: self.quantity,
            free: self.free,
            customer_elsewhere: self.customer_elsewhere,
        }
    }
}

impl CheckoutAsked {
    pub fn of(req: &CheckoutRequest<'_>) -> Self {
        Self {
            now: req.now,
            status: req.status,
            skus: req.skus.to_vec(),
            lines: req.lines.to_vec(),
            idempotency_key: req.idempotency_key.to_owned(),
            placed_with: req.placed_with.map(str::to_owned),
        }
    }

    pub fn request(&self) -> CheckoutRequest<'_> {
        CheckoutRequest {
            now: self.now,
            status: self.status,
            lines: &self.lines,
            skus: &self.skus,
            idempotency_key: &self.idempotency_key,
            placed_with: self.placed_with.as_deref(),
        }
    }

    /// The same checkout with its keys replaced by the case file's: what a shopper's client
    /// sent is not kept, only whether the cart was placed with the key asked again.
    fn keys_forgotten(mut self) -> Self {
        self.placed_with = self.placed_with.map(|placed| {
            if placed == self.idempotency_key {
                defaults::key()
            } else {
                "key-2".to_owned()
            }
        });
        self.idempotency_key = defaults::key();
        self
    }
}

// ---- the case file's form -------------------------------------------------------------------

/// A request as a case file writes it: `{"set_quantity": {...}}` or `{"checkout": {...}}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Form {
    SetQuantity(SetForm),
    Checkout(CheckoutForm),
}

/// An optional field that, when present, is not null (as the schema has it).
pub fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkuForm {
    pub sku: String,
    #[serde(
        default = "defaults::price",
        skip_serializing_if = "defaults::is_price"
    )]
    pub price_cents: u64,
    #[serde(
        default = "defaults::limit",
        skip_serializing_if = "defaults::is_limit"
    )]
    pub limit_per_customer: u32,
    #[serde(
        default = "defaults::starts",
        skip_serializing_if = "defaults::is_starts"
    )]
    pub starts_at: Seconds,
    #[serde(default = "defaults::ends", skip_serializing_if = "defaults::is_ends")]
    pub ends_at: Seconds,
    #[serde(default = "defaults::hold", skip_serializing_if = "defaults::is_hold")]
    pub hold_ttl_seconds: Seconds,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineForm {
    /// In a set-quantity case, the SKU asked about.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sku: Option<String>,
    pub quantity: u32,
    /// The SKU's price.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub unit_price_cents: Option<u64>,
    /// The SKU's hold time from now.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold_expires_at: Option<Seconds>,
    #[serde(default = "defaults::yes", skip_serializing_if = "defaults::is_yes")]
    pub held: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    #[default]
    Open,
    CheckedOut,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetForm {
    pub sku: SkuForm,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub line: Option<LineForm>,
    pub quantity: u32,
    #[serde(default = "defaults::free", skip_serializing_if = "defaults::is_free")]
    pub free: u32,
    #[serde(default, skip_serializing_if = "defaults::is_zero")]
    pub customer_elsewhere: u32,
    #[serde(default, skip_serializing_if = "defaults::is_open")]
    pub status: Status,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutForm {
    pub skus: Vec<SkuForm>,
    pub lines: Vec<LineForm>,
    #[serde(default = "defaults::key", skip_serializing_if = "defaults::is_key")]
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_with: Option<String>,
    #[serde(default, skip_serializing_if = "defaults::is_open")]
    pub status: Status,
}

/// What a case leaves out (the schema says the same, and a test holds them to it).
pub mod defaults {
    use super::{Seconds, Status};

    pub fn price() -> u64 {
        1_000
    }
    pub fn limit() -> u32 {
        10
    }
    pub fn starts() -> Seconds {
        Seconds(-3_600_000)
    }
    pub fn ends() -> Seconds {
        Seconds(3_600_000)
    }
    pub fn hold() -> Seconds {
        Seconds(600_000)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn free() -> u32 {
        100
    }
    pub fn key() -> String {
        "key-1".into()
    }

    pub(super) fn is_price(v: &u64) -> bool {
        *v == price()
    }
    pub(super) fn is_limit(v: &u32) -> bool {
        *v == limit()
    }
    pub(super) fn is_starts(v: &Seconds) -> bool {
        *v == starts()
    }
    pub(super) fn is_ends(v: &Seconds) -> bool {
        *v == ends()
    }
    pub(super) fn is_hold(v: &Seconds) -> bool {
        *v == hold()
    }
    pub(super) fn is_yes(v: &bool) -> bool {
        *v
    }
    pub(super) fn is_free(v: &u32) -> bool {
        *v == free()
    }
    pub(super) fn is_zero(v: &u32) -> bool {
        *v == 0
    }
    pub(super) fn is_key(v: &String) -> bool {
        *v == key()
    }
    pub(super) fn is_open(v: &Status) -> bool {
        *v == Status::Open
    }
}

/// A price as the rules see it, refused past theirs.
fn cents(price: u64, field: &str) -> Result<i64, String> {
    i64::try_from(price)
        .ok()
        .filter(|p| *p <= MAX_PRICE_CENTS)
        .ok_or_else(|| format!("{field}: {price} is past the highest price, {MAX_PRICE_CENTS}"))
}

impl SkuForm {
    fn info(&self, now: Millis) -> Result<SkuInfo, String> {
        Ok(SkuInfo {
            sku: self.sku.clone(),
            price_cents: cents(self.price_cents, "price_cents")?,
            limit_per_customer: self.limit_per_customer,
            starts_at: now.saturating_add(self.starts_at.0),
            ends_at: now.saturating_add(self.ends_at.0),
            hold_ttl_ms: self.hold_ttl_seconds.0,
        })
    }

    fn of(sku: &SkuInfo, now: Millis) -> Self {
        Self {
            sku: sku.sku.clone(),
            price_cents: sku.price_cents.try_into().unwrap_or_default(),
            limit_per_customer: sku.limit_per_customer,
            starts_at: Seconds(sku.starts_at.saturating_sub(now)),
            ends_at: Seconds(sku.ends_at.saturating_sub(now)),
            hold_ttl_seconds: Seconds(sku.hold_ttl_ms),
        }
    }
}

impl LineForm {
    /// The line, of `sku` (a set-quantity case's) or of the SKU it names among `skus`, or of
    /// another SKU when it names its price and hold: a checkout is given only the SKUs of its
    /// held lines.
    fn line(&self, skus: &[SkuInfo], sku: Option<&SkuInfo>, now: Millis) -> Result<Line, String> {
        if let (None, Some(named), Some(price), Some(expires)) =
            (sku, &self.sku, self.unit_price_cents, self.hold_expires_at)
            && !skus.iter().any(|s| s.sku == *named)
        {
            return Ok(Line {
                sku: named.clone(),
                quantity: self.quantity,
                unit_price_cents: cents(price, "unit_price_cents")?,
                hold_expires_at: now.saturating_add(expires.0),
                held: self.held,
            });
        }
        let sku = match (sku, &self.sku) {
            (Some(sku), None) => sku,
            (Some(sku), Some(named)) if *named == sku.sku => sku,
            (Some(sku), Some(named)) => {
                return Err(format!(
                    "line.sku: {named:?}, in a case that asks of {:?}",
                    sku.sku
                ));
            }
            (None, None) => return Err("lines: a checkout's line names its sku".into()),
            (None, Some(named)) => skus.iter().find(|s| s.sku == *named).ok_or_else(|| {
                format!(
                    "lines: a line of {named:?}, which is not among the case's skus, names its \
                     unit_price_cents and hold_expires_at"
                )
            })?,
        };
        Ok(Line {
            sku: sku.sku.clone(),
            quantity: self.quantity,
            unit_price_cents: match self.unit_price_cents {
                Some(price) => cents(price, "unit_price_cents")?,
                None => sku.price_cents,
            },
            hold_expires_at: now
                .saturating_add(self.hold_expires_at.map_or(sku.hold_ttl_ms, |s| s.0)),
            held: self.held,
        })
    }

    /// `line` as written, leaving out what is its SKU's (`named`: whether a line names its SKU).
    fn of(line: &Line, sku: Option<&SkuInfo>, named: bool, now: Millis) -> Self {
        let expires = line.hold_expires_at.saturating_sub(now);
        Self {
            sku: named.then(|| line.sku.clone()),
            quantity: line.quantity,
            unit_price_cents: match sku {
                Some(s) if s.price_cents == line.unit_price_cents => None,
                _ => Some(line.unit_price_cents.try_into().unwrap_or_default()),
            },
            hold_expires_at: match sku {
                Some(s) if s.hold_ttl_ms == expires => None,
                _ => Some(Seconds(expires)),
            },
            held: line.held,
        }
    }
}

impl Status {
    fn cart(self) -> CartStatus {
        match self {
            Self::Open => CartStatus::Open,
            Self::CheckedOut => CartStatus::CheckedOut,
        }
    }

    fn of(status: CartStatus) -> Self {
        match status {
            CartStatus::Open => Self::Open,
            CartStatus::CheckedOut => Self::CheckedOut,
        }
    }
}

impl Form {
    /// The request this form asks at `now`, or what is wrong with it.
    pub fn asked(&self, now: Millis) -> Result<Asked, String> {
        Ok(match self {
            Self::SetQuantity(c) => {
                let sku = c
                    .sku
                    .info(now)
                    .map_err(|e| format!("set_quantity.sku: {e}"))?;
                let line = c
                    .line
                    .as_ref()
                    .map(|l| l.line(&[], Some(&sku), now))
                    .transpose()
                    .map_err(|e| format!("set_quantity: {e}"))?;
                Asked::Set(SetAsked {
                    now,
                    status: c.status.cart(),
                    sku,
                    line,
                    quantity: c.quantity,
                    free: c.free,
                    customer_elsewhere: c.customer_elsewhere,
                })
            }
            Self::Checkout(c) => {
                let skus = c
                    .skus
                    .iter()
                    .map(|s| s.info(now))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("checkout.skus: {e}"))?;
                let lines = c
                    .lines
                    .iter()
                    .map(|l| l.line(&skus, None, now))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("checkout: {e}"))?;
                Asked::Checkout(CheckoutAsked {
                    now,
                    status: c.status.cart(),
                    skus,
                    lines,
                    idempotency_key: c.idempotency_key.clone(),
                    placed_with: c.placed_with.clone(),
                })
            }
        })
    }
}

impl Asked {
    /// This request as a case file writes it, times from its `now`.
    pub fn form(&self) -> Form {
        match self {
            Self::Set(a) => Form::SetQuantity(SetForm {
                sku: SkuForm::of(&a.sku, a.now),
                line: a
                    .line
                    .as_ref()
                    .map(|l| LineForm::of(l, Some(&a.sku), l.sku != a.sku.sku, a.now)),
                quantity: a.quantity,
                free: a.free,
                customer_elsewhere: a.customer_elsewhere,
                status: Status::of(a.status),
            }),
            Self::Checkout(a) => Form::Checkout(CheckoutForm {
                skus: a.skus.iter().map(|s| SkuForm::of(s, a.now)).collect(),
                lines: a
                    .lines
                    .iter()
                    .map(|l| {
                        let sku = a.skus.iter().find(|s| s.sku == l.sku);
                        LineForm::of(l, sku, true, a.now)
                    })
                    .collect(),
                idempotency_key: a.idempotency_key.clone(),
                placed_with: a.placed_with.clone(),
                status: Status::of(a.status),
            }),
        }
    }

    /// What `rules` decide of it.
    pub fn ask(&self, rules: &dyn CartRules) -> Decided {
        match self {
            Self::Set(a) => Decided::Set(rules.set_quantity(&a.request())),
            Self::Checkout(a) => Decided::Checkout(rules.checkout(&a.request())),
        }
    }
}

// ---- an edge's recent requests ----------------------------------------------------------------

/// Requests kept: the most recent, of either kind.
pub const KEPT: usize = 1_000;

/// The requests this edge's rules were asked most recently, at most [`KEPT`]: only what the
/// rules see (no customer or cart id), with the shoppers' idempotency keys replaced. Noting one
/// never waits: while a reader copies them, requests go unnoted.
#[derive(Default)]
pub struct Sample {
    kept: Mutex<VecDeque<Asked>>,
}

impl Sample {
    fn note(&self, asked: impl FnOnce() -> Asked) {
        if let Ok(mut kept) = self.kept.try_lock() {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(asked());
        }
    }

    /// The requests kept, oldest first.
    pub fn recent(&self) -> Vec<Asked> {
        crate::locks::lock(&self.kept).iter().cloned().collect()
    }
}

/// Rules that note each request they are asked in a [`Sample`], then ask `rules`.
pub struct Noting<'a> {
    pub rules: &'a dyn CartRules,
    pub sample: &'a Sample,
}

impl CartRules for Noting<'_> {
    fn version(&self) -> &str {
        self.rules.version()
    }

    fn set_quantity(
        &self,
        req: &SetRequest<'_>,
    ) -> Result<Result<Option<Line>, CartError>, GuestFault> {
        self.sample.note(|| Asked::Set(SetAsked::of(req)));
        self.rules.set_quantity(req)
    }

    fn checkout(
        &self,
        req: &CheckoutRequest<'_>,
    ) -> Result<Result<CheckoutOutcome, CartError>, GuestFault> {
        self.sample
            .note(|| Asked::Checkout(CheckoutAsked::of(req).keys_forgotten()));
        self.rules.checkout(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(name: &str, now: Millis) -> SkuInfo {
        SkuInfo {
            sku: name.into(),
            price_cents: 1_999,
            limit_per_customer: 2,
            starts_at: now - 30_500,
            ends_at: now + 3_600_000,
            hold_ttl_ms: 120_000,
        }
    }

    /// Written and read again at another `now`, a request asks the same thing, moved in time.
    #[test]
    fn a_request_written_and_read_again_asks_the_same() {
        let now = 1_780_000_000_000;
        let a = sku("A", now);
        let line = Line {
            sku: "A".into(),
            quantity: 2,
            unit_price_cents: 1_500,
            hold_expires_at: now + 1_250,
            held: true,
        };
        let set = Asked::Set(SetAsked {
            now,
            status: CartStatus::Open,
            sku: a.clone(),
            line: Some(line.clone()),
            quantity: 3,
            free: 7,
            customer_elsewhere: 1,
        });
        let checkout = Asked::Checkout(CheckoutAsked {
            now,
            status: CartStatus::CheckedOut,
            skus: vec![sku("B", now)],
            lines: vec![
                line,
                Line {
                    sku: "B".into(),
                    quantity: 1,
                    unit_price_cents: 1_999,
                    hold_expires_at: now + 120_000,
                    held: false,
                },
            ],
            idempotency_key: "k".into(),
            placed_with: Some("other".into()),
        });
        for asked in [set, checkout] {
            let text = serde_json::to_string(&asked.form()).expect("JSON");
            let form: Form = serde_json::from_str(&text).expect("read again");
            let day = 86_400_000;
            let again = form.asked(now + day).expect("a request");
            assert_eq!(again, later(&asked, day), "{text}");
        }
    }

    /// `asked`, `by` milliseconds later.
    fn later(asked: &Asked, by: Millis) -> Asked {
        let sku = |s: &SkuInfo| SkuInfo {
            starts_at: s.starts_at + by,
            ends_at: s.ends_at + by,
            ..s.clone()
        };
        let line = |l: &Line| Line {
            hold_expires_at: l.hold_expires_at + by,
            ..l.clone()
        };
        match asked.clone() {
            Asked::Set(a) => Asked::Set(SetAsked {
                now: a.now + by,
                sku: sku(&a.sku),
                line: a.line.as_ref().map(line),
                ..a
            }),
            Asked::Checkout(a) => Asked::Checkout(CheckoutAsked {
                now: a.now + by,
                skus: a.skus.iter().map(sku).collect(),
                lines: a.lines.iter().map(line).collect(),
                ..a
            }),
        }
    }

    #[test]
    fn what_equals_a_default_is_left_out() {
        let now = 0;
        let plain = Asked::Set(SetAsked {
            now,
            status: CartStatus::Open,
            sku: SkuInfo {
                sku: "A".into(),
                price_cents: 1_000,
                limit_per_customer: 10,
                starts_at: -3_600_000,
                ends_at: 3_600_000,
                hold_ttl_ms: 600_000,
            },
            line: None,
            quantity: 1,
            free: 100,
            customer_elsewhere: 0,
        });
        assert_eq!(
            serde_json::to_string(&plain.form()).expect("JSON"),
            r#"{"set_quantity":{"sku":{"sku":"A"},"quantity":1}}"#
        );
    }

    #[test]
    fn a_sample_keeps_the_most_recent_and_forgets_shoppers_keys() {
        let now = 1_780_000_000_000;
        let sample = Sample::default();
        let a = sku("A", now);
        for quantity in 0..u32::try_from(KEPT + 5).expect("small") {
            sample.note(|| {
                Asked::Set(SetAsked {
                    now,
                    status: CartStatus::Open,
                    sku: a.clone(),
                    line: None,
                    quantity,
                    free: 1,
                    customer_elsewhere: 0,
                })
            });
        }
        let checkout = CheckoutAsked {
            now,
            status: CartStatus::CheckedOut,
            skus: Vec::new(),
            lines: Vec::new(),
            idempotency_key: "a shopper's key".into(),
            placed_with: Some("a shopper's key".into()),
        };
        sample.note(|| Asked::Checkout(checkout.keys_forgotten()));
        let recent = sample.recent();
        assert_eq!(recent.len(), KEPT);
        assert!(matches!(&recent[0], Asked::Set(s) if s.quantity == 6));
        let text = format!("{:?}", recent.last());
        assert!(!text.contains("shopper"), "{text}");
        assert!(text.contains(r#"placed_with: Some("key-1")"#), "{text}");
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore = "a measurement, run by hand"]
    fn noting_costs() {
        let now = 1_780_000_000_000;
        let sku = SkuInfo {
            sku: "BAG-1".into(),
            price_cents: 1_999,
            limit_per_customer: 2,
            starts_at: now,
            ends_at: now + 1,
            hold_ttl_ms: 600_000,
        };
        let line = Line {
            sku: "BAG-1".into(),
            quantity: 1,
            unit_price_cents: 1_999,
            hold_expires_at: now,
            held: true,
        };
        let req = SetRequest {
            now,
            status: CartStatus::Open,
            sku: &sku,
            line: Some(&line),
            quantity: 2,
            free: 10,
            customer_elsewhere: 0,
        };
        let sample = Sample::default();
        let n = 2_000_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            sample.note(|| Asked::Set(SetAsked::of(std::hint::black_box(&req))));
        }
        let per = t.elapsed().as_nanos() / n;
        println!("{per} ns per set-quantity noted");
    }
}
