//! The one place the `cart` world's bindings are generated; the rest of the host uses these.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "cart",
});

pub use exports::flashsale::cart::rules::{CheckoutOutcome, CheckoutRequest, SetRequest};
pub use flashsale::cart::types::{CartError, CartStatus, Line, SkuInfo};
