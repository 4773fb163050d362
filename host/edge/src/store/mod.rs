//! The edge's SQLite: [`db`] opens it, migrates its schema and holds the host's statements on
//! stock, grants, returns, the outbox and meta; [`writer`] is the one thread that changes it;
//! [`retention`] deletes what the edge no longer keeps.

pub mod db;
pub mod retention;
pub mod writer;
