//! Benchmarks of the flash-sale edge.
//!
//! The load generator is the `cart-load` crate (also `cart-host load`'s); [`plot`] draws its
//! reports.
//!
//! - [`native`]: the cart rules compiled into the host, the baseline the component is measured
//!   against; `cart-bench edge` serves an edge on it.
//! - [`suite`]: `make bench`: every benchmark in one run, written to `BENCHMARKS.md`;
//!   [`harness`]: what its parts share (edge processes, fleets, measured runs, the audit).
//! - [`budget`]: the rules call on its own, in a fresh instance and natively.
//! - [`delivery`]: the outbox straight to central against through NATS JetStream, ten edges.
//! - [`watching`]: what the operator dashboard costs an edge during the rush.
//! - [`faults`]: the long randomized fault run, checked order by order.
//! - [`days`]: thirty daily sales, and the databases' sizes with and without retention.
//! - [`wrk`]: the same servers under `wrk`, closed loop; CPU time of a process; `taskset`.
//! - [`speed`]: the edge against its speed goals under `wrk`, beside the anchors.
//! - [`hello`]: a plain hyper hello world, the HTTP anchor.

pub mod budget;
pub mod days;
pub mod delivery;
pub mod draining;
pub mod faults;
pub mod harness;
pub mod hello;
pub mod native;
pub mod plot;
pub mod scaling;
pub mod speed;
pub mod suite;
pub mod wan;
pub mod watching;
pub mod wrk;
