//! The same rules compiled natively into the host, for benchmarks only: the paths, types and
//! functions `wit-bindgen` generates for the `cart` world, implemented by calls into a host
//! object installed for the duration of one call (see [`install`]).
//!
//! Only with the `native` feature; the component never contains this.

use std::any::Any;
use std::cell::RefCell;

/// What the host provides, as the WIT imports do.
pub trait NativeHost {
    fn execute(
        &mut self,
        sql: &str,
        params: &[flashsale::cart::store::Value],
    ) -> Result<u64, String>;
    fn query(
        &mut self,
        sql: &str,
        params: &[flashsale::cart::store::Value],
    ) -> Result<Vec<Vec<flashsale::cart::store::Value>>, String>;
    fn reserve(&mut self, sku: &str, quantity: u32) -> Result<(), u32>;
    fn release(&mut self, sku: &str, quantity: u32);
    fn sell(&mut self, sku: &str, quantity: u32);
    fn free(&mut self, sku: &str) -> u32;
    fn emit(&mut self, event: &flashsale::cart::types::Event);
    fn now(&mut self) -> i64;
    fn sku(&mut self, sku: &str) -> Option<flashsale::cart::catalog::SkuInfo>;
    fn hold_ttl(&mut self) -> i64;
    /// Gives the host its state back after the call.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

thread_local! {
    static HOST: RefCell<Option<Box<dyn NativeHost>>> = const { RefCell::new(None) };
}

/// Makes `host` the one the rules call on this thread until [`uninstall`].
pub fn install(host: Box<dyn NativeHost>) {
    HOST.with(|h| *h.borrow_mut() = Some(host));
}

/// Takes the host back.
pub fn uninstall() -> Option<Box<dyn Any>> {
    HOST.with(|h| h.borrow_mut().take())
        .map(NativeHost::into_any)
}

fn with<T>(f: impl FnOnce(&mut dyn NativeHost) -> T) -> T {
    HOST.with(|h| {
        f(h.borrow_mut()
            .as_deref_mut()
            .expect("a native host is installed"))
    })
}

pub mod flashsale {
    pub mod cart {
        pub mod types {
            #[derive(Clone, Debug, PartialEq)]
            pub struct CartLine {
                pub sku: String,
                pub quantity: u32,
                pub unit_price_cents: i64,
                pub hold_expires_at: i64,
            }
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub enum CartStatus {
                Open,
                CheckedOut,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub struct Cart {
                pub cart_id: String,
                pub customer_id: String,
                pub status: CartStatus,
                pub lines: Vec<CartLine>,
                pub total_cents: i64,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub struct OrderLine {
                pub sku: String,
                pub quantity: u32,
                pub unit_price_cents: i64,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub struct Order {
                pub order_id: String,
                pub cart_id: String,
                pub customer_id: String,
                pub lines: Vec<OrderLine>,
                pub total_cents: i64,
                pub placed_at: i64,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub struct CheckoutResult {
                pub order: Order,
                pub replayed: bool,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub enum CartError {
                NotFound,
                Unauthorized,
                SoldOut(u32),
                SaleNotStarted(i64),
                HoldExpired(Vec<String>),
                CartClosed,
                CartEmpty,
                LimitExceeded(u32),
                InvalidQuantity,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub struct HoldChange {
                pub cart_id: String,
                pub customer_id: String,
                pub sku: String,
                pub quantity: u32,
                pub expires_at: i64,
            }
            #[derive(Clone, Debug, PartialEq)]
            pub enum Event {
                HoldChanged(HoldChange),
                OrderPlaced(Order),
            }
        }

        pub mod store {
            #[derive(Clone, Debug, PartialEq)]
            pub enum Value {
                Null,
                Integer(i64),
                Real(f64),
                Text(String),
                Blob(Vec<u8>),
            }

            pub fn execute(sql: &str, params: &[Value]) -> Result<u64, String> {
                crate::native::with(|h| h.execute(sql, params))
            }

            pub fn query(sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, String> {
                crate::native::with(|h| h.query(sql, params))
            }
        }

        pub mod stock {
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub struct Shortage {
                pub available: u32,
            }

            pub fn reserve(sku: &str, quantity: u32) -> Result<(), Shortage> {
                crate::native::with(|h| h.reserve(sku, quantity))
                    .map_err(|available| Shortage { available })
            }

            pub fn release(sku: &str, quantity: u32) {
                crate::native::with(|h| h.release(sku, quantity));
            }

            pub fn sell(sku: &str, quantity: u32) {
                crate::native::with(|h| h.sell(sku, quantity));
            }

            pub fn free(sku: &str) -> u32 {
                crate::native::with(|h| h.free(sku))
            }
        }

        pub mod outbox {
            pub fn emit(e: &super::types::Event) {
                crate::native::with(|h| h.emit(e));
            }
        }

        pub mod clock {
            pub fn now() -> i64 {
                crate::native::with(|h| h.now())
            }
        }

        pub mod catalog {
            #[derive(Clone, Debug, PartialEq)]
            pub struct SkuInfo {
                pub sku: String,
                pub name: String,
                pub price_cents: i64,
                pub limit_per_customer: u32,
                pub sale_starts_at: i64,
            }

            pub fn sku(sku: &str) -> Option<SkuInfo> {
                crate::native::with(|h| h.sku(sku))
            }

            pub fn hold_ttl() -> i64 {
                crate::native::with(|h| h.hold_ttl())
            }
        }
    }
}
