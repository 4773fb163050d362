//! The edge's SQLite database: opening it, its versioned schema, and the host's statements on
//! stock, grants, returns, the outbox and meta. (Carts, lines and orders: [`crate::carts`].)

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use cart_central::SkuKey;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::durable::Mark;
use crate::clock::Millis;
use crate::locks;

mod migrations {
    refinery::embed_migrations!("../../schema/edge");
}

/// The edge database's file name inside the data directory.
pub const FILE_NAME: &str = "edge.db";

/// The writer's connection: WAL, schema migrated. The writer syncs the WAL when it starts
/// ([`super::writer::WriterHandle::spawn`]).
pub fn open_writer(dir: &Path) -> anyhow::Result<Connection> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    let mut conn =
        open(&path, OpenFlags::default()).with_context(|| format!("opening {}", path.display()))?;
    incremental_vacuum(&conn).with_context(|| format!("vacuuming {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: `COMMIT` does not sync the WAL; the writer's flusher does, before any job of the
    // batch is answered (see `super::durable` for why that keeps every answered update).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    tune(&conn)?;
    migrations::migrations::runner()
        .run(&mut conn)
        .context("migrating the edge schema (a data folder from before cart-host 0.2 cannot be migrated: start the edge on a fresh folder)")?;
    Ok(conn)
}

/// Opens the database file at `path`; through the power-loss VFS when a test asks for it.
fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    #[cfg(feature = "test-hooks")]
    if super::power::tracking() {
        return Connection::open_with_flags_and_vfs(path, flags, super::power::VFS);
    }
    Connection::open_with_flags(path, flags)
}

/// Puts the database in incremental auto-vacuum, so that pages retention frees can be given
/// back to the file system ([`super::retention`]). A new file takes it at once; a folder of an
/// older release is rewritten once, by `VACUUM`.
fn incremental_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", INCREMENTAL)?;
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    if pages > 0 {
        tracing::info!(
            pages,
            "rewriting the edge database once, for incremental vacuum"
        );
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// What [`backup`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub bytes: u64,
    pub pages: u32,
}

/// Copies the SQLite database at `from` to `to` as of one read transaction (`VACUUM INTO`,
/// which a running writer does not stop), compacted, and checked whole: written beside `to`
/// first and renamed into place once checked, so that `to` is a complete copy or nothing.
/// Refuses a `to` that exists.
pub fn backup(from: &Path, to: &Path) -> anyhow::Result<Backup> {
    anyhow::ensure!(from.is_file(), "there is no database at {}", from.display());
    anyhow::ensure!(
        !to.exists(),
        "{} exists: name a new file for the backup",
        to.display()
    );
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    // Left by a backup that was cut short.
    let _ = std::fs::remove_file(&partial);
    let copy = || -> anyhow::Result<Backup> {
        let source = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {} to read", from.display()))?;
        source.busy_timeout(std::time::Duration::from_secs(30))?;
        let target = partial
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 path", partial.display()))?;
        source
            .execute("VACUUM INTO ?1", [target])
            .with_context(|| format!("copying {}", from.display()))?;
        // A running edge's last commits may not be on disk yet, and a power cut could take
        // them back: the copy holds nothing the edge could lose.
        super::durable::sync_wal(from)
            .with_context(|| format!("syncing {}'s WAL", from.display()))?;
        let copy = Connection::open(&partial)?;
        let check: String = copy.pragma_query_value(None, "integrity_check", |r| r.get(0))?;
        anyhow::ensure!(check == "ok", "the copy does not check whole: {check}");
        let pages = copy.pragma_query_value(None, "page_count", |r| r.get(0))?;
        drop(copy);
        std::fs::File::open(&partial)?.sync_all()?;
        Ok(Backup {
            bytes: std::fs::metadata(&partial)?.len(),
            pages,
        })
    };
    let written = copy().inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    std::fs::rename(&partial, to)
        .with_context(|| format!("moving the copy to {}", to.display()))?;
    let folder = to.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(folder.unwrap_or(Path::new(".")))?.sync_all()?;
    Ok(written)
}

/// A read-only connection: reads see the last commit (WAL snapshots) and never wait for the
/// writer.
pub fn open_reader(dir: &Path) -> anyhow::Result<Connection> {
    let path = dir.join(FILE_NAME);
    let conn = open(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} to read", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    tune(&conn)?;
    Ok(conn)
}

/// Read-only connections, opened as needed and kept for the next read. A read sees the last
/// commit, synced or not, so each one waits for the durable mark to pass what it could have
/// seen before its answer leaves ([`super::durable`]).
pub struct Readers {
    dir: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Reads at once on blocking threads; each holds a connection there.
    gate: tokio::sync::Semaphore,
    mark: Arc<Mark>,
}

/// Reads an edge runs at once on blocking threads. It keeps at most this many read connections,
/// and one more for each async worker ([`Readers::read_here`]).
const READERS: usize = 8;

impl Readers {
    pub fn new(dir: &Path, mark: Arc<Mark>) -> Self {
        Self {
            dir: dir.to_owned(),
            idle: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(READERS),
            mark,
        }
    }

    /// Runs `f` on a read connection, off the async workers.
    pub async fn read<T: Send + 'static, E: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> anyhow::Result<Result<T, E>> {
        let found = {
            let _turn = self.gate.acquire().await?;
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.read_now(f)).await??
        };
        self.mark.after_read().await?;
        Ok(found)
    }

    /// Runs `f` on a read connection on this thread: for a read by key, which takes less time
    /// than handing it to a blocking thread would.
    pub async fn read_here<T>(&self, f: impl FnOnce(&Connection) -> T) -> anyhow::Result<T> {
        let found = self.read_now(f)?;
        self.mark.after_read().await?;
        Ok(found)
    }

    /// A WAL read never waits for the writer; it can wait, for a millisecond or so, only in the
    /// rare moment the writer starts the WAL over. The first reads of an edge also open their
    /// connections here.
    fn read_now<T>(&self, f: impl FnOnce(&Connection) -> T) -> anyhow::Result<T> {
        let idle = locks::lock(&self.idle).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.dir)?,
        };
        let result = f(&conn);
        locks::lock(&self.idle).push(conn);
        Ok(result)
    }
}

fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(128);
    // Plans that do not depend on bound values: otherwise SQLite re-prepares a cached statement
    // whenever a value it planned with changes (the request's `now`, a cart id), every request.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

// ---- stock -----------------------------------------------------------------------------------

/// Free, held and sold units of one SKU at this edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockRow {
    pub free: u32,
    pub held: u32,
    pub sold: u32,
}

/// Makes sure a SKU of a sale has a stock row (with nothing in it yet).
pub fn add_stock(conn: &Connection, sale_id: &str, sku: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO stock (sale_id, sku) VALUES (?1, ?2)")?
        .execute([sale_id, sku])?;
    Ok(())
}

/// Moves `qty` free units to held; `Err(free)` when there are not enough.
pub fn reserve(
    conn: &Connection,
    sale_id: &str,
    sku: &str,
    qty: u32,
) -> rusqlite::Result<Result<(), u32>> {
    let changed = conn
        .prepare_cached(
            "UPDATE stock SET free = free - ?3, held = held + ?3 \
             WHERE sale_id = ?1 AND sku = ?2 AND free >= ?3",
        )?
        .execute(params![sale_id, sku, qty])?;
    if changed == 1 {
        Ok(Ok(()))
    } else {
        Ok(Err(free(conn, sale_id, sku)?))
    }
}

/// Moves held units back to free. Fails (a host bug) if fewer are held.
pub fn release(conn: &Connection, sale_id: &str, sku: &str, qty: u32) -> rusqlite::Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE stock SET free = free + ?3, held = held - ?3 WHERE sale_id = ?1 AND sku = ?2",
        )?
        .execute(params![sale_id, sku, qty])?;
    expect_one(changed)
}

/// Moves held units to sold. Fails (a host bug) if fewer are held.
pub fn sell(conn: &Connection, sale_id: &str, sku: &str, qty: u32) -> rusqlite::Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE stock SET held = held - ?3, sold = sold + ?3 WHERE sale_id = ?1 AND sku = ?2",
        )?
        .execute(params![sale_id, sku, qty])?;
    expect_one(changed)
}

/// Free units of a SKU at this edge.
pub fn free(conn: &Connection, sale_id: &str, sku: &str) -> rusqlite::Result<u32> {
    conn.prepare_cached("SELECT free FROM stock WHERE sale_id = ?1 AND sku = ?2")?
        .query_row([sale_id, sku], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

fn expect_one(changed: usize) -> rusqlite::Result<()> {
    if changed == 1 {
        Ok(())
    } else {
        // No such SKU in this edge's stock: something was moved that was never reserved.
        Err(rusqlite::Error::QueryReturnedNoRows)
    }
}

/// One SKU's stock at this edge.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockLine {
    pub sale_id: String,
    pub sku: String,
    pub units: StockRow,
}

/// Every SKU's stock, by sale and SKU.
pub fn stock_rows(conn: &Connection) -> rusqlite::Result<Vec<StockLine>> {
    let mut stmt = conn
        .prepare_cached("SELECT sale_id, sku, free, held, sold FROM stock ORDER BY sale_id, sku")?;
    stmt.query_map([], |r| {
        Ok(StockLine {
            sale_id: r.get(0)?,
            sku: r.get(1)?,
            units: StockRow {
                free: r.get(2)?,
                held: r.get(3)?,
                sold: r.get(4)?,
            },
        })
    })?
    .collect()
}

// ---- grants ----------------------------------------------------------------------------------

/// Records a grant request before central is asked, so a retry after a crash reuses its id.
pub fn record_grant_request(
    conn: &Connection,
    grant_id: &str,
    sale_id: &str,
    sku: &str,
    requested: u32,
    now: Millis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO grants (grant_id, sale_id, sku, requested, requested_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![grant_id, sale_id, sku, requested, now])?;
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
        "UPDATE stock SET free = free + ?2 \
         WHERE (sale_id, sku) = (SELECT sale_id, sku FROM grants WHERE grant_id = ?1)",
    )?
    .execute(params![grant_id, granted])?;
    if granted > 0 {
        set_meta(conn, "newest_grant", grant_id)?;
    }
    Ok(true)
}

/// The newest grant central answered with units (see `cart_central::Known`): the ones
/// [`granted`] lists, which a restored central is sent again.
pub fn newest_grant(conn: &Connection) -> rusqlite::Result<Option<String>> {
    meta(conn, "newest_grant")
}

/// After a restored central was sent every grant again: the newest it granted again, if any.
pub fn set_newest_grant(conn: &Connection, grant_id: Option<&str>) -> rusqlite::Result<()> {
    match grant_id {
        Some(id) => set_meta(conn, "newest_grant", id),
        None => conn
            .prepare_cached("DELETE FROM meta WHERE key = 'newest_grant'")?
            .execute([])
            .map(drop),
    }
}

/// Forgets a grant request central refused without recording it, so that it is not asked
/// again later, unasked for.
pub fn forget_grant_request(conn: &Connection, grant_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM grants WHERE grant_id = ?1 AND granted IS NULL")?
        .execute([grant_id])
        .map(drop)
}

/// Central, restored from a backup, granted `granted` units for a grant this edge had been
/// granted more by: as many of the difference as are free leave the stock and the grant, so
/// that this edge sells none of the units central may have granted to another since. How many
/// could not leave (held or sold here already): those may be sold twice.
pub fn shrink_grant(conn: &Connection, grant_id: &str, granted: u32) -> rusqlite::Result<u32> {
    let Some((sale_id, sku, had)) = conn
        .prepare_cached(
            "SELECT sale_id, sku, granted FROM grants WHERE grant_id = ?1 AND granted > ?2",
        )?
        .query_row(params![grant_id, granted], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })
        .optional()?
    else {
        return Ok(0);
    };
    let taken = (had - granted).min(free(conn, &sale_id, &sku)?);
    conn.prepare_cached("UPDATE stock SET free = free - ?3 WHERE sale_id = ?1 AND sku = ?2")?
        .execute(params![sale_id, sku, taken])?;
    conn.prepare_cached("UPDATE grants SET granted = ?2 WHERE grant_id = ?1")?
        .execute(params![grant_id, had - taken])?;
    Ok(had - granted - taken)
}

/// Every grant central answered with units, as `(grant id, sale, SKU, units)`.
pub fn granted(conn: &Connection) -> rusqlite::Result<Vec<(String, String, String, u32)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT grant_id, sale_id, sku, granted FROM grants WHERE granted > 0 ORDER BY requested_at",
    )?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect()
}

/// A grant request central has not answered yet, or whose answer was never applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingGrant {
    pub grant_id: String,
    pub sale_id: String,
    pub sku: String,
    pub requested: u32,
}

/// Grant requests recorded at or before `before` and still unanswered.
pub fn pending_grants(conn: &Connection, before: Millis) -> rusqlite::Result<Vec<PendingGrant>> {
    let mut stmt = conn.prepare_cached(
        "SELECT grant_id, sale_id, sku, requested FROM grants \
         WHERE granted IS NULL AND requested_at <= ?1 ORDER BY requested_at",
    )?;
    stmt.query_map([before], |r| {
        Ok(PendingGrant {
            grant_id: r.get(0)?,
            sale_id: r.get(1)?,
            sku: r.get(2)?,
            requested: r.get(3)?,
        })
    })?
    .collect()
}

// ---- returns ---------------------------------------------------------------------------------

/// A return as recorded, before central is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedReturn {
    /// Units taken out of the free count (0: none were free, and nothing was recorded).
    pub quantity: u32,
    /// The newest outbox event written then: central takes the return once it has applied
    /// the outbox up to here (see `cart_central::UnitReturn`).
    pub after_seq: i64,
    /// Whether the outbox was delivered up to there already.
    pub delivered: bool,
}

/// Takes up to `quantity` free units out of stock to give back to central, recorded under
/// `return_id` before central is told.
pub fn record_return(
    conn: &Connection,
    return_id: &str,
    sale_id: &str,
    sku: &str,
    quantity: u32,
    now: Millis,
) -> rusqlite::Result<RecordedReturn> {
    let after_seq = highest_seq(conn)?;
    let recorded = RecordedReturn {
        quantity: quantity.min(free(conn, sale_id, sku)?),
        after_seq,
        delivered: delivered_seq(conn)? >= after_seq,
    };
    if recorded.quantity == 0 {
        return Ok(recorded);
    }
    conn.prepare_cached("UPDATE stock SET free = free - ?3 WHERE sale_id = ?1 AND sku = ?2")?
        .execute(params![sale_id, sku, recorded.quantity])?;
    conn.prepare_cached(
        "INSERT INTO unit_returns (return_id, sale_id, sku, quantity, created_at, after_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        return_id,
        sale_id,
        sku,
        recorded.quantity,
        now,
        after_seq
    ])?;
    Ok(recorded)
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
    pub sale_id: String,
    pub sku: String,
    pub quantity: u32,
    pub after_seq: i64,
}

/// Returns not yet confirmed that are due: recorded at or before `before` (their telling was
/// interrupted), or waiting for outbox events that have been delivered since.
pub fn pending_returns(conn: &Connection, before: Millis) -> rusqlite::Result<Vec<PendingReturn>> {
    let mut stmt = conn.prepare_cached(
        "SELECT return_id, sale_id, sku, quantity, after_seq FROM unit_returns \
         WHERE confirmed_at IS NULL AND (created_at <= ?1 OR after_seq <= ?2) \
         ORDER BY created_at",
    )?;
    stmt.query_map(params![before, delivered_seq(conn)?], |r| {
        Ok(PendingReturn {
            return_id: r.get(0)?,
            sale_id: r.get(1)?,
            sku: r.get(2)?,
            quantity: r.get(3)?,
            after_seq: r.get(4)?,
        })
    })?
    .collect()
}

/// The SKUs with a return central has not taken yet.
pub fn returning_skus(conn: &Connection) -> rusqlite::Result<Vec<SkuKey>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT sale_id, sku FROM unit_returns WHERE confirmed_at IS NULL",
    )?;
    stmt.query_map([], |r| {
        Ok(SkuKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?))
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

/// How far an edge's dealings with central have gone: grant requests and returns ever recorded,
/// the highest outbox sequence number written, and what of each is still on its way. Equal marks
/// read before and after a read of central mean nothing passed between the two in between, so
/// the audit compares books and central as of one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BooksMark {
    pub grants: i64,
    pub grants_open: i64,
    pub returns: i64,
    pub returns_open: i64,
    pub highest_seq: i64,
    pub delivered_seq: i64,
}

impl BooksMark {
    /// Nothing on its way to or from central.
    pub fn settled(&self) -> bool {
        self.grants_open == 0 && self.returns_open == 0 && self.highest_seq == self.delivered_seq
    }
}

pub fn books_mark(conn: &Connection) -> rusqlite::Result<BooksMark> {
    let (grants, grants_open, returns, returns_open) = conn
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM grants), \
                    (SELECT COUNT(*) FROM grants WHERE granted IS NULL), \
                    (SELECT COUNT(*) FROM unit_returns), \
                    (SELECT COUNT(*) FROM unit_returns WHERE confirmed_at IS NULL)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(BooksMark {
        grants,
        grants_open,
        returns,
        returns_open,
        highest_seq: highest_seq(conn)?,
        delivered_seq: delivered_seq(conn)?,
    })
}

/// When the oldest undelivered outbox event was written, if any is.
pub fn oldest_undelivered(conn: &Connection) -> rusqlite::Result<Option<Millis>> {
    conn.prepare_cached("SELECT MIN(created_at) FROM outbox WHERE seq > ?1")?
        .query_row([delivered_seq(conn)?], |r| r.get(0))
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

/// Records that central applied everything up to `seq`. The rows stay for `--outbox-keep`
/// (see [`prune_delivered`]), to be sent again if central is restored from a backup.
pub fn mark_delivered(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    set_meta(conn, "delivered_seq", &seq.to_string())
}

/// Deletes up to `batch` of the oldest delivered events written before `before`; how many.
/// Each call reads at most `batch` rows, so it never holds the writer long.
pub fn prune_delivered(conn: &Connection, before: Millis, batch: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM outbox WHERE seq <= ?1 AND created_at < ?2 \
           AND seq <= (SELECT MIN(seq) FROM outbox) + ?3",
    )?
    .execute(params![delivered_seq(conn)?, before, batch - 1])
}

/// Central has lost this edge's events after `seq` (it was restored from a backup): they are
/// undelivered again, and so are the returns it confirmed, which it may have lost too (sent
/// again, each is taken once). False, changing nothing, if the outbox no longer keeps every
/// event after `seq`.
pub fn redeliver_after(conn: &Connection, seq: i64) -> rusqlite::Result<bool> {
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT MIN(seq) FROM outbox")?
        .query_row([], |r| r.get(0))?;
    let kept = match oldest {
        Some(oldest) => oldest <= seq + 1,
        None => highest_seq(conn)? <= seq,
    };
    if kept {
        set_meta(conn, "delivered_seq", &seq.to_string())?;
        unconfirm_returns(conn)?;
    }
    Ok(kept)
}

/// Every return of units central confirmed, to be confirmed again: a restored central may have
/// lost them (each is taken once).
pub fn unconfirm_returns(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE unit_returns SET confirmed_at = NULL")?
        .execute([])
        .map(drop)
}

pub fn delivered_seq(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(meta(conn, "delivered_seq")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The highest outbox sequence number this folder has ever used (0: none yet).
pub fn highest_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")?
        .query_row([], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// Starts this folder over under a new history, after an operator's take-over wrote the old
/// one off at central: carts, orders, units, grants, returns and outbox are discarded.
pub fn start_over(conn: &Connection, history_id: &str) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DELETE FROM cart_lines; DELETE FROM orders; DELETE FROM carts; DELETE FROM outbox; \
         DELETE FROM grants; DELETE FROM unit_returns; DELETE FROM finished_sales; \
         UPDATE stock SET free = 0, held = 0, sold = 0; \
         DELETE FROM sqlite_sequence WHERE name = 'outbox'; \
         DELETE FROM meta WHERE key IN ('delivered_seq', 'claimed');",
    )?;
    set_meta(conn, "history_id", history_id)
}

/// Events written but not yet applied by central.
pub fn outbox_backlog(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM outbox WHERE seq > ?1")?
        .query_row([delivered_seq(conn)?], |r| r.get(0))
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

    fn fresh() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_writer(dir.path()).expect("open");
        (dir, conn)
    }

    fn seed(conn: &Connection, free: u32, held: u32) {
        conn.execute(
            "INSERT INTO stock (sale_id, sku, free, held) VALUES ('S', 'A', ?1, ?2)",
            [free, held],
        )
        .expect("seed");
    }

    fn units(conn: &Connection) -> StockRow {
        stock_rows(conn).expect("rows")[0].units
    }

    #[test]
    fn reserve_reports_the_free_units_when_short() {
        let (_dir, conn) = fresh();
        seed(&conn, 3, 0);
        assert_eq!(reserve(&conn, "S", "A", 2).expect("sql"), Ok(()));
        assert_eq!(reserve(&conn, "S", "A", 2).expect("sql"), Err(1));
        sell(&conn, "S", "A", 1).expect("sell");
        release(&conn, "S", "A", 1).expect("release");
        assert!(
            release(&conn, "S", "A", 1).is_err(),
            "released more than held"
        );
        assert!(release(&conn, "T", "A", 1).is_err(), "another sale's SKU");
        assert_eq!(
            units(&conn),
            StockRow {
                free: 2,
                held: 0,
                sold: 1
            }
        );
    }

    #[test]
    fn a_return_takes_only_free_units_and_is_confirmed_once() {
        let (_dir, conn) = fresh();
        seed(&conn, 3, 2);
        assert_eq!(
            record_return(&conn, "r1", "S", "A", 5, 0)
                .expect("return")
                .quantity,
            3
        );
        assert_eq!(
            record_return(&conn, "r2", "S", "A", 1, 0)
                .expect("return")
                .quantity,
            0
        );
        assert_eq!(in_flight(&conn).expect("in flight"), (0, 1));
        assert_eq!(pending_returns(&conn, 0).expect("pending").len(), 1);
        assert_eq!(
            returning_skus(&conn).expect("returning"),
            [SkuKey::new("S", "A")]
        );
        confirm_return(&conn, "r1", 1).expect("confirm");
        assert!(pending_returns(&conn, 0).expect("pending").is_empty());
        assert!(returning_skus(&conn).expect("returning").is_empty());
        assert_eq!(
            units(&conn),
            StockRow {
                free: 0,
                held: 2,
                sold: 0
            }
        );
    }

    #[test]
    fn a_return_waits_for_the_outbox_events_written_before_it() {
        let (_dir, conn) = fresh();
        seed(&conn, 5, 0);
        append_outbox(&conn, 0, "{}").expect("event");
        append_outbox(&conn, 0, "{}").expect("event");
        mark_delivered(&conn, 1).expect("delivered");
        let recorded = record_return(&conn, "r1", "S", "A", 2, 100).expect("return");
        assert_eq!(
            recorded,
            RecordedReturn {
                quantity: 2,
                after_seq: 2,
                delivered: false
            }
        );
        // Not due while event 2 is undelivered, unless its telling is long overdue.
        assert!(pending_returns(&conn, 99).expect("pending").is_empty());
        assert_eq!(pending_returns(&conn, 100).expect("pending").len(), 1);
        mark_delivered(&conn, 2).expect("delivered");
        let due = pending_returns(&conn, 99).expect("pending");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].after_seq, 2);
        let after = record_return(&conn, "r2", "S", "A", 1, 100).expect("return");
        assert!(after.delivered);
    }

    #[test]
    fn cached_statements_are_not_prepared_again() {
        let (_dir, conn) = fresh();
        // A join and an ORDER BY over bound values: both re-prepared on every new binding
        // without the query planner stability guarantee.
        let sql = "SELECT l.sku FROM carts c JOIN cart_lines l ON l.cart_id = c.cart_id \
                   WHERE c.customer_id = ?1 AND l.hold_expires_at > ?2 ORDER BY l.sku";
        for now in 0..3i64 {
            let mut stmt = conn.prepare_cached(sql).expect("prepare");
            let mut rows = stmt.query(params![format!("c-{now}"), now]).expect("query");
            while rows.next().expect("row").is_some() {}
            drop(rows);
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
    }

    #[test]
    fn a_grant_is_applied_once() {
        let (_dir, conn) = fresh();
        add_stock(&conn, "S", "A").expect("stock row");
        record_grant_request(&conn, "g1", "S", "A", 5, 0).expect("record");
        assert_eq!(pending_grants(&conn, 0).expect("pending").len(), 1);
        assert!(apply_grant(&conn, "g1", 4, 1).expect("apply"));
        assert!(!apply_grant(&conn, "g1", 4, 2).expect("apply again"));
        assert_eq!(free(&conn, "S", "A").expect("free"), 4);
        assert!(pending_grants(&conn, 0).expect("pending").is_empty());
    }
}
