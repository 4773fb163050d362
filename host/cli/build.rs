//! Embeds the cart component in `cart-host`, so `serve` and `demo` need no `--module` and run
//! from any folder, as a user who copied the binary would run them. `make guest` builds it
//! first; `CART_GUEST_WASM` names another one.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=CART_GUEST_WASM");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let wasm = std::env::var_os("CART_GUEST_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../target/wasm32-wasip2/release/cart_guest.wasm"));
    println!("cargo:rerun-if-changed={}", wasm.display());
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("cart_guest.wasm");
    if let Err(e) = std::fs::copy(&wasm, &out) {
        panic!(
            "cart-host embeds the cart component, and {} cannot be read ({e}): build it first \
             with `make guest`, or name it in CART_GUEST_WASM",
            wasm.display()
        );
    }
}
