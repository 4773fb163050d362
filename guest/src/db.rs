//! Typed helpers over the host's `store` interface, the guest's only way to its tables.
//!
//! A failing statement is a bug in these rules (or SQL the host refused), not something a shopper
//! can act on, so it traps: the host answers `500 guest_fault` and rolls the request back.

use crate::bindings::flashsale::cart::store::{self, Value};

/// Runs a statement; returns the number of rows it changed.
pub fn execute(sql: &str, params: &[Value]) -> u64 {
    store::execute(sql, params).unwrap_or_else(|e| panic!("store refused `{sql}`: {e}"))
}

/// Runs a query; returns every row.
pub fn query(sql: &str, params: &[Value]) -> Vec<Vec<Value>> {
    store::query(sql, params).unwrap_or_else(|e| panic!("store refused `{sql}`: {e}"))
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

pub fn int(i: impl Into<i64>) -> Value {
    Value::Integer(i.into())
}

/// Reads an integer column; NULL reads as 0.
pub fn as_int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        Value::Null => 0,
        other => panic!("expected an integer column, got {other:?}"),
    }
}

/// Reads a text column.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => panic!("expected a text column, got {other:?}"),
    }
}

/// Reads a quantity column, which the rules keep within `u32`.
pub fn as_qty(v: &Value) -> u32 {
    u32::try_from(as_int(v)).unwrap_or_else(|_| panic!("quantity out of range: {v:?}"))
}
