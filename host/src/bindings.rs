//! The one place the `cart` world's bindings are generated; the rest of the host uses these.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cart",
    // A host function may trap: SQL the host itself got wrong is a bug, not a guest error.
    imports: { default: trappable },
    additional_derives: [PartialEq],
});

pub use flashsale::cart::catalog::SkuInfo;
pub use flashsale::cart::stock::Shortage;
pub use flashsale::cart::store::Value;
pub use flashsale::cart::types::{
    Cart as CartView, CartError, CartLine, CartStatus, CheckoutResult, Event, HoldChange, Order,
    OrderLine,
};
