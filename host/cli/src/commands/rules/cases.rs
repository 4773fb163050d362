//! `rules test --cases`: an author's own scenarios, each a request and the decision the rules
//! should make, in a JSON file (`schema/rules-cases.schema.json`). Times are seconds from the
//! request's `now` (to the millisecond), so a case reads as "a sale that started 30 s ago".
//! Each case's expected decision names only what matters to it: a field it leaves out is not
//! compared, and one that no such decision has is refused when the file is read.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use cart_edge::rules::CartRules;
use cart_rules::{CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, SetRequest};
use cart_rules::{MAX_PRICE_CENTS, Millis, SkuInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::diff::Decided;
use super::generate::NOW;

/// An optional field that, when present, is not null (as the schema has it).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// The schema, for editors.
    #[serde(rename = "$schema", default, deserialize_with = "present")]
    _schema: Option<String>,
    cases: Vec<Case>,
}

/// One case: a set-quantity request or a checkout, and the decision expected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default, deserialize_with = "present")]
    set_quantity: Option<SetAsked>,
    #[serde(default, deserialize_with = "present")]
    checkout: Option<CheckoutAsked>,
    expect: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sku {
    sku: String,
    #[serde(default = "defaults::price")]
    price_cents: u64,
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
    /// In a set-quantity case, the SKU asked about.
    #[serde(default, deserialize_with = "present")]
    sku: Option<String>,
    quantity: u32,
    /// The SKU's price.
    #[serde(default, deserialize_with = "present")]
    unit_price_cents: Option<u64>,
    /// The SKU's hold time from now.
    #[serde(default, deserialize_with = "present")]
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
struct SetAsked {
    sku: Sku,
    #[serde(default, deserialize_with = "present")]
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
struct CheckoutAsked {
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
    pub fn price() -> u64 {
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

/// Seconds as milliseconds.
fn millis(seconds: f64) -> Millis {
    // Case files hold times of hours and days, well within an f64's integers; anything past
    // an i64 saturates.
    #[expect(clippy::cast_possible_truncation)]
    let ms = (seconds * 1_000.0).round() as Millis;
    ms
}

/// Seconds from now, as the rules' time.
fn at(seconds: f64) -> Millis {
    NOW.saturating_add(millis(seconds))
}

/// A price as the rules see it, refused past theirs.
fn cents(price: u64, field: &str) -> anyhow::Result<i64> {
    i64::try_from(price)
        .ok()
        .filter(|p| *p <= MAX_PRICE_CENTS)
        .with_context(|| format!("{field}: {price} is past the highest price, {MAX_PRICE_CENTS}"))
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
    fn info(&self) -> anyhow::Result<SkuInfo> {
        Ok(SkuInfo {
            sku: self.sku.clone(),
            price_cents: cents(self.price_cents, "price_cents")?,
            limit_per_customer: self.limit_per_customer,
            starts_at: at(self.starts_at),
            ends_at: at(self.ends_at),
            hold_ttl_ms: millis(self.hold_ttl_seconds),
        })
    }
}

impl CaseLine {
    /// The line, of `sku` (a set-quantity case's) or of the SKU it names among `skus`.
    fn line(&self, skus: &[SkuInfo], sku: Option<&SkuInfo>) -> anyhow::Result<Line> {
        let sku = match (sku, &self.sku) {
            (Some(sku), None) => sku,
            (Some(sku), Some(named)) if *named == sku.sku => sku,
            (Some(sku), Some(named)) => {
                anyhow::bail!("line.sku: {named:?}, in a case that asks of {:?}", sku.sku)
            }
            (None, None) => anyhow::bail!("lines: a checkout's line names its sku"),
            (None, Some(named)) => skus.iter().find(|s| s.sku == *named).with_context(|| {
                format!("lines: a line of {named:?}, which is not among the case's skus")
            })?,
        };
        Ok(Line {
            sku: sku.sku.clone(),
            quantity: self.quantity,
            unit_price_cents: match self.unit_price_cents {
                Some(price) => cents(price, "unit_price_cents")?,
                None => sku.price_cents,
            },
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

fn checkout_json(decided: &Decided<CheckoutOutcome>) -> Value {
    match decided {
        Ok(Ok(CheckoutOutcome::Place)) => json!({"outcome": "place"}),
        Ok(Ok(CheckoutOutcome::Replay)) => json!({"outcome": "replay"}),
        Ok(Err(e)) => error_json(e),
        Err(fault) => fault_json(fault),
    }
}

/// Whether `decided` has everything `expected` names: objects by the keys `expected` has,
/// numbers by value (`600` is `600.0`; integers exactly), anything else equal.
fn matches(expected: &Value, decided: &Value) -> bool {
    match (expected, decided) {
        (Value::Object(e), Value::Object(d)) => e
            .iter()
            .all(|(k, v)| d.get(k).is_some_and(|dv| matches(v, dv))),
        (Value::Number(e), Value::Number(d)) => match (e.as_i64(), d.as_i64()) {
            (Some(e), Some(d)) => e == d,
            _ => e.as_f64() == d.as_f64(),
        },
        (Value::Array(e), Value::Array(d)) => {
            e.len() == d.len() && e.iter().zip(d).all(|(e, d)| matches(e, d))
        }
        _ => expected == decided,
    }
}

/// What the cases found: how many decided otherwise than expected, and the report.
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
        report: format!("{}: {} cases\n", path.display(), file.len()),
    };
    for case in &file {
        let decided = ask(rules, &case.asked);
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

/// A case, read and checked: what it asks, and the decision expected.
struct Ready {
    name: String,
    asked: Asked,
    expect: Value,
}

/// A request, as the rules are asked it (they borrow it).
enum Asked {
    Set {
        sku: SkuInfo,
        line: Option<Line>,
        quantity: u32,
        free: u32,
        customer_elsewhere: u32,
        status: CartStatus,
    },
    Checkout {
        skus: Vec<SkuInfo>,
        lines: Vec<Line>,
        idempotency_key: String,
        placed_with: Option<String>,
        status: CartStatus,
    },
}

/// A case file's cases, or what is wrong with it, and where.
fn parse(text: &str) -> anyhow::Result<Vec<Ready>> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let file: CaseFile = serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow::anyhow!("at {}: {}", e.path(), e.inner()))?;
    file.cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            let asked = asked(&case)
                .and_then(|asked| {
                    let checkout = matches!(asked, Asked::Checkout { .. });
                    check_expect(&case.expect, checkout)
                        .map_err(|e| anyhow::anyhow!("expect: {e}"))?;
                    Ok(asked)
                })
                .with_context(|| format!("at cases[{i}] ({:?})", case.name))?;
            Ok(Ready {
                name: case.name,
                asked,
                expect: case.expect,
            })
        })
        .collect()
}

/// What a case asks, checked.
fn asked(case: &Case) -> anyhow::Result<Asked> {
    Ok(match (&case.set_quantity, &case.checkout) {
        (Some(c), None) => {
            let sku = c.sku.info().context("set_quantity.sku")?;
            let line = c
                .line
                .as_ref()
                .map(|l| l.line(&[], Some(&sku)))
                .transpose()
                .context("set_quantity")?;
            Asked::Set {
                sku,
                line,
                quantity: c.quantity,
                free: c.free,
                customer_elsewhere: c.customer_elsewhere,
                status: c.status.cart(),
            }
        }
        (None, Some(c)) => {
            let skus = c
                .skus
                .iter()
                .map(Sku::info)
                .collect::<anyhow::Result<Vec<_>>>()
                .context("checkout.skus")?;
            let lines = c
                .lines
                .iter()
                .map(|l| l.line(&skus, None))
                .collect::<anyhow::Result<Vec<_>>>()
                .context("checkout")?;
            Asked::Checkout {
                skus,
                lines,
                idempotency_key: c.idempotency_key.clone(),
                placed_with: c.placed_with.clone(),
                status: c.status.cart(),
            }
        }
        _ => anyhow::bail!("a case asks either set_quantity or checkout"),
    })
}

/// Each error a decision may be, with the detail it carries.
const ERRORS: &[(&str, Option<&str>)] = &[
    ("sold-out", Some("available")),
    ("sale-not-started", Some("starts_at")),
    ("sale-ended", Some("ended_at")),
    ("hold-expired", Some("skus")),
    ("cart-closed", None),
    ("cart-empty", None),
    ("limit-exceeded", Some("limit")),
    ("invalid-quantity", None),
];

/// Refuses an expected decision that names nothing, or anything no decision of the case's
/// kind has: each field an expectation names must be one a decision could match.
fn check_expect(expect: &Value, checkout: bool) -> Result<(), String> {
    let Value::Object(fields) = expect else {
        return Err("an object".into());
    };
    let allowed = if let Some(error) = fields.get("error") {
        let named = error.as_str().unwrap_or_default();
        let (_, detail) = ERRORS.iter().find(|(e, _)| *e == named).ok_or_else(|| {
            let errors: Vec<_> = ERRORS.iter().map(|(e, _)| *e).collect();
            format!("error: {error} is none of {}", errors.join(", "))
        })?;
        vec!["error", detail.unwrap_or("error")]
    } else if checkout {
        vec!["outcome"]
    } else {
        vec!["line"]
    };
    let kind = if checkout {
        "outcome (place, replay) or an error"
    } else {
        "line (null: none) or an error"
    };
    if fields.is_empty() || !fields.contains_key(allowed[0]) {
        return Err(format!("names the {kind}"));
    }
    if let Some(other) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(match fields.get("error") {
            Some(error) => format!("{other:?}: not a detail of the error {error}"),
            None => format!("{other:?}: not in a decision that is a {kind}"),
        });
    }
    let typed = |field: &str, ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{field}: {what}"))
        }
    };
    for (field, value) in fields {
        match field.as_str() {
            "outcome" => typed(
                field,
                ["place", "replay"].contains(&value.as_str().unwrap_or("")),
                "place or replay",
            )?,
            "available" | "limit" => typed(field, value.is_u64(), "a whole number from 0")?,
            "starts_at" | "ended_at" => typed(field, value.is_number(), "seconds from now")?,
            "skus" => typed(
                field,
                value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string)),
                "a list of SKUs",
            )?,
            "line" => check_line(value)?,
            _ => {}
        }
    }
    Ok(())
}

/// An expected line: null, or the fields of a line it names.
fn check_line(line: &Value) -> Result<(), String> {
    let fields = match line {
        Value::Null => return Ok(()),
        Value::Object(fields) => fields,
        _ => return Err("line: an object, or null for none".into()),
    };
    for (field, value) in fields {
        let ok = match field.as_str() {
            "sku" => value.is_string(),
            "quantity" | "unit_price_cents" => value.is_u64(),
            "hold_expires_at" => value.is_number(),
            "held" => value.is_boolean(),
            _ => return Err(format!("line.{field}: not a field of a line")),
        };
        if !ok {
            return Err(format!("line.{field}: not of a line's {field}'s type"));
        }
    }
    Ok(())
}

/// The decision `rules` makes of a case, as its `expect` would write it.
fn ask(rules: &dyn CartRules, asked: &Asked) -> Value {
    match asked {
        Asked::Set {
            sku,
            line,
            quantity,
            free,
            customer_elsewhere,
            status,
        } => set_json(&rules.set_quantity(&SetRequest {
            now: NOW,
            status: *status,
            sku,
            line: line.as_ref(),
            quantity: *quantity,
            free: *free,
            customer_elsewhere: *customer_elsewhere,
        })),
        Asked::Checkout {
            skus,
            lines,
            idempotency_key,
            placed_with,
            status,
        } => checkout_json(&rules.checkout(&CheckoutRequest {
            now: NOW,
            status: *status,
            lines,
            skus,
            idempotency_key,
            placed_with: placed_with.as_deref(),
        })),
    }
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
        let template = include_str!("../../../templates/rules/cases.json");
        let mut files = vec![
            (first.to_owned(), true),
            (scarce.to_owned(), true),
            (template.to_owned(), true),
        ];
        let one = |case: &str| format!(r#"{{"cases": [{{"name": "one", {case}}}]}}"#);
        let set = r#""set_quantity": {"sku": {"sku": "A"}, "quantity": 1}"#;
        let checkout =
            |line: &str| format!(r#""checkout": {{"skus": [{{"sku": "A"}}], "lines": [{line}]}}"#);
        files.push((
            one(&format!(
                r#"{set}, "expect": {{"error": "sold-out", "available": 0}}"#
            )),
            true,
        ));
        files.push((
            r#"{"$schema": "../rules-cases.schema.json", "cases": []}"#.to_owned(),
            true,
        ));
        for bad in [
            first.replace("\"quantity\": 1 }", "\"quantty\": 1 }"),
            first.replace("\"name\"", "\"title\""),
            first.replace("\"open\"", "\"closed\""),
            first.replace(
                "\"checkout\": {",
                "\"set_quantity\": { \"sku\": { \"sku\": \"A\" }, \"quantity\": 1 }, \"checkout\": {",
            ),
            one(r#""expect": {"line": null}"#),
            one(&format!(r#"{set}, "expect": {{}}"#)),
            one(&format!(r#"{set}, "expect": {{"outcome": "place"}}"#)),
            one(&format!(r#"{set}, "expect": {{"error": "sold-out", "limit": 2}}"#)),
            one(&format!(r#"{set}, "expect": {{"error": "sold_out"}}"#)),
            one(&format!(r#"{set}, "expect": {{"line": {{"quantity": 1, "colour": "red"}}}}"#)),
            one(&format!(r#"{set}, "set_quantity": null, "expect": {{"line": null}}"#)),
            one(&format!(r#"{}, "expect": {{"line": null}}"#, checkout(r#"{"sku": "A", "quantity": 1}"#))),
            one(&format!(r#"{}, "expect": {{"outcome": "place"}}"#, checkout(r#"{"quantity": 1}"#))),
            one(r#""set_quantity": {"sku": {"sku": "A", "price_cents": -1}, "quantity": 1}, "expect": {"line": null}"#),
            one(r#""set_quantity": {"sku": {"sku": "A"}, "quantity": 5000000000}, "expect": {"line": null}"#),
            one(r#""set_quantity": {"sku": {"sku": "A"}, "quantity": 1, "line": null}, "expect": {"line": null}"#),
        ] {
            assert_ne!(&bad, first, "each bad file differs");
            files.push((bad, false));
        }
        for (text, valid) in files {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(validator.is_valid(&value), valid, "the schema on {text}");
            assert_eq!(parse(&text).is_ok(), valid, "the parser on {text}");
        }
        // What a schema cannot say: a checkout's line of a SKU the checkout does not have.
        let stranger = one(&format!(
            r#"{}, "expect": {{"outcome": "place"}}"#,
            checkout(r#"{"sku": "B", "quantity": 1}"#)
        ));
        let refused = parse(&stranger).err().map(|e| format!("{e:#}"));
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("cases[0]") && e.contains("\"B\"")),
            "{refused:?}"
        );
        // What a case leaves out, as both say.
        let sku = &schema["$defs"]["sku"]["properties"];
        assert_eq!(sku["price_cents"]["default"], json!(defaults::price()));
        assert_eq!(
            sku["limit_per_customer"]["default"],
            json!(defaults::limit())
        );
        assert_eq!(sku["starts_at"]["default"], json!(defaults::starts()));
        assert_eq!(sku["ends_at"]["default"], json!(defaults::ends()));
        assert_eq!(sku["hold_ttl_seconds"]["default"], json!(defaults::hold()));
        let set = &schema["$defs"]["setQuantity"]["properties"];
        assert_eq!(set["free"]["default"], json!(defaults::free()));
        let checkout = &schema["$defs"]["checkout"]["properties"];
        assert_eq!(
            checkout["idempotency_key"]["default"],
            json!(defaults::key())
        );
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
