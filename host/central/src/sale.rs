//! The sale file (see `schema/sale.schema.json`): parsing, validation that names the bad field,
//! and the catalog an edge serves from.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use cart_rules::MAX_PRICE_CENTS;

use crate::time::{Millis, parse_rfc3339, rfc3339};

/// A sale as written by an operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaleFile {
    sale_id: String,
    starts_at: String,
    /// Defaults to 24 hours after `starts_at`.
    #[serde(default)]
    ends_at: Option<String>,
    hold_ttl_seconds: u32,
    skus: Vec<SkuFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkuFile {
    sku: String,
    name: String,
    price_cents: i64,
    stock: u32,
    limit_per_customer: u32,
    /// Defaults to the sale's `starts_at`.
    #[serde(default)]
    sale_starts_at: Option<String>,
}

/// A refused sale file; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SaleError {
    pub field: String,
    pub problem: String,
}

fn refuse(field: impl Into<String>, problem: impl Into<String>) -> SaleError {
    SaleError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A validated sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub sale_id: String,
    pub starts_at: Millis,
    pub ends_at: Millis,
    pub hold_ttl_ms: i64,
    pub skus: Vec<SkuEntry>,
}

/// One SKU of a sale.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct SkuEntry {
    pub sale_id: String,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub limit_per_customer: u32,
    pub sale_starts_at: Millis,
    pub ends_at: Millis,
    pub hold_ttl_ms: i64,
    pub stock_total: u32,
}

impl SkuEntry {
    /// The SKU as the cart rules see it.
    pub fn info(&self) -> cart_rules::SkuInfo {
        cart_rules::SkuInfo {
            sku: self.sku.clone(),
            price_cents: self.price_cents,
            limit_per_customer: self.limit_per_customer,
            starts_at: self.sale_starts_at,
            ends_at: self.ends_at,
            hold_ttl_ms: self.hold_ttl_ms,
        }
    }
}

/// Most units of one SKU a sale may have.
pub const MAX_STOCK: u32 = 1_000_000_000;
/// Most SKUs one sale may have.
pub const MAX_SKUS: usize = 10_000;
/// How long a sale lasts when its file does not say.
pub const DEFAULT_LENGTH_MS: Millis = 24 * 3_600_000;
/// Longest hold: one day.
pub const MAX_HOLD_TTL_SECONDS: u32 = 86_400;

/// `A-Z a-z 0-9 _ -`, 1 to 64 characters: the shape of customer ids, SKUs and sale ids.
pub fn is_plain_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Sale {
    /// Parses and validates a sale file's text.
    pub fn parse(text: &str) -> Result<Self, SaleError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let file: SaleFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // The root has no field name: serde_path_to_error writes it "." or "?".
            let field = if path == "." || path == "?" {
                "sale file".to_owned()
            } else {
                path
            };
            refuse(field, e.into_inner().to_string())
        })?;
        Self::validate(file)
    }

    /// The same sale moved in time to start at `at`: its length, and each SKU's place in it,
    /// stay as they were (a rehearsal of tomorrow's file now).
    pub fn moved_to(mut self, at: Millis) -> Self {
        let by = at.saturating_sub(self.starts_at);
        self.starts_at = at;
        self.ends_at = self.ends_at.saturating_add(by);
        for e in &mut self.skus {
            e.sale_starts_at = e.sale_starts_at.saturating_add(by);
            e.ends_at = self.ends_at;
        }
        self
    }

    fn validate(file: SaleFile) -> Result<Self, SaleError> {
        if !is_plain_id(&file.sale_id) {
            return Err(refuse("sale_id", "must be 1 to 64 of A-Z a-z 0-9 _ -"));
        }
        let starts_at = parse_rfc3339(&file.starts_at)
            .ok_or_else(|| refuse("starts_at", "must be an RFC 3339 time"))?;
        let ends_at = match &file.ends_at {
            None => starts_at.saturating_add(DEFAULT_LENGTH_MS),
            Some(t) => {
                parse_rfc3339(t).ok_or_else(|| refuse("ends_at", "must be an RFC 3339 time"))?
            }
        };
        if ends_at <= starts_at {
            return Err(refuse("ends_at", "must be after starts_at"));
        }
        if !(1..=MAX_HOLD_TTL_SECONDS).contains(&file.hold_ttl_seconds) {
            return Err(refuse(
                "hold_ttl_seconds",
                format!("must be 1 to {MAX_HOLD_TTL_SECONDS}"),
            ));
        }
        if file.skus.is_empty() || file.skus.len() > MAX_SKUS {
            return Err(refuse("skus", format!("a sale has 1 to {MAX_SKUS} SKUs")));
        }
        let mut seen = HashSet::new();
        let mut skus = Vec::with_capacity(file.skus.len());
        for (i, s) in file.skus.into_iter().enumerate() {
            let at = |f: &str| format!("skus[{i}].{f}");
            if !is_plain_id(&s.sku) {
                return Err(refuse(at("sku"), "must be 1 to 64 of A-Z a-z 0-9 _ -"));
            }
            if !seen.insert(s.sku.clone()) {
                return Err(refuse(at("sku"), format!("{} appears twice", s.sku)));
            }
            if s.name.trim().is_empty() || s.name.len() > 200 {
                return Err(refuse(at("name"), "must be 1 to 200 characters"));
            }
            if !(0..=MAX_PRICE_CENTS).contains(&s.price_cents) {
                return Err(refuse(
                    at("price_cents"),
                    format!("must be 0 to {MAX_PRICE_CENTS}"),
                ));
            }
            if s.stock > MAX_STOCK {
                return Err(refuse(at("stock"), format!("must be at most {MAX_STOCK}")));
            }
            if s.limit_per_customer == 0 {
                return Err(refuse(at("limit_per_customer"), "must be at least 1"));
            }
            let sale_starts_at = match &s.sale_starts_at {
                None => starts_at,
                Some(t) => parse_rfc3339(t)
                    .ok_or_else(|| refuse(at("sale_starts_at"), "must be an RFC 3339 time"))?,
            };
            if sale_starts_at >= ends_at {
                return Err(refuse(at("sale_starts_at"), "must be before the sale ends"));
            }
            skus.push(SkuEntry {
                sale_id: file.sale_id.clone(),
                ends_at,
                hold_ttl_ms: i64::from(file.hold_ttl_seconds) * 1000,
                sku: s.sku,
                name: s.name,
                price_cents: s.price_cents,
                limit_per_customer: s.limit_per_customer,
                sale_starts_at,
                stock_total: s.stock,
            });
        }
        Ok(Self {
            sale_id: file.sale_id,
            starts_at,
            ends_at,
            hold_ttl_ms: i64::from(file.hold_ttl_seconds) * 1000,
            skus,
        })
    }

    /// Whether the two sales' windows meet.
    pub fn overlaps(&self, other: &Sale) -> bool {
        self.starts_at < other.ends_at && other.starts_at < self.ends_at
    }

    /// What differs between this sale and `new`, in words naming each field.
    pub fn differences(&self, new: &Sale) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, old: String, new: String| {
            if old != new {
                out.push(format!("{name}: {old} -> {new}"));
            }
        };
        field("starts_at", rfc3339(self.starts_at), rfc3339(new.starts_at));
        field("ends_at", rfc3339(self.ends_at), rfc3339(new.ends_at));
        field(
            "hold_ttl_seconds",
            (self.hold_ttl_ms / 1000).to_string(),
            (new.hold_ttl_ms / 1000).to_string(),
        );
        for old in &self.skus {
            match new.skus.iter().find(|s| s.sku == old.sku) {
                None => out.push(format!("skus: {} removed", old.sku)),
                Some(s) => {
                    let at = |f: &str| format!("{}.{f}", old.sku);
                    let mut sku_field = |f: &str, a: String, b: String| {
                        if a != b {
                            out.push(format!("{}: {a} -> {b}", at(f)));
                        }
                    };
                    sku_field("name", old.name.clone(), s.name.clone());
                    sku_field(
                        "price_cents",
                        old.price_cents.to_string(),
                        s.price_cents.to_string(),
                    );
                    sku_field(
                        "stock",
                        old.stock_total.to_string(),
                        s.stock_total.to_string(),
                    );
                    sku_field(
                        "limit_per_customer",
                        old.limit_per_customer.to_string(),
                        s.limit_per_customer.to_string(),
                    );
                    sku_field(
                        "sale_starts_at",
                        rfc3339(old.sale_starts_at),
                        rfc3339(s.sale_starts_at),
                    );
                }
            }
        }
        for s in new
            .skus
            .iter()
            .filter(|s| !self.skus.iter().any(|o| o.sku == s.sku))
        {
            out.push(format!("skus: {} added", s.sku));
        }
        out
    }
}

/// What an edge sells: the sales it knows (running, scheduled, and ended ones it still holds
/// units of), and their SKUs by code. SKU codes are unique among sales that overlap in time
/// (central refuses others), so a code and a time name one SKU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    sales: BTreeMap<String, Sale>,
    /// Each code's SKUs, as (sale id, index in that sale's SKUs), by the sale's start.
    by_code: BTreeMap<String, Vec<(String, usize)>>,
}

impl Catalog {
    pub fn new(sales: impl IntoIterator<Item = Sale>) -> Self {
        let sales: BTreeMap<String, Sale> =
            sales.into_iter().map(|s| (s.sale_id.clone(), s)).collect();
        let mut by_code: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        for sale in sales.values() {
            for (i, sku) in sale.skus.iter().enumerate() {
                by_code
                    .entry(sku.sku.clone())
                    .or_default()
                    .push((sale.sale_id.clone(), i));
            }
        }
        for entries in by_code.values_mut() {
            entries.sort_by_key(|(sale, _)| sales.get(sale).map_or(0, |s| s.starts_at));
        }
        Self { sales, by_code }
    }

    /// The SKU a shopper means by `code` at `now`: its running or next sale's, else its last
    /// ended one's (so a change to it is told the sale has ended).
    pub fn sku(&self, code: &str, now: Millis) -> Option<&SkuEntry> {
        let entries: Vec<&SkuEntry> = self
            .by_code
            .get(code)?
            .iter()
            .filter_map(|(sale, i)| self.sales.get(sale)?.skus.get(*i))
            .collect();
        entries
            .iter()
            .find(|e| e.ends_at > now)
            .or_else(|| entries.last())
            .copied()
    }

    /// A SKU of a given sale.
    pub fn entry(&self, sale_id: &str, sku: &str) -> Option<&SkuEntry> {
        self.sales.get(sale_id)?.skus.iter().find(|s| s.sku == sku)
    }

    /// Every sale, by id.
    pub fn sales(&self) -> impl Iterator<Item = &Sale> {
        self.sales.values()
    }

    /// Every SKU of every sale.
    pub fn entries(&self) -> impl Iterator<Item = &SkuEntry> {
        self.sales.values().flat_map(|s| s.skus.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"sale_id": "noon-drop", "starts_at": "2026-11-27T12:00:00Z",
        "hold_ttl_seconds": 600, "skus": [{"sku": "BAG-1", "name": "Leather tote",
        "price_cents": 129900, "stock": 100, "limit_per_customer": 2}]}"#;

    #[test]
    fn the_contract_example_loads() {
        let sale = Sale::parse(GOOD).expect("valid");
        assert_eq!(sale.hold_ttl_ms, 600_000);
        assert_eq!(sale.skus[0].sale_starts_at, sale.starts_at);
        let catalog = Catalog::new([sale.clone()]);
        assert_eq!(
            catalog.sku("BAG-1", sale.starts_at).map(|s| s.stock_total),
            Some(100)
        );
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_field() {
        let cases = [
            (
                GOOD.replace("\"stock\": 100", "\"stock\": -1"),
                "skus[0].stock",
            ),
            (
                GOOD.replace("\"stock\": 100", "\"stock\": \"many\""),
                "skus[0].stock",
            ),
            (GOOD.replace("2026-11-27T12:00:00Z", "noon"), "starts_at"),
            (
                GOOD.replace(
                    "\"hold_ttl_seconds\"",
                    "\"ends_at\": \"2026-11-27T11:00:00Z\", \"hold_ttl_seconds\"",
                ),
                "ends_at",
            ),
            (GOOD.replace("600", "0"), "hold_ttl_seconds"),
            (GOOD.replace("BAG-1", "BAG 1"), "skus[0].sku"),
            (
                GOOD.replace("\"limit_per_customer\": 2", "\"limit_per_customer\": 0"),
                "skus[0].limit_per_customer",
            ),
            (GOOD.replace("\"name\"", "\"nmae\""), "skus[0]"),
            (
                GOOD.replace("129900", "9223372036854775807"),
                "skus[0].price_cents",
            ),
            ("{".to_owned(), "sale file"),
        ];
        for (text, field) in cases {
            let err = Sale::parse(&text).expect_err(field);
            assert!(err.field.starts_with(field), "{field}: got {err}");
        }
    }

    #[test]
    fn a_sale_lasts_a_day_unless_it_says_and_differences_name_their_field() {
        let sale = Sale::parse(GOOD).expect("valid");
        assert_eq!(sale.ends_at - sale.starts_at, DEFAULT_LENGTH_MS);
        let changed =
            Sale::parse(&GOOD.replace("129900", "99900").replace("100", "120")).expect("valid");
        assert_eq!(
            sale.differences(&changed),
            [
                "BAG-1.price_cents: 129900 -> 99900",
                "BAG-1.stock: 100 -> 120"
            ]
        );
        assert!(sale.differences(&sale).is_empty());
    }

    #[test]
    fn a_code_names_the_running_or_next_sale_and_else_the_last_ended() {
        let at = |starts: &str, ends: &str, id: &str| {
            Sale::parse(
                &GOOD
                    .replace("noon-drop", id)
                    .replace("2026-11-27T12:00:00Z", starts)
                    .replace(
                        "\"hold_ttl_seconds\"",
                        &format!("\"ends_at\": \"{ends}\", \"hold_ttl_seconds\""),
                    ),
            )
            .expect("valid")
        };
        let monday = at("2026-11-23T12:00:00Z", "2026-11-23T13:00:00Z", "monday");
        let tuesday = at("2026-11-24T12:00:00Z", "2026-11-24T13:00:00Z", "tuesday");
        let catalog = Catalog::new([tuesday.clone(), monday.clone()]);
        let during = |t: Millis| catalog.sku("BAG-1", t).map(|e| e.sale_id.as_str());
        assert_eq!(
            during(monday.starts_at - 1),
            Some("monday"),
            "the next sale"
        );
        assert_eq!(during(monday.ends_at), Some("tuesday"), "after monday ends");
        assert_eq!(
            during(tuesday.ends_at + 1),
            Some("tuesday"),
            "the last ended"
        );
        assert_eq!(
            catalog.entry("monday", "BAG-1").map(|e| e.ends_at),
            Some(monday.ends_at)
        );
        assert!(catalog.sku("NOPE", 0).is_none());
    }

    /// The sale file's JSON Schema (schema/sale.schema.json) and the parser take and refuse
    /// the same files.
    #[test]
    fn the_json_schema_and_the_parser_agree() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schema/sale.schema.json")).expect("JSON");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let example = include_str!("../../../schema/examples/sale.json");
        let mut cases = vec![(example.to_owned(), true), (GOOD.to_owned(), true)];
        for bad in [
            GOOD.replace("129900", "10000000001"),
            GOOD.replace("\"stock\": 100", "\"stock\": -1"),
            GOOD.replace("BAG-1", "BAG 1"),
            GOOD.replace("\"limit_per_customer\": 2", "\"limit_per_customer\": 0"),
            GOOD.replace("600", "0"),
            GOOD.replace("\"name\"", "\"nmae\""),
            GOOD.replace("\"sale_id\": \"noon-drop\",", ""),
        ] {
            cases.push((bad, false));
        }
        for (text, valid) in cases {
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(validator.is_valid(&value), valid, "the schema on {text}");
            assert_eq!(Sale::parse(&text).is_ok(), valid, "the parser on {text}");
        }
    }

    #[test]
    fn plain_ids() {
        assert!(is_plain_id("c-42_A"));
        assert!(!is_plain_id(""));
        assert!(!is_plain_id("a b"));
        assert!(!is_plain_id(&"x".repeat(65)));
    }
}
