//! The types of `wit/cart.wit` in plain Rust, and the limits the host and the guest both keep.

use alloc::string::String;
use alloc::vec::Vec;

/// More than anyone could mean to hold of one SKU.
pub const MAX_QUANTITY: u32 = 10_000;
/// The highest price a SKU may have: a hundred million in whole units of the currency. With
/// [`MAX_QUANTITY`] and [`MAX_CART_LINES`], no cart's total can overflow an `i64`.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;
/// Lines one cart may have.
pub const MAX_CART_LINES: usize = 100;

/// Unix milliseconds, as every time in the system is kept.
pub type Millis = i64;

/// A SKU on sale, as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuInfo {
    pub sku: String,
    pub price_cents: i64,
    pub limit_per_customer: u32,
    /// Holds may be placed from this time...
    pub starts_at: Millis,
    /// ...until this one.
    pub ends_at: Millis,
    /// How long a hold lasts after its line was last raised.
    pub hold_ttl_ms: i64,
}

/// One line of a cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// When the hold lapses (or lapsed).
    pub hold_expires_at: Millis,
    /// Whether units are reserved for the line (a lapsed hold keeps them until the sweep).
    pub held: bool,
}

impl Line {
    /// Whether the line still holds its units for the shopper at `now`.
    pub fn holds_at(&self, now: Millis) -> bool {
        self.held && self.hold_expires_at > now
    }

    /// Units the line has reserved in the edge's stock.
    pub fn reserved(&self) -> u32 {
        if self.held { self.quantity } else { 0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CartStatus {
    Open,
    CheckedOut,
}

/// Every outcome a shopper can be told about; maps 1:1 onto the API's error codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CartError {
    /// Not enough units at this edge; how many more the line could hold.
    SoldOut(u32),
    /// The SKU's sale has not started; when it starts.
    SaleNotStarted(Millis),
    /// The SKU's sale is over; when it ended.
    SaleEnded(Millis),
    /// Checkout found lapsed holds on these SKUs.
    HoldExpired(Vec<String>),
    CartClosed,
    CartEmpty,
    /// The customer would pass the SKU's per-customer limit; the limit.
    LimitExceeded(u32),
    InvalidQuantity,
}

/// A shopper sets the quantity of one SKU in a cart.
#[derive(Clone, Copy, Debug)]
pub struct SetRequest<'a> {
    pub now: Millis,
    pub status: CartStatus,
    pub sku: &'a SkuInfo,
    /// The cart's line for this SKU, if it has one.
    pub line: Option<&'a Line>,
    pub quantity: u32,
    /// Units of the SKU free at this edge.
    pub free: u32,
    /// Units of the SKU the customer holds in other carts or has bought.
    pub customer_elsewhere: u32,
}

/// A shopper checks a cart out.
#[derive(Clone, Copy, Debug)]
pub struct CheckoutRequest<'a> {
    pub now: Millis,
    pub status: CartStatus,
    pub lines: &'a [Line],
    /// The SKUs of the cart's held lines.
    pub skus: &'a [SkuInfo],
    pub idempotency_key: &'a str,
    /// For a checked-out cart: the key its order was placed under.
    pub placed_with: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckoutOutcome {
    /// Sell every line as held.
    Place,
    /// The same checkout again: answer with the order already placed.
    Replay,
}
