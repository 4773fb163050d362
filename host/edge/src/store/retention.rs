//! Retention: an edge forgets a sale `--retain-days` after dropping it from its calendar (see
//! [`crate::calendar::drop_finished`]), once central has every event the edge wrote until then.
//! Its carts, lines and orders go a batch at a time, each batch one short job on the writer, so
//! no request waits behind a long delete; then its stock, grants and returns. A cart with a line
//! of a sale still kept stays whole until that sale goes too: an edge never keeps half a cart.
//! Freed pages go back to the file system (the database runs in incremental auto-vacuum).

use rusqlite::{Connection, params};

use crate::clock::Millis;
use crate::store::db;

/// Carts deleted per batch.
pub const BATCH: usize = 200;

/// Records, in the drop's transaction, that this edge dropped `sale_id` at `now`.
pub fn finished(conn: &Connection, sale_id: &str, now: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO finished_sales (sale_id, dropped_at, outbox_seq) VALUES (?1, ?2, ?3) \
         ON CONFLICT (sale_id) DO NOTHING",
    )?
    .execute(params![sale_id, now, db::highest_seq(conn)?])?;
    Ok(())
}

/// Whether a sale is due to be deleted, or an empty cart made before `dropped_by`: one cheap
/// read, so that the writer is asked only when there is work.
pub fn any_due(conn: &Connection, dropped_by: Millis) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM finished_sales \
                        WHERE pruned_at IS NULL AND dropped_at <= ?1 AND outbox_seq <= ?2 \
                          AND sale_id NOT IN (SELECT sale_id FROM sales)) \
             OR EXISTS (SELECT 1 FROM carts c WHERE c.created_at <= ?1 \
                        AND NOT EXISTS (SELECT 1 FROM cart_lines l WHERE l.cart_id = c.cart_id))",
    )?
    .query_row(params![dropped_by, db::delivered_seq(conn)?], |r| r.get(0))
}

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Carts deleted, with their lines and orders.
    pub carts: usize,
    /// Sales whose last cart went in this batch.
    pub sales: Vec<String>,
}

/// Deletes up to [`BATCH`] carts of the sales due: dropped at or before `dropped_by`, with every
/// event written until their drop delivered, and not back in the calendar since. Sales with no
/// cart left are finished off. Empty carts made before `dropped_by` go too: they belong to no
/// sale.
pub fn prune_batch(conn: &Connection, dropped_by: Millis, now: Millis) -> rusqlite::Result<Pruned> {
    conn.prepare_cached(
        "CREATE TEMP TABLE IF NOT EXISTS due_sales (sale_id TEXT PRIMARY KEY) WITHOUT ROWID",
    )?
    .execute([])?;
    conn.prepare_cached("DELETE FROM temp.due_sales")?
        .execute([])?;
    conn.prepare_cached(
        "INSERT INTO temp.due_sales SELECT sale_id FROM finished_sales \
         WHERE pruned_at IS NULL AND dropped_at <= ?1 AND outbox_seq <= ?2 \
           AND sale_id NOT IN (SELECT sale_id FROM sales)",
    )?
    .execute(params![dropped_by, db::delivered_seq(conn)?])?;
    conn.prepare_cached(
        "UPDATE finished_sales SET pruning_since = ?1 \
         WHERE pruning_since IS NULL AND sale_id IN (SELECT sale_id FROM temp.due_sales)",
    )?
    .execute([now])?;
    let limit = i64::try_from(BATCH).unwrap_or(i64::MAX);
    let mut carts: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT l.cart_id FROM cart_lines l \
             WHERE l.sale_id IN (SELECT sale_id FROM temp.due_sales) \
               AND NOT EXISTS (SELECT 1 FROM cart_lines o WHERE o.cart_id = l.cart_id \
                 AND o.sale_id NOT IN (SELECT sale_id FROM temp.due_sales)) \
             LIMIT ?1",
        )?
        .query_map([limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let room = limit - i64::try_from(carts.len()).unwrap_or(limit);
    carts.extend(
        conn.prepare_cached(
            "SELECT c.cart_id FROM carts c WHERE c.created_at <= ?1 \
               AND NOT EXISTS (SELECT 1 FROM cart_lines l WHERE l.cart_id = c.cart_id) \
             LIMIT ?2",
        )?
        .query_map(params![dropped_by, room], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?,
    );
    for cart_id in &carts {
        for sql in [
            "DELETE FROM orders WHERE cart_id = ?1",
            "DELETE FROM cart_lines WHERE cart_id = ?1",
            "DELETE FROM carts WHERE cart_id = ?1",
        ] {
            conn.prepare_cached(sql)?.execute([cart_id])?;
        }
    }
    let sales = finish_sales(conn, now)?;
    Ok(Pruned {
        carts: carts.len(),
        sales,
    })
}

/// The due sales no cart line is left of: their stock, grants and returns go, and what
/// customers bought of them in retired histories; the sales are marked pruned.
fn finish_sales(conn: &Connection, now: Millis) -> rusqlite::Result<Vec<String>> {
    let done: Vec<String> = conn
        .prepare_cached(
            "SELECT d.sale_id FROM temp.due_sales d \
             WHERE NOT EXISTS (SELECT 1 FROM cart_lines l WHERE l.sale_id = d.sale_id)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sale_id in &done {
        for sql in [
            "DELETE FROM stock WHERE sale_id = ?1",
            "DELETE FROM grants WHERE sale_id = ?1",
            "DELETE FROM unit_returns WHERE sale_id = ?1",
            "DELETE FROM retired_units WHERE sale_id = ?1",
        ] {
            conn.prepare_cached(sql)?.execute([sale_id])?;
        }
        conn.prepare_cached("UPDATE finished_sales SET pruned_at = ?2 WHERE sale_id = ?1")?
            .execute(params![sale_id, now])?;
    }
    Ok(done)
}

/// Hand-off records older than `before` that nothing waits on: the carts this edge handed off
/// are then found through central, and a hand-off offered again that long after is refused.
pub fn prune_handoffs(conn: &Connection, before: Millis) -> rusqlite::Result<usize> {
    let moved = conn
        .prepare_cached(
            "DELETE FROM moved_carts WHERE handoff_id IN (SELECT handoff_id FROM handoffs_out \
               WHERE state <> 'sending' AND created_at <= ?1)",
        )?
        .execute([before])?;
    let out = conn
        .prepare_cached("DELETE FROM handoffs_out WHERE state <> 'sending' AND created_at <= ?1")?
        .execute([before])?;
    let taken = conn
        .prepare_cached("DELETE FROM handoffs_in WHERE received_at <= ?1")?
        .execute([before])?;
    Ok(moved + out + taken)
}

/// Sales this edge no longer keeps whole (their pruning has begun): the audit leaves them out
/// of its books.
pub fn pruned_sales(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT sale_id FROM finished_sales WHERE pruning_since IS NOT NULL ORDER BY sale_id",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Gives up to `pages` free pages back to the file system; how many the file still has free.
pub fn give_back_pages(conn: &Connection, pages: u32) -> rusqlite::Result<u32> {
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    conn.pragma_query_value(None, "freelist_count", |r| r.get(0))
}

/// The database's size in pages, and how many of them are free.
pub fn pages(conn: &Connection) -> rusqlite::Result<(u32, u32)> {
    let count = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok((count, free))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sale `old` ended and was dropped at 1000 with events up to 3 written; `new` runs on.
    /// Cart `a` is all `old`'s (ordered), `b` has a line of each, `e` is empty.
    fn books() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = db::open_writer(dir.path()).expect("open");
        conn.execute_batch(
            "INSERT INTO stock (sale_id, sku, free, held, sold) VALUES ('old', 'A', 0, 0, 2);
             INSERT INTO stock (sale_id, sku, free, held, sold) VALUES ('new', 'B', 9, 1, 0);
             INSERT INTO grants VALUES ('g1', 'old', 'A', 2, 2, 1, 1);
             INSERT INTO carts VALUES ('a', 'ann', 'h', 'checked_out', 1);
             INSERT INTO cart_lines VALUES ('a', 'A', 'old', 1, 100, 0, 0);
             INSERT INTO orders VALUES ('o_a', 'a', 'ann', 'k', 100, 5);
             INSERT INTO carts VALUES ('b', 'bob', 'h', 'open', 1);
             INSERT INTO cart_lines VALUES ('b', 'A', 'old', 1, 100, 0, 0);
             INSERT INTO cart_lines VALUES ('b', 'B', 'new', 1, 100, 9999, 1);
             INSERT INTO carts VALUES ('e', 'eve', 'h', 'open', 1);
             INSERT INTO finished_sales (sale_id, dropped_at, outbox_seq) VALUES ('old', 1000, 3);",
        )
        .expect("seed");
        (dir, conn)
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    fn carts(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT cart_id FROM carts ORDER BY cart_id")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("carts")
    }

    #[test]
    fn a_sale_waits_for_its_retention_and_for_central_to_have_its_events() {
        let (_dir, conn) = books();
        db::mark_delivered(&conn, 2).expect("mark");
        // Past its retention, but central lacks event 3: only the empty cart goes.
        assert!(any_due(&conn, 1000).expect("due"));
        let pruned = prune_batch(&conn, 1000, 2000).expect("prune");
        assert_eq!(pruned.carts, 1);
        assert_eq!(carts(&conn), ["a", "b"]);
        assert!(pruned_sales(&conn).expect("pruned").is_empty());
        db::mark_delivered(&conn, 3).expect("mark");
        // Delivered, but not yet past its retention.
        assert!(!any_due(&conn, 999).expect("due"));
        assert_eq!(prune_batch(&conn, 999, 2000).expect("prune").carts, 0);
        assert_eq!(carts(&conn), ["a", "b"]);
    }

    #[test]
    fn a_sale_back_in_the_calendar_is_kept() {
        let (_dir, conn) = books();
        db::mark_delivered(&conn, 3).expect("mark");
        conn.execute_batch("INSERT INTO sales VALUES ('old', 0, 500, 600000)")
            .expect("the sale again");
        prune_batch(&conn, 1000, 2000).expect("prune");
        assert_eq!(carts(&conn), ["a", "b"], "only the empty cart went");
        assert!(pruned_sales(&conn).expect("pruned").is_empty());
    }

    #[test]
    fn a_cart_with_a_line_of_a_kept_sale_stays_whole() {
        let (_dir, conn) = books();
        db::mark_delivered(&conn, 3).expect("mark");
        let pruned = prune_batch(&conn, 1000, 2000).expect("prune");
        assert_eq!(pruned.carts, 2, "the old sale's cart and the empty one");
        assert_eq!(carts(&conn), ["b"]);
        let lines = count(&conn, "SELECT COUNT(*) FROM cart_lines WHERE cart_id = 'b'");
        assert_eq!(lines, 2, "never half a cart");
        let orders = count(&conn, "SELECT COUNT(*) FROM orders");
        assert_eq!(orders, 0);
        // Pruning has begun (the audit leaves the sale out), but a line of it is left.
        assert_eq!(pruned_sales(&conn).expect("pruned"), ["old"]);
        assert!(pruned.sales.is_empty());
        let stock = count(&conn, "SELECT COUNT(*) FROM stock WHERE sale_id = 'old'");
        assert_eq!(stock, 1);

        // The new sale is dropped and due in its turn: the cart goes whole, both sales finish.
        finished(&conn, "new", 1500).expect("finished");
        let pruned = prune_batch(&conn, 1500, 3000).expect("prune");
        assert_eq!(
            (pruned.carts, pruned.sales),
            (1, vec!["new".into(), "old".into()])
        );
        assert!(carts(&conn).is_empty());
        let left = count(
            &conn,
            "SELECT (SELECT COUNT(*) FROM stock) + (SELECT COUNT(*) FROM grants)",
        );
        assert_eq!(left, 0);
        assert!(!any_due(&conn, 1500).expect("due"));
    }
}
