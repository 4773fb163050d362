//! The flash-sale edge host.
//!
//! A storefront's request arrives at [`api`], which checks it and hands it to [`shop`]; each cart
//! operation is one job of the [`writer`] (a savepoint in a group commit on the edge's SQLite,
//! [`edge_db`]), in which [`carts`] loads what the cart rules need, asks them ([`rules`]: the
//! component run by [`wasm`], or the same rules compiled in, [`native`]), and applies their
//! decision with its stock moves and outbox event. [`edge`] delivers the outbox to the
//! [`central`] database, from which [`allotment`] draws units.
//!
//! - [`api`]: routes, input checks, JSON views; [`error`]: the one place errors become HTTP.
//! - [`shop`]: each shopper operation, and the escrow retry before `sold_out`.
//! - [`carts`]: the cart store: load, decide, check, apply; the cart's view.
//! - [`writer`]: the single writer thread, batching and group commit.
//! - [`rules`]: the seam to the cart rules; [`wasm`]: engine, modules, a fresh instance per
//!   call; [`bindings`]: the generated bindings, generated once.
//! - [`edge_db`]: the edge's schema and the host's SQL on stock, grants, returns and outbox.
//! - [`edge`]: an edge's configuration, start-up and background tasks (sync, sweep, top-ups).
//! - [`allotment`]: grants of units from central, idempotent by grant id.
//! - [`modules`]: deploying cart components: signatures, validation, versions, rollback.
//! - [`central`]: the central database (SQLite file by default).
//! - [`events`]: the outbox's event format; [`sale`]: the sale file and catalog.
//! - [`server`]: serving an edge on a listener until shutdown; [`demo`]: `cart-host demo`;
//!   [`audit`]: `cart-host audit`; [`deploy`]: `cart-host deploy`; [`http_client`]: the client those commands use.
//! - [`load`]: the flash-sale load generator (`cart-host load`); [`bench`]: `make bench`.
//! - [`pg_cluster`]: a throwaway PostgreSQL cluster, for the tests and benchmarks.
//! - [`clock`], [`ids`], [`metrics`]: time, identifiers, Prometheus metrics.

pub mod api;
pub mod bindings;
pub mod carts;
pub mod clock;
pub mod edge;
pub mod edge_db;
pub mod error;
pub mod escrow;
pub mod http_client;
pub mod ids;
pub mod metrics;
pub mod modules;
pub mod rules;
pub mod server;
pub mod shop;
pub mod status;
pub mod wasm;
pub mod writer;
