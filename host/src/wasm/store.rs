//! `store`: the guest's SQL, run on the request's connection behind the guest fence.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use super::HostState;
use crate::bindings::Value;
use crate::bindings::flashsale::cart::store::Host;
use crate::edge_db::{GuestFence, guest_sql};

impl Host for HostState {
    fn execute(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, String>> {
        Ok(execute(&self.conn, &self.fence, &sql, &params).map_err(|e| e.to_string()))
    }

    fn query(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Vec<Vec<Value>>, String>> {
        Ok(query(&self.conn, &self.fence, &sql, &params).map_err(|e| e.to_string()))
    }
}

pub fn execute(
    conn: &Connection,
    fence: &GuestFence,
    sql: &str,
    params: &[Value],
) -> rusqlite::Result<u64> {
    fence.run(|| {
        let mut stmt = conn.prepare_cached(&guest_sql(sql))?;
        let changed = stmt.execute(rusqlite::params_from_iter(params.iter().map(Param)))?;
        Ok(changed as u64)
    })
}

pub fn query(
    conn: &Connection,
    fence: &GuestFence,
    sql: &str,
    params: &[Value],
) -> rusqlite::Result<Vec<Vec<Value>>> {
    fence.run(|| {
        let mut stmt = conn.prepare_cached(&guest_sql(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(Param)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(from_sql(row.get_ref(i)?));
            }
            out.push(values);
        }
        Ok(out)
    })
}

/// A WIT value as an SQL parameter.
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}
