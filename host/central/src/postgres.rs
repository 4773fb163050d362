//! The central database on PostgreSQL, through a pool of async connections. A transaction runs
//! the ledger's synchronous code on a blocking thread, each statement awaited there; row locks
//! taken by its `UPDATE`s serialize what SQLite's single writer serializes.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::try_join_all;
use tokio::runtime::Handle;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::{ToSql, Type};

use crate::CentralError;
use crate::db::{Dialect, Param, Row, Statement, Tx, Value};
use crate::schema::{self, Plan, SchemaPolicy};

mod migrations {
    refinery::embed_migrations!("../../schema/central");
}

/// Longest wait for one statement's answer: central far away, or a link that blackholes, costs
/// a bounded wait, and the connection it was on is closed rather than used again.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session may sit in a transaction before PostgreSQL ends it: well past any
/// statement's deadline.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(15);

/// Longest wait for the schema to be brought up to date (others may be migrating it first).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Key of the advisory lock edges take to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x00ca_47ed;

/// Reads what the schema holds, and migrates it and stamps this release if the plan says to.
async fn prepare(
    client: &mut tokio_postgres::Client,
    policy: SchemaPolicy,
) -> Result<(), CentralError> {
    let tables = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL, \
                    to_regclass('schema_release') IS NOT NULL",
            &[],
        )
        .await?;
    let applied = if tables.get(0) {
        client.query_one(schema::APPLIED_SQL, &[]).await?.get(0)
    } else {
        0
    };
    let release = if tables.get(1) {
        client
            .query_opt(schema::RELEASE_SQL, &[])
            .await?
            .map(|r| (r.get(0), r.get(1)))
    } else {
        None
    };
    let runner = migrations::migrations::runner();
    let found = schema::Found { applied, release };
    if schema::plan(&found, schema::newest(&runner), policy)? == Plan::Migrate {
        runner.run_async(client).await?;
        client.execute(&schema::stamp_sql(), &[]).await?;
    }
    Ok(())
}

/// A pool's error with every cause under it (a refused certificate is three causes down).
fn pool_error(e: impl std::error::Error) -> CentralError {
    CentralError::Pool(crate::with_causes(&e))
}

pub struct Postgres {
    pool: Pool,
    /// Set once the schema is up to date: at open if PostgreSQL answers, else before the first
    /// transaction that reaches it (an edge may start while central is down).
    migrated: tokio::sync::OnceCell<()>,
    /// Whether this process may migrate the schema, or only checks it.
    policy: SchemaPolicy,
}

impl Postgres {
    /// Opens a pool of at most `connections` and brings the schema up to date (or checks it).
    pub async fn open(
        url: &str,
        connections: usize,
        policy: SchemaPolicy,
    ) -> Result<Self, CentralError> {
        let crate::pg_connect::Target { mut config, tls } = crate::pg_connect::target(url)?;
        // A caller cut off mid-transaction (a blackholed link sends no FIN) must not hold its
        // row locks, an edge's lease row among them, until TCP gives up hours later: the server
        // ends a session that sits in a transaction this long.
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            IDLE_IN_TRANSACTION.as_millis()
        );
        config.options(options.trim());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections)
            .runtime(Runtime::Tokio1)
            // While PostgreSQL is down, fail fast: the caller retries with backoff.
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(pool_error)?;
        let db = Self {
            pool,
            migrated: tokio::sync::OnceCell::new(),
            policy,
        };
        if let Err(e) = db.migrated.get_or_try_init(|| db.migrate()).await {
            match e {
                CentralError::Pool(_) | CentralError::Timeout(_) => {}
                e => return Err(e),
            }
        }
        Ok(db)
    }

    /// The schema brought up to date, if it was not yet.
    pub async fn ensure_migrated(&self) -> Result<(), CentralError> {
        self.migrated.get_or_try_init(|| self.migrate()).await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CentralError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Migrates the schema if it is older than this release and this process may, under a lock
    /// that makes processes starting together do it once; checks it otherwise.
    async fn migrate(&self) -> Result<(), CentralError> {
        let mut client = self.client().await?;
        let policy = self.policy;
        let run = async {
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            let raw: &mut tokio_postgres::Client = &mut client;
            let migrated = prepare(raw, policy).await;
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await?;
            migrated
        };
        let done = tokio::time::timeout(MIGRATION_TIMEOUT, run)
            .await
            .unwrap_or(Err(CentralError::Timeout(MIGRATION_TIMEOUT)));
        if let Err(CentralError::Timeout(_)) = done {
            drop(deadpool_postgres::Object::take(client));
        }
        done
    }

    /// Runs `f` in one transaction on a pooled connection; commits if it succeeds. At
    /// PostgreSQL's default isolation, `READ COMMITTED`: each statement sees what was committed
    /// when it began, and the ledger's row locks order the writers.
    pub async fn transact<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        self.run(IsolationLevel::ReadCommitted, false, f).await
    }

    /// Runs `f`, which only reads, in one `REPEATABLE READ` transaction: every statement sees
    /// the database as of the first, so reads that are compared with each other (the audit's
    /// holds against its high-water marks) cannot straddle another transaction's commit.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        self.run(IsolationLevel::RepeatableRead, true, f).await
    }

    async fn run<T: Send + 'static>(
        &self,
        isolation: IsolationLevel,
        read_only: bool,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, CentralError> + Send + 'static,
    ) -> Result<T, CentralError> {
        self.ensure_migrated().await?;
        let mut client = self.client().await?;
        let rt = Handle::current();
        tokio::task::spawn_blocking(move || {
            let done = (|| {
                let begin = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .read_only(read_only)
                    .start();
                let tx = within(&rt, begin)??;
                let value = f(&mut PgTx { tx: &tx, rt: &rt })?;
                within(&rt, tx.commit())??;
                Ok(value)
            })();
            if let Err(CentralError::Timeout(_)) = done {
                // Its answer may still come, to a statement no one waits for: not reused.
                drop(deadpool_postgres::Object::take(client));
            }
            done
        })
        .await?
    }
}

/// Runs a statement's future to its end, or to [`STATEMENT_TIMEOUT`].
fn within<T>(rt: &Handle, f: impl Future<Output = T>) -> Result<T, CentralError> {
    rt.block_on(tokio::time::timeout(STATEMENT_TIMEOUT, f))
        .map_err(|_| CentralError::Timeout(STATEMENT_TIMEOUT))
}

struct PgTx<'a> {
    tx: &'a deadpool_postgres::Transaction<'a>,
    rt: &'a Handle,
}

impl PgTx<'_> {
    fn values<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
        params
            .iter()
            .map(|p| -> &(dyn ToSql + Sync) {
                match p {
                    Param::Int(v) => v,
                    Param::Text(s) => s,
                    Param::Bool(b) => b,
                }
            })
            .collect()
    }
}

impl Tx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, CentralError> {
        let stmt = within(self.rt, self.tx.prepare_cached(sql))??;
        Ok(within(
            self.rt,
            self.tx.execute(&stmt, &Self::values(params)),
        )??)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, CentralError> {
        let stmt = within(self.rt, self.tx.prepare_cached(sql))??;
        let rows = within(self.rt, self.tx.query(&stmt, &Self::values(params)))??;
        rows.iter().map(decode).collect()
    }

    // The statements run in the order given: tokio-postgres sends a request when its future is
    // first polled, and `try_join_all` first polls its futures in order (directly when they are
    // few, through `FuturesOrdered`'s first-in-first-out queue when many). The server answers
    // them in turn; the first error is the first failed statement's, and the transaction is then
    // aborted, so nothing after it takes effect.
    fn exec_all(&mut self, statements: &[Statement<'_>]) -> Result<(), CentralError> {
        let prepared = self.prepare_all(statements)?;
        let values: Vec<_> = statements.iter().map(|(_, p)| Self::values(p)).collect();
        within(
            self.rt,
            try_join_all(
                prepared
                    .iter()
                    .zip(&values)
                    .map(|(stmt, values)| self.tx.execute(stmt, values)),
            ),
        )??;
        Ok(())
    }

    fn query_all(&mut self, queries: &[Statement<'_>]) -> Result<Vec<Vec<Row>>, CentralError> {
        let prepared = self.prepare_all(queries)?;
        let values: Vec<_> = queries.iter().map(|(_, p)| Self::values(p)).collect();
        let answers = within(
            self.rt,
            try_join_all(
                prepared
                    .iter()
                    .zip(&values)
                    .map(|(stmt, values)| self.tx.query(stmt, values)),
            ),
        )??;
        answers
            .iter()
            .map(|rows| rows.iter().map(decode).collect())
            .collect()
    }
}

impl PgTx<'_> {
    /// Each statement prepared (those not in the connection's cache yet in one round trip), in
    /// the statements' order.
    fn prepare_all(
        &self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<tokio_postgres::Statement>, CentralError> {
        let mut distinct: Vec<&str> = statements.iter().map(|(sql, _)| *sql).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let prepared = within(
            self.rt,
            try_join_all(distinct.iter().map(|sql| self.tx.prepare_cached(sql))),
        )??;
        Ok(statements
            .iter()
            .map(|(sql, _)| {
                let i = distinct.binary_search(sql).unwrap_or_default();
                prepared[i].clone()
            })
            .collect())
    }
}

/// A row as the ledger reads it: integers and text.
fn decode(r: &tokio_postgres::Row) -> Result<Row, CentralError> {
    let values = r
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = c.type_();
            Ok(if *ty == Type::INT8 {
                r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int)
            } else if *ty == Type::INT4 {
                r.get::<_, Option<i32>>(i)
                    .map_or(Value::Null, |v| Value::Int(v.into()))
            } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                r.get::<_, Option<String>>(i)
                    .map_or(Value::Null, Value::Text)
            } else if *ty == Type::BOOL {
                r.get::<_, Option<bool>>(i)
                    .map_or(Value::Null, |v| Value::Int(v.into()))
            } else {
                return Err(CentralError::Decode(format!(
                    "column {} has type {ty}: cast it to BIGINT or TEXT",
                    c.name()
                )));
            })
        })
        .collect::<Result<_, CentralError>>()?;
    Ok(Row(values))
}
