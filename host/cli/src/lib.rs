//! `cart-host`, the flash-sale edge host's one binary: each command in its own module of
//! [`commands`], with its flags (most also read from a `CART_*` variable). `main.rs` only
//! parses the command line and runs the command.
//!
//! The integration tests beside this crate (`tests/all`) drive these commands and the edge
//! library over real HTTP.

pub mod commands;

/// The cart component this binary was built with: what an edge runs until a module is
/// deployed to it.
pub const BUILT_IN_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cart_guest.wasm"));

/// `--module FILE`, or the built-in component.
pub fn module_or_built_in(
    file: Option<&std::path::Path>,
) -> anyhow::Result<cart_edge::edge::ModuleBytes> {
    match file {
        Some(path) => cart_edge::edge::ModuleBytes::read(path),
        None => Ok(BUILT_IN_MODULE.into()),
    }
}
