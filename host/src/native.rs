//! The benchmark baseline: the guest's cart rules compiled natively into the host and called
//! without WebAssembly, on the same transaction, fence and host functions as the component.
//! `cart-host serve --native-baseline` uses it; nothing else does.

use std::any::Any;
use std::sync::Arc;

use cart_guest::native::flashsale::cart::{catalog as n_catalog, store as n_store, types as n};
use cart_guest::native::{self as shim, NativeHost};
use cart_guest::rules;
use rusqlite::Connection;

use crate::bindings::{self as b, Value};
use crate::clock::Millis;
use crate::edge_db::{self, GuestFence};
use crate::sale::Catalog;
use crate::wasm::GuestFault;
use crate::writer::{GuestCall, GuestOutcome};

/// The version `/admin/status` and `X-Module-Version` report for the baseline.
pub const VERSION: &str = "native-baseline";

struct State {
    conn: Connection,
    fence: GuestFence,
    now: Millis,
    catalog: Arc<Catalog>,
}

/// Runs one cart operation natively. A panic in the rules is a fault, as a trap would be.
pub fn call(
    conn: Connection,
    fence: GuestFence,
    now: Millis,
    catalog: Arc<Catalog>,
    call: GuestCall,
) -> (Connection, Result<GuestOutcome, GuestFault>) {
    shim::install(Box::new(State {
        conn,
        fence,
        now,
        catalog,
    }));
    let outcome = std::panic::catch_unwind(|| dispatch(call, now))
        .map_err(|p| GuestFault(panic_message(&*p)));
    let state = shim::uninstall()
        .and_then(|s| s.downcast::<State>().ok())
        .expect("the native host comes back after the call");
    (state.conn, outcome)
}

fn dispatch(call: GuestCall, now: Millis) -> GuestOutcome {
    let cart = |r: Result<n::Cart, n::CartError>| GuestOutcome::Cart(r.map(cart).map_err(error));
    match call {
        GuestCall::Create {
            cart_id,
            customer_id,
            token_hash,
        } => cart(rules::create_cart(&cart_id, &customer_id, &token_hash)),
        GuestCall::Get {
            cart_id,
            token_hash,
        } => cart(rules::get_cart(&cart_id, &token_hash)),
        GuestCall::SetQuantity {
            cart_id,
            token_hash,
            sku,
            quantity,
        } => cart(rules::set_quantity(&cart_id, &token_hash, &sku, quantity)),
        GuestCall::Remove {
            cart_id,
            token_hash,
            sku,
        } => cart(rules::set_quantity(&cart_id, &token_hash, &sku, 0)),
        GuestCall::Checkout {
            cart_id,
            token_hash,
            idempotency_key,
        } => GuestOutcome::Checkout(
            rules::checkout(&cart_id, &token_hash, &idempotency_key)
                .map(|c| b::CheckoutResult {
                    order: order(c.order),
                    replayed: c.replayed,
                })
                .map_err(error),
        ),
        GuestCall::Sweep => GuestOutcome::Swept(rules::sweep(now)),
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the native rules panicked".into())
}

impl NativeHost for State {
    fn execute(&mut self, sql: &str, params: &[n_store::Value]) -> Result<u64, String> {
        let params: Vec<Value> = params.iter().map(to_host_value).collect();
        crate::wasm::store::execute(&self.conn, &self.fence, sql, &params)
            .map_err(|e| e.to_string())
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[n_store::Value],
    ) -> Result<Vec<Vec<n_store::Value>>, String> {
        let params: Vec<Value> = params.iter().map(to_host_value).collect();
        crate::wasm::store::query(&self.conn, &self.fence, sql, &params)
            .map(|rows| {
                rows.into_iter()
                    .map(|r| r.into_iter().map(to_native_value).collect())
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn reserve(&mut self, sku: &str, quantity: u32) -> Result<(), u32> {
        edge_db::reserve(&self.conn, sku, quantity).expect("reserve")
    }

    fn release(&mut self, sku: &str, quantity: u32) {
        edge_db::release(&self.conn, sku, quantity).expect("release units that are held");
    }

    fn sell(&mut self, sku: &str, quantity: u32) {
        edge_db::sell(&self.conn, sku, quantity).expect("sell units that are held");
    }

    fn free(&mut self, sku: &str) -> u32 {
        edge_db::free(&self.conn, sku).expect("free")
    }

    fn emit(&mut self, event: &n::Event) {
        let json = serde_json::to_string(&crate::events::OutboxEvent::from(host_event(event)))
            .expect("events serialize");
        edge_db::append_outbox(&self.conn, self.now, &json).expect("append to the outbox");
    }

    fn now(&mut self) -> i64 {
        self.now
    }

    fn sku(&mut self, sku: &str) -> Option<n_catalog::SkuInfo> {
        self.catalog.sku(sku).map(|s| n_catalog::SkuInfo {
            sku: s.sku.clone(),
            name: s.name.clone(),
            price_cents: s.price_cents,
            limit_per_customer: s.limit_per_customer,
            sale_starts_at: s.sale_starts_at,
        })
    }

    fn hold_ttl(&mut self) -> i64 {
        self.catalog.hold_ttl_ms
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

fn to_host_value(v: &n_store::Value) -> Value {
    match v {
        n_store::Value::Null => Value::Null,
        n_store::Value::Integer(i) => Value::Integer(*i),
        n_store::Value::Real(f) => Value::Real(*f),
        n_store::Value::Text(s) => Value::Text(s.clone()),
        n_store::Value::Blob(b) => Value::Blob(b.clone()),
    }
}

fn to_native_value(v: Value) -> n_store::Value {
    match v {
        Value::Null => n_store::Value::Null,
        Value::Integer(i) => n_store::Value::Integer(i),
        Value::Real(f) => n_store::Value::Real(f),
        Value::Text(s) => n_store::Value::Text(s),
        Value::Blob(b) => n_store::Value::Blob(b),
    }
}

fn cart(c: n::Cart) -> b::CartView {
    b::CartView {
        cart_id: c.cart_id,
        customer_id: c.customer_id,
        status: match c.status {
            n::CartStatus::Open => b::CartStatus::Open,
            n::CartStatus::CheckedOut => b::CartStatus::CheckedOut,
        },
        lines: c
            .lines
            .into_iter()
            .map(|l| b::CartLine {
                sku: l.sku,
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
                hold_expires_at: l.hold_expires_at,
            })
            .collect(),
        total_cents: c.total_cents,
    }
}

fn order(o: n::Order) -> b::Order {
    b::Order {
        order_id: o.order_id,
        cart_id: o.cart_id,
        customer_id: o.customer_id,
        lines: o
            .lines
            .into_iter()
            .map(|l| b::OrderLine {
                sku: l.sku,
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
            })
            .collect(),
        total_cents: o.total_cents,
        placed_at: o.placed_at,
    }
}

fn error(e: n::CartError) -> b::CartError {
    match e {
        n::CartError::NotFound => b::CartError::NotFound,
        n::CartError::Unauthorized => b::CartError::Unauthorized,
        n::CartError::SoldOut(a) => b::CartError::SoldOut(a),
        n::CartError::SaleNotStarted(t) => b::CartError::SaleNotStarted(t),
        n::CartError::HoldExpired(s) => b::CartError::HoldExpired(s),
        n::CartError::CartClosed => b::CartError::CartClosed,
        n::CartError::CartEmpty => b::CartError::CartEmpty,
        n::CartError::LimitExceeded(l) => b::CartError::LimitExceeded(l),
        n::CartError::InvalidQuantity => b::CartError::InvalidQuantity,
    }
}

fn host_event(e: &n::Event) -> b::Event {
    match e {
        n::Event::HoldChanged(h) => b::Event::HoldChanged(b::HoldChange {
            cart_id: h.cart_id.clone(),
            customer_id: h.customer_id.clone(),
            sku: h.sku.clone(),
            quantity: h.quantity,
            expires_at: h.expires_at,
        }),
        n::Event::OrderPlaced(o) => b::Event::OrderPlaced(order(o.clone())),
    }
}
