//! `cart-host`, the flash-sale edge host's one binary: each command in its own module of
//! [`commands`], with its flags (every flag also read from a `CART_*` variable). `main.rs` only
//! parses the command line and runs the command.
//!
//! The integration tests beside this crate (`tests/all`) drive these commands and the edge
//! library over real HTTP.

pub mod commands;
