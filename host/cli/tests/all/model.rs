//! Property tests of the cart rules and the cart store against a plain model of carts, holds
//! and stock: random sequences of create / set / remove / checkout / sweep with a moving clock
//! never break conservation, never let a customer pass a limit, and never acknowledge what they
//! did not do. Most cases run the rules natively for speed; a sample runs the real component.

use std::collections::BTreeMap;
use std::sync::Arc;

use cart_central::sale::{Catalog, Sale, SkuEntry};
use cart_edge::carts::{self, CartFailure, SetQuantity};
use cart_edge::rules::CartRules;
use cart_edge::store::db as edge_db;
use cart_rules::{CartError, CartStatus};
use proptest::prelude::*;

const SKUS: [&str; 2] = ["A", "B"];
const STOCK: u32 = 6;
const LIMIT: u32 = 3;
const TTL_MS: i64 = 600_000;
const START: i64 = 1_800_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    Create { customer: u8 },
    Set { cart: u8, sku: u8, quantity: u32 },
    Checkout { cart: u8, key: u8 },
    Sweep,
    Advance { secs: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3).prop_map(|customer| Op::Create { customer }),
        6 => (0u8..6, 0u8..2, 0u32..5).prop_map(|(cart, sku, quantity)| Op::Set { cart, sku, quantity }),
        2 => (0u8..6, 0u8..2).prop_map(|(cart, key)| Op::Checkout { cart, key }),
        1 => Just(Op::Sweep),
        2 => (0u32..700).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// The model: what the contract says should be true.
#[derive(Clone, Debug, Default)]
struct Model {
    now: i64,
    carts: Vec<ModelCart>,
    /// Per SKU: free, held, sold.
    stock: BTreeMap<&'static str, (u32, u32, u32)>,
}

#[derive(Clone, Debug)]
struct ModelCart {
    id: String,
    token: String,
    customer: String,
    placed_with: Option<String>,
    /// SKU -> (quantity, expires, held).
    lines: BTreeMap<String, (u32, i64, bool)>,
}

/// What an operation answered, reduced to what the model can predict.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Done,
    Refused(&'static str),
}

fn code(e: &CartError) -> &'static str {
    match e {
        CartError::SoldOut(_) => "sold_out",
        CartError::SaleNotStarted(_) => "sale_not_started",
        CartError::SaleEnded(_) => "sale_ended",
        CartError::HoldExpired(_) => "hold_expired",
        CartError::CartClosed => "cart_closed",
        CartError::CartEmpty => "cart_empty",
        CartError::LimitExceeded(_) => "limit_exceeded",
        CartError::InvalidQuantity => "invalid_quantity",
    }
}

impl Model {
    fn holding(line: &(u32, i64, bool), now: i64) -> u32 {
        if line.2 && line.1 > now { line.0 } else { 0 }
    }

    /// The customer's units of a SKU in their other open carts, held now, and in orders.
    fn elsewhere(&self, cart: usize, sku: &str) -> u32 {
        let customer = &self.carts[cart].customer;
        self.carts
            .iter()
            .enumerate()
            .filter(|(i, c)| *i != cart && &c.customer == customer)
            .filter_map(|(_, c)| {
                c.lines.get(sku).map(|l| {
                    if c.placed_with.is_some() {
                        l.0
                    } else {
                        Self::holding(l, self.now)
                    }
                })
            })
            .sum()
    }

    fn set(&mut self, cart: usize, sku: &'static str, quantity: u32) -> Answer {
        let now = self.now;
        if self.carts[cart].placed_with.is_some() {
            return Answer::Refused("cart_closed");
        }
        let line = self.carts[cart].lines.get(sku).copied();
        let holding = line.map_or(0, |l| Self::holding(&l, now));
        let reserved = line.map_or(0, |l| if l.2 { l.0 } else { 0 });
        if quantity == holding {
            if quantity == 0 {
                // A lapsed line the sweep has not reached yet is removed, its units released.
                if let Some(l) = self.carts[cart].lines.remove(sku)
                    && l.2
                {
                    let s = self.stock.entry(sku).or_default();
                    s.0 += l.0;
                    s.1 -= l.0;
                }
            }
            return Answer::Done;
        }
        if quantity < holding {
            let s = self.stock.entry(sku).or_default();
            s.0 += holding - quantity;
            s.1 -= holding - quantity;
            let lines = &mut self.carts[cart].lines;
            if quantity == 0 {
                lines.remove(sku);
            } else if let Some(l) = lines.get_mut(sku) {
                l.0 = quantity;
            }
            return Answer::Done;
        }
        if self.elsewhere(cart, sku) + quantity > LIMIT {
            return Answer::Refused("limit_exceeded");
        }
        let free = self.stock.get(sku).map_or(0, |s| s.0);
        if quantity.saturating_sub(reserved) > free {
            return Answer::Refused("sold_out");
        }
        let s = self.stock.entry(sku).or_default();
        if quantity > reserved {
            s.0 -= quantity - reserved;
            s.1 += quantity - reserved;
        } else {
            s.0 += reserved - quantity;
            s.1 -= reserved - quantity;
        }
        self.carts[cart]
            .lines
            .insert(sku.to_owned(), (quantity, now + TTL_MS, true));
        Answer::Done
    }

    fn checkout(&mut self, cart: usize, key: &str) -> Answer {
        let now = self.now;
        let c = &self.carts[cart];
        if let Some(placed) = &c.placed_with {
            return if placed == key {
                Answer::Done
            } else {
                Answer::Refused("cart_closed")
            };
        }
        if c.lines.is_empty() {
            return Answer::Refused("cart_empty");
        }
        if c.lines.values().any(|l| Self::holding(l, now) == 0) {
            return Answer::Refused("hold_expired");
        }
        let lines: Vec<(String, u32)> = c.lines.iter().map(|(s, l)| (s.clone(), l.0)).collect();
        for (sku, quantity) in lines {
            let sku = SKUS.iter().find(|s| **s == sku).copied().unwrap_or("A");
            let s = self.stock.entry(sku).or_default();
            s.1 -= quantity;
            s.2 += quantity;
        }
        let c = &mut self.carts[cart];
        for l in c.lines.values_mut() {
            l.2 = false;
        }
        c.placed_with = Some(key.to_owned());
        Answer::Done
    }

    fn sweep(&mut self) {
        let now = self.now;
        for c in &mut self.carts {
            for (sku, l) in c.lines.iter_mut().filter(|(_, l)| l.2 && l.1 <= now) {
                let sku = SKUS
                    .iter()
                    .find(|s| **s == sku.as_str())
                    .copied()
                    .unwrap_or("A");
                let s = self.stock.entry(sku).or_default();
                s.0 += l.0;
                s.1 -= l.0;
                l.2 = false;
            }
        }
    }
}

/// A real edge database with the test sale's stock, and the catalog to read it with.
fn store() -> (tempfile::TempDir, rusqlite::Connection, Catalog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = edge_db::open_writer(dir.path()).expect("edge db");
    let skus = SKUS.iter().map(|sku| SkuEntry {
        sale_id: "S".into(),
        sku: (*sku).into(),
        name: (*sku).into(),
        price_cents: 100,
        limit_per_customer: LIMIT,
        sale_starts_at: 0,
        ends_at: i64::MAX,
        hold_ttl_ms: TTL_MS,
        stock_total: STOCK,
    });
    for sku in SKUS {
        conn.execute(
            "INSERT INTO stock (sale_id, sku, free) VALUES ('S', ?1, ?2)",
            rusqlite::params![sku, STOCK],
        )
        .expect("stock");
    }
    let sale = Sale {
        sale_id: "S".into(),
        starts_at: 0,
        ends_at: i64::MAX,
        hold_ttl_ms: TTL_MS,
        skus: skus.collect(),
    };
    (dir, conn, Catalog::new([sale]))
}

/// Runs one operation in its own transaction, kept only if it succeeds, as the writer does.
fn in_tx<T>(
    conn: &mut rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, CartFailure>,
) -> Result<T, CartFailure> {
    let tx = conn.transaction().expect("begin");
    let done = f(&tx);
    if done.is_ok() {
        tx.commit().expect("commit");
    }
    done
}

fn answer<T>(done: Result<T, CartFailure>) -> Answer {
    match done {
        Ok(_) => Answer::Done,
        Err(CartFailure::Refused(e)) => Answer::Refused(code(&e)),
        Err(other) => panic!("the store failed: {other}"),
    }
}

fn run(rules: &dyn CartRules, ops: &[Op]) -> Result<(), TestCaseError> {
    let (_dir, mut conn, catalog) = store();
    let mut model = Model {
        now: START,
        stock: SKUS.iter().map(|s| (*s, (STOCK, 0, 0))).collect(),
        ..Model::default()
    };
    for (step, op) in ops.iter().enumerate() {
        let now = model.now;
        match op {
            Op::Create { customer } => {
                let (id, token) = (cart_edge::ids::new_id("c"), cart_edge::ids::new_token());
                let customer = format!("cust-{customer}");
                let hash = cart_edge::ids::token_hash(&token);
                let open = model
                    .carts
                    .iter()
                    .filter(|c| c.customer == customer && c.placed_with.is_none())
                    .count();
                let made = in_tx(&mut conn, |c| carts::create(c, &id, &customer, &hash, now));
                if open >= carts::MAX_OPEN_CARTS as usize {
                    assert!(
                        matches!(made, Err(carts::CartFailure::TooManyCarts)),
                        "step {step}: a cart past the cap: {made:?}"
                    );
                    continue;
                }
                made.expect("create");
                model.carts.push(ModelCart {
                    id,
                    token,
                    customer,
                    placed_with: None,
                    lines: BTreeMap::new(),
                });
            }
            Op::Set {
                cart,
                sku,
                quantity,
            } if !model.carts.is_empty() => {
                let cart = usize::from(*cart) % model.carts.len();
                let sku = SKUS[usize::from(*sku)];
                let c = &model.carts[cart];
                let ask = SetQuantity {
                    cart_id: c.id.clone(),
                    token_hash: cart_edge::ids::token_hash(&c.token),
                    sku: sku.into(),
                    quantity: *quantity,
                };
                let got = answer(in_tx(&mut conn, |c| {
                    carts::set_quantity(c, rules, &catalog, now, &ask)
                }));
                let expected = model.set(cart, sku, *quantity);
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Checkout { cart, key } if !model.carts.is_empty() => {
                let cart = usize::from(*cart) % model.carts.len();
                let key = format!("key-{key}");
                let c = &model.carts[cart];
                let (id, hash) = (c.id.clone(), cart_edge::ids::token_hash(&c.token));
                let got = answer(in_tx(&mut conn, |c| {
                    carts::checkout(c, rules, &catalog, now, &id, &hash, &key)
                }));
                let expected = model.checkout(cart, &key);
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Sweep => {
                in_tx(&mut conn, |c| Ok(carts::sweep(c, now, &[], 1000)?)).expect("sweep");
                model.sweep();
            }
            Op::Advance { secs } => model.now += i64::from(*secs) * 1000,
            _ => {}
        }
        check(&conn, &model, step)?;
    }
    Ok(())
}

/// The store agrees with the model, and the invariants hold.
fn check(conn: &rusqlite::Connection, model: &Model, step: usize) -> Result<(), TestCaseError> {
    for line in edge_db::stock_rows(conn).expect("stock") {
        let u = line.units;
        prop_assert_eq!(
            u.free + u.held + u.sold,
            STOCK,
            "step {}: units appeared or vanished",
            step
        );
        let expected = model.stock[line.sku.as_str()];
        prop_assert_eq!(
            (u.free, u.held, u.sold),
            expected,
            "step {}: {} stock",
            step,
            line.sku
        );
    }
    let mut per_customer: BTreeMap<(String, String), u32> = BTreeMap::new();
    for c in &model.carts {
        let stored = carts::load(conn, &c.id)
            .expect("load")
            .expect("the cart exists");
        let closed = stored.status == CartStatus::CheckedOut;
        prop_assert_eq!(closed, c.placed_with.is_some(), "step {}: status", step);
        let lines: BTreeMap<String, (u32, i64, bool)> = stored
            .lines
            .iter()
            .map(|l| {
                (
                    l.line.sku.clone(),
                    (l.line.quantity, l.line.hold_expires_at, l.line.held),
                )
            })
            .collect();
        prop_assert_eq!(&lines, &c.lines, "step {}: cart {}", step, c.id);
        for (sku, l) in &c.lines {
            let counted = if closed {
                l.0
            } else {
                Model::holding(l, model.now)
            };
            *per_customer
                .entry((c.customer.clone(), sku.clone()))
                .or_default() += counted;
        }
    }
    for ((customer, sku), n) in per_customer {
        prop_assert!(
            n <= LIMIT,
            "step {}: {} holds or bought {} of {}",
            step,
            customer,
            n,
            sku
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_native_rules_and_the_store_keep_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(&cart_bench::native::NativeRules, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn the_component_keeps_the_model_too(ops in prop::collection::vec(op(), 1..40)) {
        run(&*component(), &ops)?;
    }
}

/// The real cart component, compiled once for the whole test binary.
fn component() -> Arc<cart_edge::wasm::LoadedModule> {
    static MODULE: std::sync::OnceLock<Arc<cart_edge::wasm::LoadedModule>> =
        std::sync::OnceLock::new();
    Arc::clone(MODULE.get_or_init(|| {
        let runtime = cart_edge::wasm::Runtime::new(cart_edge::wasm::SandboxLimits::default())
            .expect("runtime");
        let bytes = std::fs::read(crate::support::guest_wasm()).expect("component");
        Arc::new(runtime.load(&bytes, "model").expect("the component loads"))
    }))
}
