//! Hand-offs: the books' side of moving carts from a draining edge to another, exactly once.
//!
//! 1. **Freeze** (the draining edge, one transaction): a batch of customers' carts, with their
//!    lines and orders, leaves the books; their held and sold units leave its stock; the batch is
//!    stored in `handoffs_out` (`sending`) with the outbox's last sequence number, and
//!    `moved_carts` names the receiver. Requests for those carts answer `503` until it is done.
//! 2. **Record** (central, one transaction, after it applied the outbox up to the freeze): the
//!    carts' owner, their holds and orders, their customers' home and the units move, as
//!    central's own holds and orders of those carts count them.
//! 3. **Take** (the receiver, one transaction): the carts enter its books with the holds,
//!    orders and units central recorded (never what the batch says of them), at its catalog's
//!    prices, and `handoffs_in` records the id, so a retry is taken once; central is told it
//!    was taken. A batch central did not record to it is refused, and a peer holding the fleet
//!    secret can at most move carts that exist, between edges, as central records.
//! 4. **Done** (the draining edge): requests for the carts go to the receiver from now on.
//!
//! A crash anywhere leaves a `sending` hand-off, which the draining edge resumes where it was
//! when it runs again; every step is idempotent. Central refusing to record it (the receiver
//! left the fleet meanwhile) puts the carts back (`aborted`).

use std::collections::BTreeMap;

use cart_central::sale::{Catalog, is_plain_id};
use cart_central::{Handoff, MovedUnits, RecordedHandoff};
use cart_rules::{MAX_CART_LINES, MAX_QUANTITY};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::ids;
use crate::store::db;

/// Customers whose carts move in one hand-off, at most.
pub const CUSTOMERS_PER_HANDOFF: u32 = 100;
/// Carts in one hand-off, at most.
const CARTS_PER_HANDOFF: usize = 500;
/// A hand-off's carts, as JSON, at most: well within what a receiver takes (8 MiB), however
/// many carts one customer has.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// A batch of carts on its way from one edge to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub handoff_id: String,
    pub from_edge: String,
    pub carts: Vec<MovingCart>,
}

/// A cart as it moves: everything the books hold of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovingCart {
    pub cart_id: String,
    pub customer_id: String,
    pub token_hash: String,
    pub checked_out: bool,
    pub created_at: Millis,
    pub lines: Vec<MovingLine>,
    pub order: Option<MovingOrder>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovingLine {
    pub sku: String,
    pub sale_id: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub hold_expires_at: Millis,
    pub held: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovingOrder {
    pub order_id: String,
    pub idempotency_key: String,
    pub total_cents: i64,
    pub placed_at: Millis,
}

impl MovingCart {
    /// Units of each SKU this cart holds (open, held lines) and sold (checked out).
    fn units(&self) -> impl Iterator<Item = (&MovingLine, u32, u32)> {
        self.lines.iter().map(|l| {
            let held = if l.held && !self.checked_out {
                l.quantity
            } else {
                0
            };
            let sold = if self.checked_out { l.quantity } else { 0 };
            (l, held, sold)
        })
    }
}

impl Batch {
    /// Units held and sold per SKU, together: what leaves one allotment for the other.
    pub fn units(&self) -> Vec<MovedUnits> {
        let mut per_sku: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for (l, held, sold) in self.carts.iter().flat_map(MovingCart::units) {
            *per_sku.entry((&l.sale_id, &l.sku)).or_default() += held + sold;
        }
        per_sku
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((sale_id, sku), quantity)| MovedUnits {
                sale_id: sale_id.to_owned(),
                sku: sku.to_owned(),
                quantity,
            })
            .collect()
    }

    /// What central records of it.
    pub fn for_central(&self, incarnation: &str, to_edge: &str, frozen_seq: i64) -> Handoff {
        let mut customers: Vec<String> = self.carts.iter().map(|c| c.customer_id.clone()).collect();
        customers.sort();
        customers.dedup();
        Handoff {
            handoff_id: self.handoff_id.clone(),
            from_edge: self.from_edge.clone(),
            incarnation: incarnation.to_owned(),
            to_edge: to_edge.to_owned(),
            frozen_seq,
            carts: self.carts.iter().map(|c| c.cart_id.clone()).collect(),
            customers,
            units: self.units(),
        }
    }
}

/// A hand-off this edge started and has not finished.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub batch: Batch,
    pub to_edge: String,
    pub to_url: String,
    pub frozen_seq: i64,
    /// The batch ends partway through a customer's carts: the rest go to the same receiver.
    pub split: bool,
}

// ---- the draining edge ---------------------------------------------------------------------

/// Takes the carts of up to `customers` customers out of the books for `to_edge`, in one
/// transaction (the caller's). `None` when no cart is left.
pub fn freeze(
    conn: &Connection,
    from_edge: &str,
    to_edge: &str,
    to_url: &str,
    customers: u32,
    now: Millis,
) -> rusqlite::Result<Option<Outgoing>> {
    let who: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT customer_id FROM carts ORDER BY customer_id LIMIT ?1")?
        .query_map([customers], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if who.is_empty() {
        return Ok(None);
    }
    // Whole customers while they fit; a customer with more carts than fit in one batch goes in
    // several, all to the same receiver (`split`).
    let (mut carts, mut bytes, mut split) = (Vec::new(), 0usize, false);
    'customers: for customer in &who {
        let ids: Vec<String> = conn
            .prepare_cached("SELECT cart_id FROM carts WHERE customer_id = ?1 ORDER BY cart_id")?
            .query_map([customer], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (i, cart_id) in ids.iter().enumerate() {
            let cart = load_moving(conn, cart_id)?;
            let size = serde_json::to_vec(&cart).map_or(0, |json| json.len());
            let full = carts.len() >= CARTS_PER_HANDOFF || bytes + size > MAX_BATCH_BYTES;
            if full && !carts.is_empty() {
                split = i > 0;
                break 'customers;
            }
            bytes += size;
            carts.push(cart);
        }
    }
    let batch = Batch {
        handoff_id: ids::new_id("h"),
        from_edge: from_edge.to_owned(),
        carts,
    };
    for cart in &batch.carts {
        for (l, held, sold) in cart.units() {
            let changed = conn
                .prepare_cached(
                    "UPDATE stock SET held = held - ?3, sold = sold - ?4 \
                     WHERE sale_id = ?1 AND sku = ?2 AND held >= ?3 AND sold >= ?4",
                )?
                .execute(params![l.sale_id, l.sku, held, sold])?;
            if changed != 1 {
                // The stock counts fewer units than the carts hold (a host bug): nothing moves,
                // the whole freeze is rolled back, and the audit will say where.
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
        }
        for table in ["cart_lines", "orders", "carts"] {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE cart_id = ?1"))?
                .execute([&cart.cart_id])?;
        }
    }
    let frozen_seq = db::highest_seq(conn)?;
    let json = serde_json::to_string(&batch)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT INTO handoffs_out (handoff_id, to_edge, to_url, carts, frozen_seq, state, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'sending', ?6)",
    )?
    .execute(params![batch.handoff_id, to_edge, to_url, json, frozen_seq, now])?;
    for cart in &batch.carts {
        conn.prepare_cached(
            // A cart that came back since it last left this edge: the new move replaces the old.
            "INSERT OR REPLACE INTO moved_carts (cart_id, handoff_id, edge_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![cart.cart_id, batch.handoff_id, to_edge])?;
    }
    Ok(Some(Outgoing {
        batch,
        to_edge: to_edge.to_owned(),
        to_url: to_url.to_owned(),
        frozen_seq,
        split,
    }))
}

fn load_moving(conn: &Connection, cart_id: &str) -> rusqlite::Result<MovingCart> {
    let (customer_id, token_hash, status, created_at): (String, String, String, Millis) = conn
        .prepare_cached(
            "SELECT customer_id, token_hash, status, created_at FROM carts WHERE cart_id = ?1",
        )?
        .query_row([cart_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let lines = conn
        .prepare_cached(
            "SELECT sku, sale_id, quantity, unit_price_cents, hold_expires_at, held \
             FROM cart_lines WHERE cart_id = ?1 ORDER BY sku",
        )?
        .query_map([cart_id], |r| {
            Ok(MovingLine {
                sku: r.get(0)?,
                sale_id: r.get(1)?,
                quantity: r.get(2)?,
                unit_price_cents: r.get(3)?,
                hold_expires_at: r.get(4)?,
                held: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let order = conn
        .prepare_cached(
            "SELECT order_id, idempotency_key, total_cents, placed_at FROM orders \
             WHERE cart_id = ?1",
        )?
        .query_row([cart_id], |r| {
            Ok(MovingOrder {
                order_id: r.get(0)?,
                idempotency_key: r.get(1)?,
                total_cents: r.get(2)?,
                placed_at: r.get(3)?,
            })
        })
        .optional()?;
    Ok(MovingCart {
        cart_id: cart_id.to_owned(),
        customer_id,
        token_hash,
        checked_out: status == "checked_out",
        created_at,
        lines,
        order,
    })
}

/// Hand-offs started and not finished, oldest first.
pub fn unfinished(conn: &Connection) -> rusqlite::Result<Vec<Outgoing>> {
    let rows: Vec<(String, String, String, i64)> = conn
        .prepare_cached(
            "SELECT to_edge, to_url, carts, frozen_seq FROM handoffs_out \
             WHERE state = 'sending' ORDER BY created_at, handoff_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|(to_edge, to_url, json, frozen_seq)| {
            let batch = serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            Ok(Outgoing {
                batch,
                to_edge,
                to_url,
                frozen_seq,
                split: false,
            })
        })
        .collect()
}

/// The receiver has the carts and central recorded the move.
pub fn finish(conn: &Connection, handoff_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE handoffs_out SET state = 'done' WHERE handoff_id = ?1 AND state = 'sending'",
    )?
    .execute([handoff_id])?;
    Ok(())
}

/// The receiver refused the batch for good: its carts and units go back into the books.
pub fn abort(conn: &Connection, out: &Outgoing) -> rusqlite::Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE handoffs_out SET state = 'aborted' WHERE handoff_id = ?1 AND state = 'sending'",
        )?
        .execute([&out.batch.handoff_id])?;
    if changed == 1 {
        conn.prepare_cached("DELETE FROM moved_carts WHERE handoff_id = ?1")?
            .execute([&out.batch.handoff_id])?;
        insert(conn, &out.batch)?;
    }
    Ok(())
}

/// Whether this edge handed the cart off (or is handing it off).
pub fn is_moved(conn: &Connection, cart_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM moved_carts WHERE cart_id = ?1")?
        .query_row([cart_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Carts this edge handed off: each with the edge that keeps it, or `None` while on its way.
pub fn moved(conn: &Connection) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    conn.prepare_cached(
        "SELECT m.cart_id, m.edge_id, h.state FROM moved_carts m \
         JOIN handoffs_out h ON h.handoff_id = m.handoff_id",
    )?
    .query_map([], |r| {
        let state: String = r.get(2)?;
        Ok((r.get(0)?, (state == "done").then(|| r.get(1)).transpose()?))
    })?
    .collect()
}

// ---- the receiving edge --------------------------------------------------------------------

/// Whether this edge took or refused the hand-off before: `Some(true)` taken.
pub fn answered(conn: &Connection, handoff_id: &str) -> rusqlite::Result<Option<bool>> {
    conn.prepare_cached("SELECT taken FROM handoffs_in WHERE handoff_id = ?1")?
        .query_row([handoff_id], |r| r.get(0))
        .optional()
}

/// Takes a batch into the books, once (the caller's transaction, which keeps a refusal too),
/// as central recorded it: the carts the record names, with the holds and orders central has
/// for them, at the catalog's prices. From the batch come only what central does not keep:
/// each cart's customer, token digest and creation time, its lapsed lines (which hold nothing)
/// and its order's idempotency key. `Ok(Err(why))` when refused, now or before; a batch taken
/// before is taken again as `Ok`.
pub fn take(
    conn: &Connection,
    batch: &Batch,
    record: &RecordedHandoff,
    catalog: &Catalog,
    now: Millis,
) -> rusqlite::Result<Result<(), Refusal>> {
    match answered(conn, &batch.handoff_id)? {
        Some(true) => return Ok(Ok(())),
        Some(false) => {
            return Ok(Err(Refusal::ForGood(
                "this edge refused the hand-off before".into(),
            )));
        }
        None => {}
    }
    if let Err(why) = check(conn, batch, record)? {
        refuse(conn, batch, now)?;
        return Ok(Err(Refusal::ForGood(why)));
    }
    let priced = |sale_id: &str, sku: &str| catalog.entry(sale_id, sku).map(|e| e.price_cents);
    if let Some(h) = record
        .holds
        .iter()
        .find(|h| priced(&h.sale_id, &h.sku).is_none())
    {
        return Ok(Err(Refusal::NotYet(format!(
            "{}/{} is not in this edge's calendar yet",
            h.sale_id, h.sku
        ))));
    }
    insert_recorded(conn, batch, record, &priced)?;
    conn.prepare_cached(
        "INSERT INTO handoffs_in (handoff_id, from_edge, taken, received_at) VALUES (?1, ?2, 1, ?3)",
    )?
    .execute(params![batch.handoff_id, batch.from_edge, now])?;
    Ok(Ok(()))
}

/// Why a batch was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Never: it is not the hand-off central recorded to this edge, or not a sane one.
    ForGood(String),
    /// Not now: this edge cannot take it yet (its calendar lags); the sender asks again.
    NotYet(String),
}

/// Records that this edge will never take the batch; `Ok(false)`: it took it already.
pub fn refuse(conn: &Connection, batch: &Batch, now: Millis) -> rusqlite::Result<bool> {
    if answered(conn, &batch.handoff_id)? == Some(true) {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT OR IGNORE INTO handoffs_in (handoff_id, from_edge, taken, received_at) \
         VALUES (?1, ?2, 0, ?3)",
    )?
    .execute(params![batch.handoff_id, batch.from_edge, now])?;
    Ok(true)
}

/// A batch from a peer is checked like any input: ids, sane numbers, no cart this edge has
/// already, and exactly the carts central recorded, from the edge it recorded.
fn check(
    conn: &Connection,
    batch: &Batch,
    record: &RecordedHandoff,
) -> rusqlite::Result<Result<(), String>> {
    if !ids::is_id(&batch.handoff_id, "h") || !is_plain_id(&batch.from_edge) {
        return Ok(Err("a malformed hand-off id or edge id".into()));
    }
    if batch.from_edge != record.from_edge {
        return Ok(Err(format!(
            "central recorded this hand-off from {}, not {}",
            record.from_edge, batch.from_edge
        )));
    }
    let mut sent: Vec<&str> = batch.carts.iter().map(|c| c.cart_id.as_str()).collect();
    sent.sort_unstable();
    if sent.windows(2).any(|w| w[0] == w[1]) || sent != record.carts {
        return Ok(Err(
            "the batch's carts are not the ones central recorded for this hand-off".into(),
        ));
    }
    for cart in &batch.carts {
        let id = &cart.cart_id;
        if !ids::is_id(id, "c") || !is_plain_id(&cart.customer_id) {
            return Ok(Err(format!("cart {id:?}: a malformed cart or customer id")));
        }
        if cart.token_hash.len() != 64 || !cart.token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(format!("cart {id}: a malformed token digest")));
        }
        let ordered = record.orders.iter().any(|o| &o.cart_id == id);
        if cart.lines.len() > MAX_CART_LINES
            || cart.checked_out != cart.order.is_some()
            || cart.checked_out != ordered
        {
            return Ok(Err(format!(
                "cart {id}: too many lines, or an order that does not fit"
            )));
        }
        if let Some(l) = cart
            .lines
            .iter()
            .find(|l| l.quantity == 0 || l.quantity > MAX_QUANTITY)
        {
            return Ok(Err(format!("cart {id}: {} units of {}", l.quantity, l.sku)));
        }
        if crate::carts::load(conn, id)?.is_some() {
            return Ok(Err(format!("cart {id} is here already")));
        }
    }
    Ok(Ok(()))
}

/// Puts a recorded hand-off's carts into the books: their holds and orders as central has them,
/// held lines at the catalog's price (`priced`), and the units they hold and sold.
fn insert_recorded(
    conn: &Connection,
    batch: &Batch,
    record: &RecordedHandoff,
    priced: &dyn Fn(&str, &str) -> Option<i64>,
) -> rusqlite::Result<()> {
    for cart in &batch.carts {
        conn.prepare_cached("DELETE FROM moved_carts WHERE cart_id = ?1")?
            .execute([&cart.cart_id])?;
        let order = record.orders.iter().find(|o| o.cart_id == cart.cart_id);
        conn.prepare_cached(
            "INSERT INTO carts (cart_id, customer_id, token_hash, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            cart.cart_id,
            cart.customer_id,
            cart.token_hash,
            if order.is_some() {
                "checked_out"
            } else {
                "open"
            },
            cart.created_at
        ])?;
        let mut lines: Vec<(String, String, u32, i64, Millis, bool)> = Vec::new();
        match order {
            Some(o) => {
                for l in &o.lines {
                    lines.push((
                        l.sale_id.clone(),
                        l.sku.clone(),
                        l.quantity,
                        l.unit_price_cents,
                        0,
                        false,
                    ));
                    db::add_stock(conn, &l.sale_id, &l.sku)?;
                    conn.prepare_cached(
                        "UPDATE stock SET sold = sold + ?3 WHERE sale_id = ?1 AND sku = ?2",
                    )?
                    .execute(params![l.sale_id, l.sku, l.quantity])?;
                }
                let key = cart
                    .order
                    .as_ref()
                    .map_or("", |m| m.idempotency_key.as_str());
                conn.prepare_cached(
                    "INSERT INTO orders \
                       (order_id, cart_id, customer_id, idempotency_key, total_cents, placed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    o.order_id,
                    cart.cart_id,
                    cart.customer_id,
                    key,
                    o.total_cents,
                    o.placed_at
                ])?;
            }
            None => {
                for h in record.holds.iter().filter(|h| h.cart_id == cart.cart_id) {
                    let price = priced(&h.sale_id, &h.sku).unwrap_or(0);
                    lines.push((
                        h.sale_id.clone(),
                        h.sku.clone(),
                        h.quantity,
                        price,
                        h.expires_at,
                        true,
                    ));
                    db::add_stock(conn, &h.sale_id, &h.sku)?;
                    conn.prepare_cached(
                        "UPDATE stock SET held = held + ?3 WHERE sale_id = ?1 AND sku = ?2",
                    )?
                    .execute(params![h.sale_id, h.sku, h.quantity])?;
                }
                // Lapsed lines hold nothing: they stay in the cart, marked lapsed.
                for l in cart.lines.iter().filter(|l| !l.held) {
                    if lines.iter().any(|(_, sku, ..)| *sku == l.sku) {
                        continue;
                    }
                    let price = priced(&l.sale_id, &l.sku).unwrap_or(0);
                    lines.push((
                        l.sale_id.clone(),
                        l.sku.clone(),
                        l.quantity,
                        price,
                        l.hold_expires_at,
                        false,
                    ));
                }
            }
        }
        for (sale_id, sku, quantity, price, expires, held) in lines {
            conn.prepare_cached(
                "INSERT INTO cart_lines \
                   (cart_id, sku, sale_id, quantity, unit_price_cents, hold_expires_at, held) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                cart.cart_id,
                sku,
                sale_id,
                quantity,
                price,
                expires,
                held
            ])?;
        }
    }
    Ok(())
}

/// Puts a batch's carts, lines, orders and units back into the books of the edge that froze
/// them (a hand-off central refused to record).
fn insert(conn: &Connection, batch: &Batch) -> rusqlite::Result<()> {
    for cart in &batch.carts {
        // A cart that comes back to an edge it once left is this edge's again.
        conn.prepare_cached("DELETE FROM moved_carts WHERE cart_id = ?1")?
            .execute([&cart.cart_id])?;
        conn.prepare_cached(
            "INSERT INTO carts (cart_id, customer_id, token_hash, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            cart.cart_id,
            cart.customer_id,
            cart.token_hash,
            if cart.checked_out {
                "checked_out"
            } else {
                "open"
            },
            cart.created_at
        ])?;
        for (l, held, sold) in cart.units() {
            conn.prepare_cached(
                "INSERT INTO cart_lines \
                   (cart_id, sku, sale_id, quantity, unit_price_cents, hold_expires_at, held) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                cart.cart_id,
                l.sku,
                l.sale_id,
                l.quantity,
                l.unit_price_cents,
                l.hold_expires_at,
                held > 0
            ])?;
            db::add_stock(conn, &l.sale_id, &l.sku)?;
            conn.prepare_cached(
                "UPDATE stock SET held = held + ?3, sold = sold + ?4 WHERE sale_id = ?1 AND sku = ?2",
            )?
            .execute(params![l.sale_id, l.sku, held, sold])?;
        }
        if let Some(o) = &cart.order {
            conn.prepare_cached(
                "INSERT INTO orders \
                   (order_id, cart_id, customer_id, idempotency_key, total_cents, placed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                o.order_id,
                cart.cart_id,
                cart.customer_id,
                o.idempotency_key,
                o.total_cents,
                o.placed_at
            ])?;
        }
    }
    Ok(())
}

/// Hand-offs this edge took that central has not been seen to record.
pub fn unrecorded(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT handoff_id FROM handoffs_in WHERE taken = 1 AND recorded = 0")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Central has recorded a hand-off this edge took.
pub fn recorded(conn: &Connection, handoff_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE handoffs_in SET recorded = 1 WHERE handoff_id = ?1")?
        .execute([handoff_id])?;
    Ok(())
}

/// Carts this edge keeps that another edge made (taken in hand-offs).
pub fn adopted(conn: &Connection, own_tag: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT cart_id FROM carts WHERE substr(cart_id, 3, 8) != ?1")?
        .query_map([own_tag], |r| r.get(0))?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = db::open_writer(dir.path()).expect("open");
        (dir, conn)
    }

    fn seed(conn: &Connection) {
        conn.execute_batch(
            "INSERT INTO stock (sale_id, sku, free, held, sold) VALUES ('s', 'A', 5, 3, 2);
             INSERT INTO carts VALUES ('c_1', 'ann', 'h1', 'open', 1);
             INSERT INTO cart_lines VALUES ('c_1', 'A', 's', 3, 100, 9999, 1);
             INSERT INTO carts VALUES ('c_2', 'ann', 'h2', 'checked_out', 1);
             INSERT INTO cart_lines VALUES ('c_2', 'A', 's', 2, 100, 9999, 0);
             INSERT INTO orders VALUES ('o_2', 'c_2', 'ann', 'key', 200, 5);
             INSERT INTO carts VALUES ('c_3', 'bob', 'h3', 'open', 1);",
        )
        .expect("seed");
    }

    fn stock(conn: &Connection) -> (u32, u32, u32) {
        conn.query_row("SELECT free, held, sold FROM stock", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("stock")
    }

    #[test]
    fn a_customer_with_more_carts_than_a_batch_holds_goes_in_several_to_one_receiver() {
        let (_dir, conn) = books();
        conn.execute_batch(
            "INSERT INTO stock (sale_id, sku, free, held, sold) VALUES ('s', 'A', 0, 0, 600)",
        )
        .expect("stock");
        for i in 0..600 {
            conn.execute_batch(&format!(
                "INSERT INTO carts VALUES ('c_{i:04}', 'whale', 'h', 'checked_out', 1);
                 INSERT INTO cart_lines VALUES ('c_{i:04}', 'A', 's', 1, 100, 0, 0);
                 INSERT INTO orders VALUES ('o_{i:04}', 'c_{i:04}', 'whale', 'k{i}', 100, 5);"
            ))
            .expect("seed");
        }
        let first = freeze(&conn, "e1", "e2", "http://e2", 100, 7)
            .expect("freeze")
            .expect("a batch");
        assert_eq!(first.batch.carts.len(), CARTS_PER_HANDOFF);
        assert!(first.split, "the whale's carts did not all fit");
        let json = serde_json::to_vec(&first.batch).expect("JSON");
        assert!(json.len() <= MAX_BATCH_BYTES, "{} bytes", json.len());
        let rest = freeze(&conn, "e1", "e2", "http://e2", 100, 7)
            .expect("freeze")
            .expect("the rest");
        assert_eq!(rest.batch.carts.len(), 100);
        assert!(!rest.split);
        assert!(
            freeze(&conn, "e1", "e2", "http://e2", 100, 7)
                .expect("freeze")
                .is_none()
        );
    }

    #[test]
    fn a_frozen_batch_takes_whole_customers_and_their_units_and_an_abort_puts_them_back() {
        let (_dir, conn) = books();
        seed(&conn);
        let out = freeze(&conn, "e1", "e2", "http://e2", 1, 7)
            .expect("freeze")
            .expect("a batch");
        let ids: Vec<&str> = out.batch.carts.iter().map(|c| c.cart_id.as_str()).collect();
        assert_eq!(ids, ["c_1", "c_2"], "both of ann's carts, none of bob's");
        assert_eq!(
            stock(&conn),
            (5, 0, 0),
            "held and sold units left with the carts"
        );
        assert_eq!(
            out.batch.units(),
            [MovedUnits {
                sale_id: "s".into(),
                sku: "A".into(),
                quantity: 5
            }]
        );
        assert_eq!(moved(&conn).expect("moved").len(), 2);
        assert_eq!(unfinished(&conn).expect("unfinished")[0].batch, out.batch);
        abort(&conn, &out).expect("abort");
        assert_eq!(stock(&conn), (5, 3, 2));
        assert!(moved(&conn).expect("moved").is_empty());
        assert!(unfinished(&conn).expect("unfinished").is_empty());
        assert_eq!(crate::carts::orders(&conn).expect("orders").len(), 1);
    }
}
