//! The flash-sale edge host.
//!
//! A storefront's request arrives at [`api`], which checks it and turns it into one typed call;
//! the [`writer`] runs that call in the cart component ([`wasm`]) inside a savepoint of a group
//! commit on the edge's SQLite ([`edge_db`]); the component's events land in the outbox, which
//! [`edge`] delivers to the [`central`] database, from which [`allotment`] draws units.
//!
//! - [`api`]: routes, input checks, JSON views; [`error`]: the one place errors become HTTP.
//! - [`writer`]: the single writer thread, batching and group commit.
//! - [`wasm`]: engine, linker, modules, and the host side of each WIT interface;
//!   [`bindings`]: the generated bindings, generated once.
//! - [`edge_db`]: the edge's schema, guest fence and host SQL.
//! - [`edge`]: an edge's configuration, start-up and background tasks (sync, sweep, top-ups).
//! - [`allotment`]: grants of units from central, idempotent by grant id.
//! - [`modules`]: deploying cart components: signatures, validation, versions, rollback.
//! - [`central`]: the central database (SQLite file by default).
//! - [`events`]: the outbox's event format; [`sale`]: the sale file and catalog.
//! - [`server`]: serving an edge on a listener until shutdown; [`demo`]: `cart-host demo`;
//!   [`audit`]: `cart-host audit`; [`deploy`]: `cart-host deploy`; [`http_client`]: the client those commands use.
//! - [`load`]: the flash-sale load generator (`cart-host load`); [`bench`]: `make bench`; [`native`]: the rules compiled
//!   into the host without WebAssembly, the benchmarks' baseline.
//! - [`pg_cluster`]: a throwaway PostgreSQL cluster, for the tests and benchmarks.
//! - [`clock`], [`ids`], [`metrics`]: time, identifiers, Prometheus metrics.

pub mod allotment;
pub mod api;
pub mod audit;
pub mod bench;
pub mod bindings;
pub mod central;
pub mod clock;
pub mod demo;
pub mod deploy;
pub mod edge;
pub mod edge_db;
pub mod error;
pub mod events;
pub mod http_client;
pub mod ids;
pub mod load;
pub mod metrics;
pub mod modules;
pub mod native;
pub mod pg_cluster;
pub mod sale;
pub mod server;
pub mod wasm;
pub mod writer;
