//! The edge's SQLite database: opening it, its versioned schema, the authorizer that keeps guest
//! SQL inside the guest's tables, and the host's own statements on stock, grants, outbox and meta.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Millis;

mod migrations {
    refinery::embed_migrations!("../schema/edge");
}

/// The only tables guest SQL may read or write.
pub const GUEST_TABLES: [&str; 3] = ["carts", "cart_lines", "orders"];

/// Prefix of every guest statement, so a guest's SQL never shares a prepared-statement cache
/// entry (prepared and authorized under host rules) with the host's own SQL.
const GUEST_SQL_TAG: &str = "/*guest*/ ";

/// The edge database's file name inside the data directory.
pub const FILE_NAME: &str = "edge.db";

/// Whether statements being prepared now come from the guest (and must pass the authorizer).
#[derive(Clone, Debug, Default)]
pub struct GuestFence(Arc<AtomicBool>);

impl GuestFence {
    fn guest_active(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Prepares and runs guest SQL with the fence up; statements touching host tables fail.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.store(true, Ordering::Relaxed);
        let out = f();
        self.0.store(false, Ordering::Relaxed);
        out
    }
}

/// The writer's connection: WAL, full fsync at commit, schema migrated, guest fence installed.
pub fn open_writer(dir: &Path) -> anyhow::Result<(Connection, GuestFence)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    let mut conn =
        Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, so an acknowledged update survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(128);
    // Plans that do not depend on bound values: otherwise SQLite re-prepares a cached statement
    // whenever a value it planned with changes (the request's `now`, a cart id), every request.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    migrations::migrations::runner()
        .run(&mut conn)
        .context("migrating the edge schema")?;
    let fence = GuestFence::default();
    let seen = fence.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if seen.guest_active() {
            authorize_guest(&ctx)
        } else {
            Authorization::Allow
        }
    }))?;
    Ok((conn, fence))
}

/// A read-only connection for status pages and the outbox reader.
pub fn open_reader(dir: &Path) -> anyhow::Result<Connection> {
    let path = dir.join(FILE_NAME);
    let conn = Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} to read", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

fn authorize_guest(ctx: &AuthContext<'_>) -> Authorization {
    let own = |table: &str| GUEST_TABLES.contains(&table);
    match ctx.action {
        AuthAction::Select | AuthAction::Function { .. } | AuthAction::Recursive => {
            Authorization::Allow
        }
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
            if own(table_name) =>
        {
            Authorization::Allow
        }
        _ => Authorization::Deny,
    }
}

/// The guest's SQL as the host prepares it (see [`GUEST_SQL_TAG`]).
pub fn guest_sql(sql: &str) -> String {
    let mut tagged = String::with_capacity(GUEST_SQL_TAG.len() + sql.len());
    tagged.push_str(GUEST_SQL_TAG);
    tagged.push_str(sql);
    tagged
}

// ---- stock -----------------------------------------------------------------------------------

/// Free, held and sold units of one SKU at this edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StockRow {
    pub free: u32,
    pub held: u32,
    pub sold: u32,
}

/// Moves `qty` free units to held; `Err(free)` when there are not enough.
pub fn reserve(conn: &Connection, sku: &str, qty: u32) -> rusqlite::Result<Result<(), u32>> {
    let changed = conn
        .prepare_cached(
            "UPDATE stock SET free = free - ?2, held = held + ?2 WHERE sku = ?1 AND free >= ?2",
        )?
        .execute(params![sku, qty])?;
    if changed == 1 {
        Ok(Ok(()))
    } else {
        Ok(Err(free(conn, sku)?))
    }
}

/// Moves held units back to free. Fails (a guest bug) if fewer are held.
pub fn release(conn: &Connection, sku: &str, qty: u32) -> rusqlite::Result<()> {
    let changed = conn
        .prepare_cached("UPDATE stock SET free = free + ?2, held = held - ?2 WHERE sku = ?1")?
        .execute(params![sku, qty])?;
    expect_one(changed)
}

/// Moves held units to sold. Fails (a guest bug) if fewer are held.
pub fn sell(conn: &Connection, sku: &str, qty: u32) -> rusqlite::Result<()> {
    let changed = conn
        .prepare_cached("UPDATE stock SET held = held - ?2, sold = sold + ?2 WHERE sku = ?1")?
        .execute(params![sku, qty])?;
    expect_one(changed)
}

pub fn free(conn: &Connection, sku: &str) -> rusqlite::Result<u32> {
    conn.prepare_cached("SELECT free FROM stock WHERE sku = ?1")?
        .query_row([sku], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

fn expect_one(changed: usize) -> rusqlite::Result<()> {
    if changed == 1 {
        Ok(())
    } else {
        // No such SKU in this edge's stock: the guest asked for something it never reserved.
        Err(rusqlite::Error::QueryReturnedNoRows)
    }
}

/// Every SKU's stock, by SKU.
pub fn stock_rows(conn: &Connection) -> rusqlite::Result<Vec<(String, StockRow)>> {
    let mut stmt = conn.prepare_cached("SELECT sku, free, held, sold FROM stock ORDER BY sku")?;
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            StockRow {
                free: r.get(1)?,
                held: r.get(2)?,
                sold: r.get(3)?,
            },
        ))
    })?
    .collect()
}

// ---- grants ----------------------------------------------------------------------------------

/// Records a grant request before central is asked, so a retry after a crash reuses its id.
pub fn record_grant_request(
    conn: &Connection,
    grant_id: &str,
    sku: &str,
    requested: u32,
    now: Millis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO grants (grant_id, sku, requested, requested_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![grant_id, sku, requested, now])?;
    Ok(())
}

/// Adds central's answer to a grant request to the free units, once.
pub fn apply_grant(
    conn: &Connection,
    grant_id: &str,
    granted: u32,
    now: Millis,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE grants SET granted = ?2, applied_at = ?3 WHERE grant_id = ?1 AND granted IS NULL",
        )?
        .execute(params![grant_id, granted, now])?;
    if changed == 0 {
        return Ok(false);
    }
    conn.prepare_cached(
        "UPDATE stock SET free = free + ?2 WHERE sku = (SELECT sku FROM grants WHERE grant_id = ?1)",
    )?
    .execute(params![grant_id, granted])?;
    Ok(true)
}

/// A grant request central has not answered yet, or whose answer was never applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingGrant {
    pub grant_id: String,
    pub sku: String,
    pub requested: u32,
}

/// Grant requests recorded at or before `before` and still unanswered.
pub fn pending_grants(conn: &Connection, before: Millis) -> rusqlite::Result<Vec<PendingGrant>> {
    let mut stmt = conn.prepare_cached(
        "SELECT grant_id, sku, requested FROM grants \
         WHERE granted IS NULL AND requested_at <= ?1 ORDER BY requested_at",
    )?;
    stmt.query_map([before], |r| {
        Ok(PendingGrant {
            grant_id: r.get(0)?,
            sku: r.get(1)?,
            requested: r.get(2)?,
        })
    })?
    .collect()
}

// ---- returns ---------------------------------------------------------------------------------

/// Takes up to `quantity` free units out of stock to give back to central, recorded under
/// `return_id` before central is told. Returns how many were taken (0: none were free).
pub fn record_return(
    conn: &Connection,
    return_id: &str,
    sku: &str,
    quantity: u32,
    now: Millis,
) -> rusqlite::Result<u32> {
    let n = quantity.min(free(conn, sku)?);
    if n == 0 {
        return Ok(0);
    }
    conn.prepare_cached("UPDATE stock SET free = free - ?2 WHERE sku = ?1")?
        .execute(params![sku, n])?;
    conn.prepare_cached(
        "INSERT INTO unit_returns (return_id, sku, quantity, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![return_id, sku, n, now])?;
    Ok(n)
}

/// Central has taken the units of this return.
pub fn confirm_return(conn: &Connection, return_id: &str, now: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE unit_returns SET confirmed_at = ?2 WHERE return_id = ?1 AND confirmed_at IS NULL",
    )?
    .execute(params![return_id, now])?;
    Ok(())
}

/// A return central has not confirmed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingReturn {
    pub return_id: String,
    pub sku: String,
    pub quantity: u32,
}

/// Returns recorded at or before `before` and not yet confirmed.
pub fn pending_returns(conn: &Connection, before: Millis) -> rusqlite::Result<Vec<PendingReturn>> {
    let mut stmt = conn.prepare_cached(
        "SELECT return_id, sku, quantity FROM unit_returns \
         WHERE confirmed_at IS NULL AND created_at <= ?1 ORDER BY created_at",
    )?;
    stmt.query_map([before], |r| {
        Ok(PendingReturn {
            return_id: r.get(0)?,
            sku: r.get(1)?,
            quantity: r.get(2)?,
        })
    })?
    .collect()
}

/// Grant requests and returns central has not answered yet.
pub fn in_flight(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(
        "SELECT (SELECT COUNT(*) FROM grants WHERE granted IS NULL), \
                (SELECT COUNT(*) FROM unit_returns WHERE confirmed_at IS NULL)",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// When the oldest undelivered outbox event was written, if any is.
pub fn oldest_undelivered(conn: &Connection) -> rusqlite::Result<Option<Millis>> {
    conn.prepare_cached("SELECT MIN(created_at) FROM outbox")?
        .query_row([], |r| r.get(0))
}

// ---- outbox ----------------------------------------------------------------------------------

/// Appends one event (JSON) to the outbox.
pub fn append_outbox(conn: &Connection, now: Millis, event_json: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO outbox (created_at, event) VALUES (?1, ?2)")?
        .execute(params![now, event_json])?;
    Ok(())
}

/// One undelivered outbox row.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub seq: i64,
    pub event: String,
}

/// Up to `limit` events after `after`, in order.
pub fn outbox_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<OutboxRow>> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, event FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    stmt.query_map(params![after, limit], |r| {
        Ok(OutboxRow {
            seq: r.get(0)?,
            event: r.get(1)?,
        })
    })?
    .collect()
}

/// Records that central applied everything up to `seq`, and prunes what it applied.
pub fn mark_delivered(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    set_meta(conn, "delivered_seq", &seq.to_string())?;
    conn.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?
        .execute([seq])?;
    Ok(())
}

pub fn delivered_seq(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(meta(conn, "delivered_seq")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Events written but not yet applied by central.
pub fn outbox_backlog(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM outbox")?
        .query_row([], |r| r.get(0))
}

// ---- meta ------------------------------------------------------------------------------------

pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, Connection, GuestFence) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (conn, fence) = open_writer(dir.path()).expect("open");
        (dir, conn, fence)
    }

    #[test]
    fn guest_sql_reaches_only_guest_tables() {
        let (_dir, conn, fence) = fresh();
        let run = |sql: &str| fence.run(|| conn.prepare(&guest_sql(sql)).map(|_| ()));
        assert!(run("SELECT cart_id FROM carts").is_ok());
        assert!(run("UPDATE cart_lines SET held = 0").is_ok());
        for denied in [
            "SELECT * FROM stock",
            "UPDATE stock SET free = 1000",
            "INSERT INTO outbox (created_at, event) VALUES (0, '')",
            "SELECT * FROM sqlite_master",
            "ATTACH DATABASE 'x.db' AS x",
            "CREATE TABLE evil (x)",
            "DROP TABLE carts",
            "PRAGMA journal_mode = DELETE",
            "COMMIT",
            "SAVEPOINT s",
        ] {
            assert!(run(denied).is_err(), "guest SQL was allowed: {denied}");
        }
        // The host's own statements still pass once the fence is down.
        assert!(conn.prepare("SELECT * FROM stock").is_ok());
    }

    #[test]
    fn a_guest_statement_never_reuses_a_host_cache_entry() {
        let (_dir, conn, fence) = fresh();
        let sql = "SELECT free FROM stock WHERE sku = ?1";
        conn.prepare_cached(sql).expect("host prepares");
        let guest = fence.run(|| conn.prepare_cached(&guest_sql(sql)).map(|_| ()));
        assert!(
            guest.is_err(),
            "the guest reached stock through the host's cached statement"
        );
    }

    #[test]
    fn reserve_reports_the_free_units_when_short() {
        let (_dir, conn, _fence) = fresh();
        conn.execute("INSERT INTO stock (sku, free) VALUES ('A', 3)", [])
            .expect("seed");
        assert_eq!(reserve(&conn, "A", 2).expect("sql"), Ok(()));
        assert_eq!(reserve(&conn, "A", 2).expect("sql"), Err(1));
        sell(&conn, "A", 1).expect("sell");
        release(&conn, "A", 1).expect("release");
        assert!(release(&conn, "A", 1).is_err(), "released more than held");
        let rows = stock_rows(&conn).expect("rows");
        assert_eq!(
            rows,
            vec![(
                "A".into(),
                StockRow {
                    free: 2,
                    held: 0,
                    sold: 1
                }
            )]
        );
    }

    #[test]
    fn a_return_takes_only_free_units_and_is_confirmed_once() {
        let (_dir, conn, _fence) = fresh();
        conn.execute("INSERT INTO stock (sku, free, held) VALUES ('A', 3, 2)", [])
            .expect("seed");
        assert_eq!(record_return(&conn, "r1", "A", 5, 0).expect("return"), 3);
        assert_eq!(record_return(&conn, "r2", "A", 1, 0).expect("return"), 0);
        assert_eq!(in_flight(&conn).expect("in flight"), (0, 1));
        assert_eq!(pending_returns(&conn, 0).expect("pending").len(), 1);
        confirm_return(&conn, "r1", 1).expect("confirm");
        assert!(pending_returns(&conn, 0).expect("pending").is_empty());
        assert_eq!(
            stock_rows(&conn).expect("rows")[0].1,
            StockRow {
                free: 0,
                held: 2,
                sold: 0
            }
        );
    }

    #[test]
    fn cached_guest_statements_are_not_prepared_again() {
        let (_dir, conn, fence) = fresh();
        // A join and an ORDER BY over bound values: both re-prepared on every new binding
        // without the query planner stability guarantee.
        let sql = "SELECT l.sku FROM carts c JOIN cart_lines l ON l.cart_id = c.cart_id \
                   WHERE c.customer_id = ?1 AND l.hold_expires_at > ?2 ORDER BY l.sku";
        for now in 0..3i64 {
            fence.run(|| {
                let mut stmt = conn.prepare_cached(&guest_sql(sql)).expect("prepare");
                let mut rows = stmt.query(params![format!("c-{now}"), now]).expect("query");
                while rows.next().expect("row").is_some() {}
                drop(rows);
                assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
            });
        }
    }

    #[test]
    fn a_grant_is_applied_once() {
        let (_dir, conn, _fence) = fresh();
        conn.execute("INSERT INTO stock (sku) VALUES ('A')", [])
            .expect("seed");
        record_grant_request(&conn, "g1", "A", 5, 0).expect("record");
        assert_eq!(pending_grants(&conn, 0).expect("pending").len(), 1);
        assert!(apply_grant(&conn, "g1", 4, 1).expect("apply"));
        assert!(!apply_grant(&conn, "g1", 4, 2).expect("apply again"));
        assert_eq!(free(&conn, "A").expect("free"), 4);
        assert!(pending_grants(&conn, 0).expect("pending").is_empty());
    }
}
