//! `rules test --cases`: an author's own scenarios, each a request and the decision the rules
//! should make, in a JSON file (`schema/rules-cases.schema.json`). Times are seconds from the
//! request's `now` (to the millisecond), so a case reads as "a sale that started 30 s ago".
//! Each case's expected decision names only what matters to it: a field it leaves out is not
//! compared, and one that no such decision has is refused when the file is read.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use cart_edge::asked::{Asked, CheckoutForm, Form, SetForm};
use cart_edge::decided::ERRORS;
use cart_edge::rules::CartRules;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::generate::NOW;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// The schema, for editors.
    #[serde(
        rename = "$schema",
        default,
        deserialize_with = "cart_edge::asked::present"
    )]
    _schema: Option<String>,
    cases: Vec<Case>,
}

/// One case: a set-quantity request or a checkout, and the decision expected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default, deserialize_with = "cart_edge::asked::present")]
    set_quantity: Option<SetForm>,
    #[serde(default, deserialize_with = "cart_edge::asked::present")]
    checkout: Option<CheckoutForm>,
    expect: Value,
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

/// What the cases found: each case, and what it decided.
#[derive(Serialize)]
pub struct Ran {
    pub file: String,
    pub cases: Vec<CaseRan>,
}

/// One case, and whether it decided as expected.
#[derive(Serialize)]
pub struct CaseRan {
    pub name: String,
    pub passed: bool,
    pub expected: Value,
    pub decided: Value,
}

impl Ran {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// The report `rules test --cases` prints.
    pub fn report(&self) -> String {
        let mut s = format!("{}: {} cases\n", self.file, self.cases.len());
        for case in &self.cases {
            if case.passed {
                let _ = writeln!(s, "  ok      {}", case.name);
            } else {
                let _ = writeln!(
                    s,
                    "  FAILED  {}\n          expected: {}\n          decided:  {}",
                    case.name, case.expected, case.decided
                );
            }
        }
        s
    }
}

/// Reads the case file at `path` and asks `rules` each case.
pub fn run(rules: &dyn CartRules, path: &Path) -> anyhow::Result<Ran> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = parse(&text).with_context(|| format!("{}", path.display()))?;
    Ok(Ran {
        file: path.display().to_string(),
        cases: file
            .into_iter()
            .map(|case| {
                let decided = case.asked.ask(rules).json(NOW);
                CaseRan {
                    passed: matches(&case.expect, &decided),
                    name: case.name,
                    expected: case.expect,
                    decided,
                }
            })
            .collect(),
    })
}

/// A case, read and checked: what it asks, and the decision expected.
struct Ready {
    name: String,
    asked: Asked,
    expect: Value,
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
                    let checkout = matches!(asked, Asked::Checkout(_));
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
    let form = match (&case.set_quantity, &case.checkout) {
        (Some(c), None) => Form::SetQuantity(c.clone()),
        (None, Some(c)) => Form::Checkout(c.clone()),
        _ => anyhow::bail!("a case asks either set_quantity or checkout"),
    };
    form.asked(NOW).map_err(anyhow::Error::msg)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use cart_edge::asked::defaults;
    use serde_json::json;

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
