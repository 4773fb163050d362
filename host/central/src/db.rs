//! The one trait both central databases implement: statements with `$1`-style parameters run
//! inside a transaction, returning rows of integers and text. The ledger ([`crate::ledger`]) is
//! written once against it.

use crate::CentralError;
use crate::time::Millis;

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
    Bool(bool),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(v)
    }
}

/// Statement parameters: `params![a, b]` is `&[Param::from(a), Param::from(b)]`.
macro_rules! params {
    ($($x:expr),* $(,)?) => { &[$($crate::db::Param::from($x)),*] };
}
pub(crate) use params;

/// A value read back: the ledger reads only integers and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// One row of a result.
#[derive(Clone, Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, CentralError> {
        self.0
            .get(i)
            .ok_or_else(|| CentralError::Decode(format!("no column {i}")))
    }

    pub fn int(&self, i: usize) -> Result<i64, CentralError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            other => Err(CentralError::Decode(format!(
                "column {i}: expected an integer, got {other:?}"
            ))),
        }
    }

    /// A count or quantity: an integer that fits a `u32`.
    pub fn count(&self, i: usize) -> Result<u32, CentralError> {
        let v = self.int(i)?;
        u32::try_from(v)
            .map_err(|_| CentralError::Decode(format!("column {i}: {v} is not a count")))
    }

    pub fn text(&self, i: usize) -> Result<String, CentralError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(CentralError::Decode(format!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }
}

/// Which database a transaction is on, for the rare statement only one of them needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement and its parameters, for [`Tx::exec_all`] and [`Tx::query_all`].
pub type Statement<'a> = (&'static str, Vec<Param<'a>>);

/// A transaction on the central database. Statements use `$1`, `$2`... for parameters.
pub trait Tx {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; how many rows it changed.
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, CentralError>;

    /// Runs a query; every row.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, CentralError>;

    /// Runs statements, in order, whose results nothing needs until the last is done; stops at
    /// the first that fails. A database across a network pipelines them: PostgreSQL gets them
    /// all at once, one round trip for the lot.
    fn exec_all(&mut self, statements: &[Statement<'_>]) -> Result<(), CentralError> {
        for (sql, params) in statements {
            self.exec(sql, params)?;
        }
        Ok(())
    }

    /// Runs queries, in order, and returns each one's rows; pipelined as [`Tx::exec_all`] is.
    fn query_all(&mut self, queries: &[Statement<'_>]) -> Result<Vec<Vec<Row>>, CentralError> {
        queries
            .iter()
            .map(|(sql, params)| self.query(sql, params))
            .collect()
    }

    /// Runs a query; its first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, CentralError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// The database's own clock, in milliseconds: leases are granted and compared on one clock,
/// whichever machine the process asking runs on.
pub fn clock(tx: &mut dyn Tx) -> Result<Millis, CentralError> {
    match tx.dialect() {
        // One machine's file: its clock is every caller's.
        Dialect::Sqlite => Ok(crate::time::wall_ms()),
        Dialect::Postgres => tx
            .query_opt(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                &[],
            )?
            .ok_or_else(|| CentralError::Decode("no clock".into()))?
            .int(0),
    }
}
