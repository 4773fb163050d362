//! The edge's SQLite: [`db`] opens it, migrates its schema and holds the host's statements on
//! stock, grants, returns, the outbox and meta; [`writer`] is the one thread that changes it,
//! and [`durable`] the one that puts its commits on disk before anyone hears of them;
//! [`retention`] deletes what the edge no longer keeps.

pub mod db;
pub mod durable;
#[cfg(feature = "test-hooks")]
pub mod power;
pub mod retention;
pub mod writer;
