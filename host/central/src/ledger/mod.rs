//! The stock ledger, written once for both databases: the calendar of sales, grants and returns
//! of units, outbox events applied exactly once, and the snapshot the audit reads.
//!
//! Each file owns one part of it:
//!
//! - [`calendar`]: sales loaded, replaced, ended and read back, and the catalog's version;
//! - [`units`]: edges and their units: claims, retired histories, leases, the fence against
//!   superseded processes, grants, returns, and the SKUs edges want back;
//! - [`outbox`]: an edge's outbox events, signed by its key, applied once, in sequence;
//! - [`audit`]: the audit's snapshot, stock levels and sell-through, the registry, customers' homes and orders;
//! - [`handoffs`]: carts handed from a draining edge to another, and drained edges;
//! - [`fleet_module`]: the module the fleet runs;
//! - [`retention`]: receipts and hand-off cart lists central forgets past an edge's retention;
//! - [`restores`]: a restore from a backup noticed, and grants held back until edges have sent
//!   theirs again.
//!
//! The files import one another one way only (`restores` below `units`, `units` below the
//! others, which fence and count units through it; `audit` reads sales through `calendar`) and
//! never this file; callers use the re-exports below.

mod audit;
mod calendar;
mod fleet_module;
mod handoffs;
mod outbox;
mod restores;
mod retention;
mod units;

pub(crate) use crate::db::clock;
pub(crate) use audit::{
    home_of, late_orders, orders_of, over_limit, registry, retired_units, sell_through, snapshot,
    stock_levels,
};
pub(crate) use calendar::{catalog_version, end_sale, load_sale, read_sale, sales_ending_after};
pub(crate) use fleet_module::{fleet_module, fleet_module_id, set_fleet_module};
pub(crate) use handoffs::{
    applied_up_to, cart_owner, drained, handoff_record, handoff_recorded, handoff_taken,
    record_handoff,
};
pub(crate) use outbox::{applied_digests, apply, history_keys};
pub(crate) use restores::{NoticedBy, noticed as noticed_restore};
pub use retention::BATCH as FORGET_BATCH;
pub(crate) use retention::forget;
pub(crate) use units::{
    Claiming, Granting, claim_edge, grant, left_in_sales, reconciled, renew_lease, return_units,
    wanted,
};
