//! The central database in one SQLite file, shared by every edge process on the machine: the
//! embedded default. Each transaction runs on a blocking thread, `BEGIN IMMEDIATE`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, TransactionBehavior};

use crate::CentralError;
use crate::db::{Dialect, Param, Row, Tx, Value};
use crate::schema::{self, Plan, SchemaPolicy};

mod migrations {
    refinery::embed_migrations!("../../schema/central");
}

pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

impl Sqlite {
    /// Opens the file, creating it, and migrates its schema if it is older than this release
    /// and `policy` allows (checks it otherwise).
    pub async fn open(path: PathBuf, policy: SchemaPolicy) -> Result<Self, CentralError> {
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, CentralError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut conn = Connection::open(&path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Several edge processes share the file: wait for each other's transactions.
            conn.busy_timeout(Duration::from_secs(10))?;
            prepare(&mut conn, policy)?;
            Ok(conn)
        })
        .await??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// [`Self::transact`]: one connection, so every transaction already sees one moment.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        self.transact(f).await
    }

    /// Runs `f` in one transaction, off the async workers; commits if it succeeds.
    pub async fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&mut SqliteTx(&tx))?;
            tx.commit()?;
            Ok(value)
        })
        .await?
    }
}

/// Reads what the schema holds, and migrates it and stamps this release if the plan says to.
fn prepare(conn: &mut Connection, policy: SchemaPolicy) -> Result<(), CentralError> {
    use rusqlite::OptionalExtension as _;
    let table = |conn: &Connection, name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
    };
    let found = {
        let applied = if table(conn, "refinery_schema_history")? {
            conn.query_row(schema::APPLIED_SQL, [], |r| r.get(0))?
        } else {
            0
        };
        let release = if table(conn, "schema_release")? {
            conn.query_row(schema::RELEASE_SQL, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
        } else {
            None
        };
        schema::Found { applied, release }
    };
    let runner = migrations::migrations::runner();
    if schema::plan(&found, schema::newest(&runner), policy)? == Plan::Migrate {
        runner.run(conn)?;
        conn.execute_batch(&schema::stamp_sql())?;
    }
    Ok(())
}

struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, CentralError> {
        let mut stmt = self.0.prepare_cached(&placeholders(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, CentralError> {
        let mut stmt = self.0.prepare_cached(&placeholders(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let values = (0..width)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        other => {
                            return Err(CentralError::Decode(format!(
                                "column {i}: unexpected {:?}",
                                other.data_type()
                            )));
                        }
                    })
                })
                .collect::<Result<_, CentralError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Int(v) => ValueRef::Integer(v),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Bool(b) => ValueRef::Integer(i64::from(b)),
        }))
    }
}

/// The ledger's `$1` placeholders as SQLite's `?1`: in SQLite `$1` is a named parameter whose
/// number follows the order names first appear in, not its digits.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollar_placeholders_keep_their_numbers() {
        assert_eq!(
            super::placeholders("SELECT $2, $10 FROM t WHERE a = $1 AND b = '$'"),
            "SELECT ?2, ?10 FROM t WHERE a = ?1 AND b = '$'"
        );
    }
}
