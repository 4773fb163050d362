//! The flash-sale edge: the product library behind `cart-host serve`.
//!
//! A storefront's request arrives at [`http`], which checks it and hands it to [`shop`]; each
//! cart operation is one job of the writer ([`store`]: a savepoint in a group commit on the
//! edge's SQLite), in which [`carts`] loads what the cart rules need, asks them ([`rules`]: the
//! deployed component, run by [`wasm`]), and applies their decision with its stock moves and
//! outbox event. [`sync`] delivers the outbox to the central database (crate `cart-central`),
//! from which [`escrow`] draws units.
//!
//! The modules are floors: each imports only the ones below it.
//!
//! - The top: [`server`] serves an edge on a listener until shutdown; [`http`] is the only part
//!   that knows axum and HTTP's errors; [`tasks`] runs every background loop.
//! - On the node: [`shop`], each shopper operation and the escrow retry before `sold_out`;
//!   [`drain`], leaving the fleet and taking the carts another edge leaves; [`sync`], outbox
//!   delivery and the edge's claim at central.
//! - The node: [`edge`], the parts composed, and start-up.
//! - What peers exchange: [`wire`], every header and path name and the operator API's types.
//! - Services on narrow handles (a store, central, their own state; never the whole edge):
//!   [`carts`], the cart store (load, decide, check, apply); [`handoff`], the books' side of
//!   moving carts, exactly once; [`escrow`], grants and returns of units; [`modules`], deploying
//!   components (signatures, validation, versions, rollback); [`identity`], the data folder's
//!   lock and history and the process's claim at central; [`calendar`], the sales this edge
//!   serves; [`config`], what it is told.
//! - Storage and the sandbox: [`store`], the edge's SQLite and its single writer; [`wasm`], the
//!   engine and a fresh instance per call, with [`bindings`] generated once; [`rules`], the
//!   seam to the rules, [`asked`] and [`decided`], what they were asked and what they decided,
//!   written as case files write them, and [`invariants`], what the books need of any rules; [`fleet`], the fleet's directory (peers, routes, homes); [`metrics`].
//! - Leaves: [`http_client`], [`ids`], [`recent`] (cart updates second by second), [`clock`],
//!   [`customer`] (who a new cart's customer is, and how many carts an address may make),
//!   [`lifecycle`] (serving or draining), [`shutdown`], [`locks`].

// Server code answers errors; it does not panic on them.
#![warn(clippy::expect_used)]

pub mod asked;
pub mod bindings;
pub mod calendar;
pub mod carts;
pub mod clock;
pub mod config;
pub mod customer;
pub mod decided;
pub mod drain;
pub mod edge;
pub mod escrow;
pub mod fleet;
pub mod handoff;
pub mod http;
pub mod http_client;
pub mod identity;
pub mod ids;
pub mod invariants;
pub mod lifecycle;
pub mod locks;
pub mod metrics;
pub mod modules;
pub mod recent;
pub mod rules;
pub mod server;
pub mod shop;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod tls;
pub mod wasm;
pub mod wire;
