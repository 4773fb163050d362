//! `rules test --cases`: an author's own scenarios, each a request and the decision the rules
//! should make, in a JSON file (`schema/rules-cases.schema.json`). Times are seconds from the
//! request's `now`, so a case reads as "a sale that started 30 s ago". Each case's expected
//! decision names only what matters to it: a field it leaves out is not compared.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use cart_edge::rules::CartRules;
use cart_rules::{CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, SetRequest};
use cart_rules::{Millis, SkuInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::diff::Decided;
use super::generate::NOW;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

/// One case: a set-quantity request or a checkout, and the decision expected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    set_quantity: Option<SetCase>,
    checkout: Option<CheckoutCase>,
    expect: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sku {
    sku: String,
    #[serde(default = "defaults::price")]
    price_cents: i64,
    #[serde(default = "defaults::limit")]
    limit_per_customer: u32,
    #[serde(default = "defaults::starts")]
    starts_at: f64,
    #[serde(default = "defaults::ends")]
    ends_at: f64,
    #[serde(default = "defaults::hold")]
    hold_ttl_seconds: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseLine {
    /// The SKU asked about, in a set-quantity case.
    sku: Option<String>,
    quantity: u32,
    /// The SKU's price.
    unit_price_cents: Option<i64>,
    /// The SKU's hold time from now.
    hold_expires_at: Option<f64>,
    #[serde(default = "defaults::yes")]
    held: bool,
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    #[default]
    Open,
    CheckedOut,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCase {
    sku: Sku,
    line: Option<CaseLine>,
    quantity: u32,
    #[serde(default = "defaults::free")]
    free: u32,
    #[serde(default)]
    customer_elsewhere: u32,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutCase {
    skus: Vec<Sku>,
    lines: Vec<CaseLine>,
    #[serde(default = "defaults::key")]
    idempotency_key: String,
    placed_with: Option<String>,
    #[serde(default)]
    status: Status,
}

/// What a case leaves out.
mod defaults {
    pub fn price() -> i64 {
        1_000
    }
    pub fn limit() -> u32 {
        10
    }
    pub fn starts() -> f64 {
        -3_600.0
    }
    pub fn ends() -> f64 {
        3_600.0
    }
    pub fn hold() -> f64 {
        600.0
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
}

/// Seconds from now, as the rules' time.
fn at(seconds: f64) -> Millis {
    // Case files hold times of hours and days: well within an f64's integers.
    #[expect(clippy::cast_possible_truncation)]
    let ms = (seconds * 1_000.0).round() as Millis;
    NOW.saturating_add(ms)
}

/// The rules' time, as seconds from now (whole ones written without a fraction).
fn from_now(ms: Millis) -> Value {
    let ms = ms.saturating_sub(NOW);
    if ms % 1_000 == 0 {
        json!(ms / 1_000)
    } else {
        #[expect(clippy::cast_precision_loss)]
        let seconds = ms as f64 / 1_000.0;
        json!(seconds)
    }
}

impl Sku {
    fn info(&self) -> SkuInfo {
        SkuInfo {
            sku: self.sku.clone(),
            price_cents: self.price_cents,
            limit_per_customer: self.limit_per_customer,
            starts_at: at(self.starts_at),
            ends_at: at(self.ends_at),
            hold_ttl_ms: at(self.hold_ttl_seconds) - NOW,
        }
    }
}

impl CaseLine {
    fn line(&self, skus: &[SkuInfo], default_sku: Option<&str>) -> anyhow::Result<Line> {
        let name = self
            .sku
            .as_deref()
            .or(default_sku)
            .context("a checkout case's line names its sku")?;
        let sku = skus
            .iter()
            .find(|s| s.sku == name)
            .with_context(|| format!("line of {name:?}, which is not among the case's skus"))?;
        Ok(Line {
            sku: name.to_owned(),
            quantity: self.quantity,
            unit_price_cents: self.unit_price_cents.unwrap_or(sku.price_cents),
            hold_expires_at: self.hold_expires_at.map_or(NOW + sku.hold_ttl_ms, at),
            held: self.held,
        })
    }
}

impl Status {
    fn cart(self) -> CartStatus {
        match self {
            Self::Open => CartStatus::Open,
            Self::CheckedOut => CartStatus::CheckedOut,
        }
    }
}

/// A decision as a case's `expect` writes it.
fn error_json(e: &CartError) -> Value {
    let kind = super::diff::error_kind(e);
    match e {
        CartError::SoldOut(n) => json!({"error": kind, "available": n}),
        CartError::SaleNotStarted(t) => json!({"error": kind, "starts_at": from_now(*t)}),
        CartError::SaleEnded(t) => json!({"error": kind, "ended_at": from_now(*t)}),
        CartError::HoldExpired(skus) => json!({"error": kind, "skus": skus}),
        CartError::LimitExceeded(n) => json!({"error": kind, "limit": n}),
        CartError::CartClosed | CartError::CartEmpty | CartError::InvalidQuantity => {
            json!({"error": kind})
        }
    }
}

fn set_json(decided: &Decided<Option<Line>>) -> Value {
    match decided {
        Ok(Ok(None)) => json!({"line": null}),
        Ok(Ok(Some(l))) => json!({"line": {
            "sku": l.sku, "quantity": l.quantity, "unit_price_cents": l.unit_price_cents,
            "hold_expires_at": from_now(l.hold_expires_at), "held": l.held,
        }}),
        Ok(Err(e)) => error_json(e),
        Err(fault) => json!({"fault": fault.to_string()}),
    }
}

fn checkout_json(decided: &Decided<CheckoutOutcome>) -> Value {
    match decided {
        Ok(Ok(CheckoutOutcome::Place)) => json!({"outcome": "place"}),
        Ok(Ok(CheckoutOutcome::Replay)) => json!({"outcome": "replay"}),
        Ok(Err(e)) => error_json(e),
        Err(fault) => json!({"fault": fault.to_string()}),
    }
}

/// Whether `decided` has everything `expected` names: objects by the keys `expected` has,
/// numbers by value (`600` is `600.0`), anything else equal.
fn matches(expected: &Value, decided: &Value) -> bool {
    match (expected, decided) {
        (Value::Object(e), Value::Object(d)) => e
            .iter()
            .all(|(k, v)| d.get(k).is_some_and(|dv| matches(v, dv))),
        (Value::Number(e), Value::Number(d)) => e.as_f64() == d.as_f64(),
        (Value::Array(e), Value::Array(d)) => {
            e.len() == d.len() && e.iter().zip(d).all(|(e, d)| matches(e, d))
        }
        _ => expected == decided,
    }
}

/// What the cases found: how many ran, and the report.
pub struct Ran {
    pub failed: usize,
    pub report: String,
}

/// Reads the case file at `path` and asks `rules` each case.
pub fn run(rules: &dyn CartRules, path: &Path) -> anyhow::Result<Ran> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = parse(&text).with_context(|| format!("{}", path.display()))?;
    let mut ran = Ran {
        failed: 0,
        report: format!("{}: {} cases\n", path.display(), file.cases.len()),
    };
    for case in &file.cases {
        let decided = ask(rules, case)
            .with_context(|| format!("{}: case {:?}", path.display(), case.name))?;
        if matches(&case.expect, &decided) {
            let _ = writeln!(ran.report, "  ok      {}", case.name);
        } else {
            ran.failed += 1;
            let _ = writeln!(
                ran.report,
                "  FAILED  {}\n          expected: {}\n          decided:  {}",
                case.name, case.expect, decided
            );
        }
    }
    Ok(ran)
}

/// A case file's cases, or what is wrong with it, and where.
fn parse(text: &str) -> anyhow::Result<CaseFile> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let file: CaseFile = serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow::anyhow!("at {}: {}", e.path(), e.inner()))?;
    for case in &file.cases {
        anyhow::ensure!(
            case.set_quantity.is_some() != case.checkout.is_some(),
            "case {:?} asks either set_quantity or checkout",
            case.name
        );
    }
    Ok(file)
}

/// The decision `rules` makes of a case, as its `expect` would write it.
fn ask(rules: &dyn CartRules, case: &Case) -> anyhow::Result<Value> {
    Ok(match (&case.set_quantity, &case.checkout) {
        (Some(c), None) => {
            let sku = c.sku.info();
            let line = c
                .line
                .as_ref()
                .map(|l| l.line(std::slice::from_ref(&sku), Some(&sku.sku)))
                .transpose()?;
            set_json(&rules.set_quantity(&SetRequest {
                now: NOW,
                status: c.status.cart(),
                sku: &sku,
                line: line.as_ref(),
                quantity: c.quantity,
                free: c.free,
                customer_elsewhere: c.customer_elsewhere,
            }))
        }
        (None, Some(c)) => {
            let skus: Vec<_> = c.skus.iter().map(Sku::info).collect();
            let lines = c
                .lines
                .iter()
                .map(|l| l.line(&skus, None))
                .collect::<anyhow::Result<Vec<_>>>()?;
            checkout_json(&rules.checkout(&CheckoutRequest {
                now: NOW,
                status: c.status.cart(),
                lines: &lines,
                skus: &skus,
                idempotency_key: &c.idempotency_key,
                placed_with: c.placed_with.as_deref(),
            }))
        }
        _ => anyhow::bail!("a case asks either set_quantity or checkout"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The case files' JSON Schema (schema/rules-cases.schema.json) and the parser take and
    /// refuse the same files.
    #[test]
    fn the_json_schema_and_the_parser_agree() {
        let schema: Value = serde_json::from_str(include_str!(
            "../../../../../schema/rules-cases.schema.json"
        ))
        .expect("JSON");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let first = include_str!("../../../../../guest/examples/first-minute/cases.json");
        let scarce = include_str!("../../../../../guest/examples/scarce-holds/cases.json");
        let mut files = vec![(first.to_owned(), true), (scarce.to_owned(), true)];
        for bad in [
            first.replace("\"quantity\": 1 }", "\"quantty\": 1 }"),
            first.replace("\"name\"", "\"title\""),
            first.replace("\"open\"", "\"closed\""),
            first.replace(
                "\"checkout\": {",
                "\"set_quantity\": { \"sku\": { \"sku\": \"A\" }, \"quantity\": 1 }, \"checkout\": {",
            ),
            r#"{"cases": [{"name": "neither", "expect": {"line": null}}]}"#.to_owned(),
        ] {
            assert_ne!(&bad, first, "each bad file differs");
            files.push((bad, false));
        }
        for (text, valid) in files {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(validator.is_valid(&value), valid, "the schema on {text}");
            assert_eq!(parse(&text).is_ok(), valid, "the parser on {text}");
        }
    }

    #[test]
    fn an_expected_decision_is_matched_by_what_it_names() {
        let decided = json!({"line": {"quantity": 2, "held": true, "hold_expires_at": 600.5}});
        for (expected, matched) in [
            (json!({"line": {"quantity": 2}}), true),
            (json!({"line": {"quantity": 2.0, "held": true}}), true),
            (json!({"line": {"hold_expires_at": 600.5}}), true),
            (json!({"line": {"hold_expires_at": 600}}), false),
            (json!({"line": {"quantity": 1}}), false),
            (json!({"line": null}), false),
            (json!({"error": "sold-out"}), false),
        ] {
            assert_eq!(matches(&expected, &decided), matched, "{expected}");
        }
    }
}
