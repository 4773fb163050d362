//! The flash-sale edge: the product library behind `cart-host serve`.
//!
//! A storefront's request arrives at [`api`], which checks it and hands it to [`shop`]; each cart
//! operation is one job of the [`writer`] (a savepoint in a group commit on the edge's SQLite,
//! [`edge_db`]), in which [`carts`] loads what the cart rules need, asks them ([`rules`]: the
//! deployed component, run by [`wasm`]), and applies their decision with its stock moves and
//! outbox event. [`sync`] delivers the outbox to the central database (crate `cart-central`),
//! from which [`escrow`] draws units.
//!
//! - [`server`]: serving an edge on a listener until shutdown; [`config`]: what it is told.
//! - [`api`]: routes, input checks, JSON views; [`error`]: the one place errors become HTTP;
//!   [`status`]: the operator's `/admin/status`.
//! - [`shop`]: each shopper operation, and the escrow retry before `sold_out`.
//! - [`carts`]: the cart store: load, decide, check, apply; the cart's view.
//! - [`writer`]: the single writer thread, batching and group commit.
//! - [`rules`]: the seam to the cart rules; [`wasm`]: engine, modules, a fresh instance per
//!   call; [`bindings`]: the generated bindings, generated once.
//! - [`modules`]: deploying cart components: signatures, validation, versions, rollback.
//! - [`edge_db`]: the edge's schema and the host's SQL on stock, grants, returns and outbox.
//! - [`edge`]: a running edge's shared parts, its start-up and its background tasks.
//! - [`sync`]: outbox delivery; [`escrow`]: grants and returns of units, and stock balancing;
//!   [`calendar`]: the sales this edge serves, followed while it runs.
//! - [`identity`]: the data folder's lock and history, the process's claim and lease at central.
//! - [`fleet`]: one fleet behind one address: cart ids name their edge; requests for another
//!   edge's cart are forwarded to it.
//! - [`drain`]: leaving the fleet (`POST /admin/drain`, `SIGTERM`); [`handoff`]: moving carts
//!   to another edge exactly once.
//! - [`customer`]: who a new cart's customer is (a signed token, or taken on trust), and how
//!   many carts an address may make.
//! - [`pages`]: the storefront (`/`) and the operator dashboard (`/admin/`), embedded;
//!   [`dashboard`]: `/admin/fleet`, the fleet's view the dashboard reads; [`recent`]: cart
//!   updates second by second over the last two minutes.
//! - [`http_client`]: the HTTP client edges and commands use.
//! - [`clock`], [`ids`], [`metrics`]: time, identifiers, Prometheus metrics.

// Server code answers errors; it does not panic on them.
#![warn(clippy::expect_used)]

pub mod api;
pub mod bindings;
pub mod calendar;
pub mod carts;
pub mod clock;
pub mod config;
pub mod customer;
pub mod dashboard;
pub mod drain;
pub mod edge;
pub mod edge_db;
pub mod error;
pub mod escrow;
pub mod fleet;
pub mod handoff;
pub mod http_client;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod modules;
pub mod pages;
pub mod recent;
pub mod rules;
pub mod server;
pub mod shop;
pub mod status;
pub mod sync;
pub mod wasm;
pub mod writer;
