//! The cart store: carts, lines and orders in the edge's SQLite, and the three things done to
//! them. Each operation loads what the rules need in the caller's transaction, asks the rules,
//! checks the decision, and applies it; the stock moves and the outbox event are derived from
//! the decision here, never taken from the guest. The cart's view is defined here, once, for
//! answers from the writer and from read connections alike.

use cart_rules::{
    CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, MAX_CART_LINES, SetRequest,
};
use rusqlite::{Connection, params};

use crate::clock::Millis;
use crate::ids;
use crate::invariants;
use crate::rules::{CartRules, GuestFault};
use crate::store::db;
use cart_central::RetiredUnits;
pub use cart_central::events::Order;
use cart_central::events::{EventLine, OutboxEvent};
use cart_central::sale::Catalog;

/// A cart as stored.
#[derive(Clone, Debug)]
pub struct StoredCart {
    pub cart_id: String,
    pub customer_id: String,
    token_hash: String,
    pub status: CartStatus,
    pub lines: Vec<StoredLine>,
}

/// A line and the sale its SKU belongs to.
#[derive(Clone, Debug)]
pub struct StoredLine {
    pub sale_id: String,
    pub line: Line,
}

/// What a shopper sees of a cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CartView {
    pub cart_id: String,
    pub customer_id: String,
    pub status: CartStatus,
    pub lines: Vec<Line>,
    pub total_cents: i64,
}

/// Why a cart operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum CartFailure {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("missing or wrong cart token")]
    Unauthorized,
    #[error("refused by the cart rules: {0:?}")]
    Refused(CartError),
    #[error("a cart holds at most {MAX_CART_LINES} lines")]
    TooManyLines,
    #[error("a customer may have at most {MAX_OPEN_CARTS} open carts")]
    TooManyCarts,
    #[error("the cart rules failed: {0}")]
    Fault(#[from] GuestFault),
    #[error("edge database: {0}")]
    Storage(#[from] rusqlite::Error),
}

/// A decision the books cannot take is the module's fault, like a trap.
fn bad_decision(what: String) -> CartFailure {
    CartFailure::Fault(GuestFault(format!("the rules decided {what}")))
}

impl StoredCart {
    /// Checks the shopper's token (as its digest), in time that says nothing of the token.
    pub fn authorize(&self, token_hash: &str) -> Result<(), CartFailure> {
        if ids::same_secret(token_hash.as_bytes(), &self.token_hash) {
            Ok(())
        } else {
            Err(CartFailure::Unauthorized)
        }
    }

    /// The lines as an order's and the outbox's events name them.
    fn event_lines(&self) -> Vec<EventLine> {
        self.lines
            .iter()
            .map(|l| EventLine {
                sale_id: l.sale_id.clone(),
                sku: l.line.sku.clone(),
                quantity: l.line.quantity,
                unit_price_cents: l.line.unit_price_cents,
            })
            .collect()
    }

    /// The shopper's view: every line, and their total.
    pub fn view(&self) -> CartView {
        let lines: Vec<Line> = self.lines.iter().map(|l| l.line.clone()).collect();
        CartView {
            cart_id: self.cart_id.clone(),
            customer_id: self.customer_id.clone(),
            status: self.status,
            total_cents: total(lines.iter().map(|l| (l.quantity, l.unit_price_cents))),
            lines,
        }
    }
}

/// `Σ quantity × price`. The sale file bounds prices, the rules quantities and the store the
/// lines per cart, so this never overflows; if it ever did, it saturates rather than wraps.
fn total(lines: impl Iterator<Item = (u32, i64)>) -> i64 {
    lines.fold(0i64, |sum, (q, p)| {
        sum.saturating_add(i64::from(q).saturating_mul(p))
    })
}

/// Loads a cart with its lines, in SKU order.
pub fn load(conn: &Connection, cart_id: &str) -> rusqlite::Result<Option<StoredCart>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.customer_id, c.token_hash, c.status, l.sku, l.sale_id, l.quantity, \
                l.unit_price_cents, l.hold_expires_at, l.held \
         FROM carts c LEFT JOIN cart_lines l ON l.cart_id = c.cart_id \
         WHERE c.cart_id = ?1 ORDER BY l.sku",
    )?;
    let mut rows = stmt.query([cart_id])?;
    let mut cart: Option<StoredCart> = None;
    while let Some(r) = rows.next()? {
        let cart = match &mut cart {
            Some(c) => c,
            None => cart.insert(StoredCart {
                cart_id: cart_id.to_owned(),
                customer_id: r.get(0)?,
                token_hash: r.get(1)?,
                status: if r.get_ref(2)?.as_str()? == "open" {
                    CartStatus::Open
                } else {
                    CartStatus::CheckedOut
                },
                lines: Vec::new(),
            }),
        };
        if let Some(sku) = r.get::<_, Option<String>>(3)? {
            cart.lines.push(StoredLine {
                sale_id: r.get(4)?,
                line: Line {
                    sku,
                    quantity: r.get(5)?,
                    unit_price_cents: r.get(6)?,
                    hold_expires_at: r.get(7)?,
                    held: r.get(8)?,
                },
            });
        }
    }
    Ok(cart)
}

/// Loads a cart the shopper may see.
pub fn load_authorized(
    conn: &Connection,
    cart_id: &str,
    token_hash: &str,
) -> Result<StoredCart, CartFailure> {
    let cart = load(conn, cart_id)?.ok_or(CartFailure::NotFound("cart"))?;
    cart.authorize(token_hash)?;
    Ok(cart)
}

/// Open carts one customer may have on an edge at once: enough for any shopper, few enough
/// that a customer's carts cost every update of theirs, and a hand-off, little.
pub const MAX_OPEN_CARTS: u32 = 20;

/// Creates an empty open cart, unless the customer has [`MAX_OPEN_CARTS`] open already.
pub fn create(
    conn: &Connection,
    cart_id: &str,
    customer_id: &str,
    token_hash: &str,
    now: Millis,
) -> Result<CartView, CartFailure> {
    let open: u32 = conn
        .prepare_cached("SELECT COUNT(*) FROM carts WHERE customer_id = ?1 AND status = 'open'")?
        .query_row([customer_id], |r| r.get(0))?;
    if open >= MAX_OPEN_CARTS {
        return Err(CartFailure::TooManyCarts);
    }
    conn.prepare_cached(
        "INSERT INTO carts (cart_id, customer_id, token_hash, status, created_at) \
         VALUES (?1, ?2, ?3, 'open', ?4)",
    )?
    .execute(params![cart_id, customer_id, token_hash, now])?;
    Ok(CartView {
        cart_id: cart_id.to_owned(),
        customer_id: customer_id.to_owned(),
        status: CartStatus::Open,
        lines: Vec::new(),
        total_cents: 0,
    })
}

/// What a shopper asks of a cart line.
#[derive(Clone, Debug)]
pub struct SetQuantity {
    pub cart_id: String,
    pub token_hash: String,
    pub sku: String,
    pub quantity: u32,
}

/// A line set: the cart as it is now, and how many units the change reserved.
#[derive(Debug)]
pub struct Set {
    pub view: CartView,
    pub reserved_more: u32,
}

/// Sets the quantity of a SKU in a cart, as the rules decide.
pub fn set_quantity(
    conn: &Connection,
    rules: &dyn CartRules,
    catalog: &Catalog,
    now: Millis,
    ask: &SetQuantity,
) -> Result<Set, CartFailure> {
    let mut cart = load_authorized(conn, &ask.cart_id, &ask.token_hash)?;
    let entry = catalog
        .sku(&ask.sku, now)
        .ok_or(CartFailure::NotFound("SKU"))?;
    // Whatever the rules say: nothing is held or changed once the sale has ended.
    if now >= entry.ends_at {
        return Err(CartFailure::Refused(CartError::SaleEnded(entry.ends_at)));
    }
    let at = cart.lines.iter().position(|l| l.line.sku == ask.sku);
    if at.is_none() && ask.quantity > 0 && cart.lines.len() >= MAX_CART_LINES {
        return Err(CartFailure::TooManyLines);
    }
    let current = at.map(|i| &cart.lines[i].line);
    let free = db::free(conn, &entry.sale_id, &entry.sku)?;
    let elsewhere = customer_elsewhere(conn, &cart, &entry.sale_id, &entry.sku, now)?;
    let info = entry.info();
    let decided = rules
        .set_quantity(&SetRequest {
            now,
            status: cart.status,
            sku: &info,
            line: current,
            quantity: ask.quantity,
            free,
            customer_elsewhere: elsewhere,
        })?
        .map_err(|refusal| {
            // What a shopper is told comes from the rules, but only what the books can back.
            let could = u64::from(free) + u64::from(current.map_or(0, Line::reserved));
            match refusal {
                CartError::SoldOut(n) if u64::from(n) > could => {
                    bad_decision(format!("sold out with {n} available of {could}"))
                }
                CartError::HoldExpired(_) => bad_decision("hold_expired for a change".into()),
                refusal => CartFailure::Refused(refusal),
            }
        })?;

    if let Some(l) = decided
        .as_ref()
        .filter(|l| !invariants::line_is_sane(l, &ask.sku))
    {
        return Err(bad_decision(format!("an impossible line {l:?}")));
    }
    // Whatever the rules say: a checked-out cart's lines are its order's.
    if cart.status == CartStatus::CheckedOut && decided.as_ref() != current {
        return Err(bad_decision("a change to a checked-out cart".into()));
    }
    let before = current.map_or(0, Line::reserved);
    let after = decided.as_ref().map_or(0, Line::reserved);
    if after > before {
        let more = after - before;
        if db::reserve(conn, &entry.sale_id, &entry.sku, more)?.is_err() {
            return Err(bad_decision(format!(
                "to hold {more} more units of {} with {free} free",
                ask.sku
            )));
        }
    } else if before > after {
        db::release(conn, &entry.sale_id, &entry.sku, before - after)?;
    }
    match &decided {
        Some(l) => {
            conn.prepare_cached(
                "INSERT INTO cart_lines \
                   (cart_id, sku, sale_id, quantity, unit_price_cents, hold_expires_at, held) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (cart_id, sku) DO UPDATE SET sale_id = excluded.sale_id, \
                   quantity = excluded.quantity, unit_price_cents = excluded.unit_price_cents, \
                   hold_expires_at = excluded.hold_expires_at, held = excluded.held",
            )?
            .execute(params![
                ask.cart_id,
                l.sku,
                entry.sale_id,
                l.quantity,
                l.unit_price_cents,
                l.hold_expires_at,
                l.held
            ])?;
        }
        None if at.is_some() => {
            conn.prepare_cached("DELETE FROM cart_lines WHERE cart_id = ?1 AND sku = ?2")?
                .execute(params![ask.cart_id, ask.sku])?;
        }
        None => {}
    }
    // Central hears of every change to what the line holds, and of every new expiry.
    let expires = |l: Option<&Line>| l.filter(|l| l.held).map_or(0, |l| l.hold_expires_at);
    if before != after || expires(current) != expires(decided.as_ref()) {
        emit(
            conn,
            now,
            &OutboxEvent::HoldChanged {
                cart_id: cart.cart_id.clone(),
                customer_id: cart.customer_id.clone(),
                sale_id: entry.sale_id.clone(),
                sku: ask.sku.clone(),
                quantity: after,
                expires_at: expires(decided.as_ref()),
            },
        )?;
    }
    let stored = decided.map(|line| StoredLine {
        sale_id: entry.sale_id.clone(),
        line,
    });
    match (at, stored) {
        (Some(i), Some(l)) => cart.lines[i] = l,
        (Some(i), None) => {
            cart.lines.remove(i);
        }
        (None, Some(l)) => {
            cart.lines.push(l);
            cart.lines.sort_by(|a, b| a.line.sku.cmp(&b.line.sku));
        }
        (None, None) => {}
    }
    Ok(Set {
        view: cart.view(),
        reserved_more: after.saturating_sub(before),
    })
}

/// Units of a SKU the customer holds in their other open carts or bought, on this edge (and in
/// its histories a take-over retired).
/// What a customer holds of a SKU in their other carts and has had retired. `CROSS JOIN` keeps
/// SQLite's join order: the customer's few carts, then each one's line by its key. Left to
/// choose, the planner walks every line of the sale (`cart_lines_sale`) and looks each cart up,
/// a millisecond an update with 2,000 carts open, and more as a sale fills.
const CUSTOMER_ELSEWHERE: &str = "SELECT (SELECT COALESCE(SUM(l.quantity), 0) FROM carts c \
     CROSS JOIN cart_lines l ON l.cart_id = c.cart_id \
     WHERE c.customer_id = ?1 AND l.sale_id = ?2 AND l.sku = ?3 AND c.cart_id <> ?4 \
     AND (c.status = 'checked_out' OR (l.held = 1 AND l.hold_expires_at > ?5))) \
     + COALESCE((SELECT units FROM retired_units \
         WHERE customer_id = ?1 AND sale_id = ?2 AND sku = ?3), 0)";

fn customer_elsewhere(
    conn: &Connection,
    cart: &StoredCart,
    sale_id: &str,
    sku: &str,
    now: Millis,
) -> rusqlite::Result<u32> {
    conn.prepare_cached(CUSTOMER_ELSEWHERE)?
        .query_row(
            params![cart.customer_id, sale_id, sku, cart.cart_id, now],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Checks a cart out under an idempotency key: the order, and whether it was placed before.
pub fn checkout(
    conn: &Connection,
    rules: &dyn CartRules,
    catalog: &Catalog,
    now: Millis,
    cart_id: &str,
    token_hash: &str,
    idempotency_key: &str,
) -> Result<(Order, bool), CartFailure> {
    let cart = load_authorized(conn, cart_id, token_hash)?;
    let placed = match cart.status {
        CartStatus::CheckedOut => Some(load_order(conn, &cart)?),
        CartStatus::Open => None,
    };
    // Whatever the rules say: no order for a line of a sale that has ended (the sweep takes
    // such lines out of the cart within a second; the rest of it then checks out).
    if placed.is_none()
        && let Some(ended) = cart.lines.iter().find_map(|l| {
            catalog
                .entry(&l.sale_id, &l.line.sku)
                .map_or(Some(i64::MIN), |e| (now >= e.ends_at).then_some(e.ends_at))
        })
    {
        return Err(CartFailure::Refused(CartError::SaleEnded(ended.max(0))));
    }
    let lines: Vec<Line> = cart.lines.iter().map(|l| l.line.clone()).collect();
    let skus: Vec<_> = cart
        .lines
        .iter()
        .filter(|l| l.line.held)
        .filter_map(|l| catalog.entry(&l.sale_id, &l.line.sku).map(|e| e.info()))
        .collect();
    let outcome = rules
        .checkout(&CheckoutRequest {
            now,
            status: cart.status,
            lines: &lines,
            skus: &skus,
            idempotency_key,
            placed_with: placed.as_ref().map(|(_, key)| key.as_str()),
        })?
        .map_err(|refusal| match refusal {
            CartError::HoldExpired(skus) if !invariants::names_the_carts_lines(&skus, &lines) => {
                bad_decision(format!("hold_expired for SKUs not in the cart: {skus:?}"))
            }
            refusal => CartFailure::Refused(refusal),
        })?;
    match (outcome, placed) {
        (CheckoutOutcome::Replay, Some((order, _))) => Ok((order, true)),
        (CheckoutOutcome::Place, None) => Ok((place(conn, &cart, idempotency_key, now)?, false)),
        (outcome, _) => Err(bad_decision(format!(
            "{outcome:?} for a {:?} cart",
            cart.status
        ))),
    }
}

/// Sells every line of an open cart, as held, and records the order.
fn place(
    conn: &Connection,
    cart: &StoredCart,
    idempotency_key: &str,
    now: Millis,
) -> Result<Order, CartFailure> {
    if let Some(l) = cart.lines.iter().find(|l| !l.line.held) {
        return Err(bad_decision(format!(
            "to sell {}, whose hold was released",
            l.line.sku
        )));
    }
    for l in &cart.lines {
        db::sell(conn, &l.sale_id, &l.line.sku, l.line.quantity)?;
    }
    let lines = cart.event_lines();
    let order = Order {
        order_id: order_id(&cart.cart_id),
        cart_id: cart.cart_id.clone(),
        customer_id: cart.customer_id.clone(),
        total_cents: total(lines.iter().map(|l| (l.quantity, l.unit_price_cents))),
        lines,
        placed_at: now,
    };
    conn.prepare_cached(
        "INSERT INTO orders (order_id, cart_id, customer_id, idempotency_key, total_cents, placed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        order.order_id,
        order.cart_id,
        order.customer_id,
        idempotency_key,
        order.total_cents,
        now
    ])?;
    conn.prepare_cached("UPDATE carts SET status = 'checked_out' WHERE cart_id = ?1")?
        .execute([&cart.cart_id])?;
    // The lines' units are sold now, not held: the sweep must not return them.
    conn.prepare_cached("UPDATE cart_lines SET held = 0 WHERE cart_id = ?1")?
        .execute([&cart.cart_id])?;
    emit(conn, now, &OutboxEvent::OrderPlaced(order.clone()))?;
    Ok(order)
}

/// The order of a checked-out cart, and the idempotency key it was placed under.
fn load_order(conn: &Connection, cart: &StoredCart) -> rusqlite::Result<(Order, String)> {
    let (order_id, key, total_cents, placed_at) = conn
        .prepare_cached(
            "SELECT order_id, idempotency_key, total_cents, placed_at FROM orders WHERE cart_id = ?1",
        )?
        .query_row([&cart.cart_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let lines = cart.event_lines();
    let order = Order {
        order_id,
        cart_id: cart.cart_id.clone(),
        customer_id: cart.customer_id.clone(),
        lines,
        total_cents,
        placed_at,
    };
    Ok((order, key))
}

/// Releases up to `limit` holds that lapsed at or before `now`, in order of expiry, and takes
/// the lines of the sales in `ended` out of open carts (their units released); how many.
pub fn sweep(
    conn: &Connection,
    now: Millis,
    ended: &[String],
    limit: u32,
) -> rusqlite::Result<u32> {
    let mut released = release_where(conn, now, "l.hold_expires_at <= ?1", now, limit)?;
    for sale_id in ended {
        if released >= limit {
            break;
        }
        released += release_where(conn, now, "l.sale_id = ?1", sale_id, limit - released)?;
        if released < limit {
            released += remove_ended_lines(conn, sale_id, limit - released)?;
        }
    }
    Ok(released)
}

/// Takes up to `limit` lines of an ended sale, which hold nothing any more, out of open carts.
fn remove_ended_lines(conn: &Connection, sale_id: &str, limit: u32) -> rusqlite::Result<u32> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM cart_lines WHERE (cart_id, sku) IN (SELECT l.cart_id, l.sku \
             FROM cart_lines l JOIN carts c ON c.cart_id = l.cart_id \
             WHERE l.sale_id = ?1 AND l.held = 0 AND c.status = 'open' LIMIT ?2)",
        )?
        .execute(params![sale_id, limit])?;
    Ok(u32::try_from(removed).unwrap_or(u32::MAX))
}

/// Releases up to `limit` held lines matching `filter` (on `l`, the lines, with `?1`).
fn release_where(
    conn: &Connection,
    now: Millis,
    filter: &str,
    value: impl rusqlite::ToSql,
    limit: u32,
) -> rusqlite::Result<u32> {
    let lapsed: Vec<(String, String, String, String, u32)> = conn
        .prepare_cached(&format!(
            "SELECT l.cart_id, c.customer_id, l.sale_id, l.sku, l.quantity FROM cart_lines l \
             JOIN carts c ON c.cart_id = l.cart_id \
             WHERE l.held = 1 AND {filter} ORDER BY l.hold_expires_at LIMIT ?2"
        ))?
        .query_map(params![value, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (cart_id, customer_id, sale_id, sku, quantity) in &lapsed {
        db::release(conn, sale_id, sku, *quantity)?;
        conn.prepare_cached("UPDATE cart_lines SET held = 0 WHERE cart_id = ?1 AND sku = ?2")?
            .execute(params![cart_id, sku])?;
        emit(
            conn,
            now,
            &OutboxEvent::HoldChanged {
                cart_id: cart_id.clone(),
                customer_id: customer_id.clone(),
                sale_id: sale_id.clone(),
                sku: sku.clone(),
                quantity: 0,
                expires_at: 0,
            },
        )?;
    }
    Ok(u32::try_from(lapsed.len()).unwrap_or(u32::MAX))
}

fn emit(conn: &Connection, now: Millis, event: &OutboxEvent) -> rusqlite::Result<()> {
    let json = serde_json::to_string(event)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    db::append_outbox(conn, now, &json)
}

/// One order per cart, so the order's id follows from the cart's.
fn order_id(cart_id: &str) -> String {
    format!("o_{}", cart_id.strip_prefix("c_").unwrap_or(cart_id))
}

/// Held and sold units of one SKU, counted from the carts themselves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CartUnits {
    pub sale_id: String,
    pub sku: String,
    /// Units of lines whose hold is still reserved.
    pub held: i64,
    /// Units of the lines of checked-out carts.
    pub sold: i64,
}

/// What the carts hold and sold, per SKU: the audit checks the stock's counters against it.
pub fn units_in_carts(conn: &Connection) -> rusqlite::Result<Vec<CartUnits>> {
    conn.prepare_cached(
        "SELECT l.sale_id, l.sku, \
           SUM(CASE WHEN l.held = 1 THEN l.quantity ELSE 0 END), \
           SUM(CASE WHEN c.status = 'checked_out' THEN l.quantity ELSE 0 END) \
         FROM cart_lines l JOIN carts c ON c.cart_id = l.cart_id \
         GROUP BY l.sale_id, l.sku ORDER BY l.sale_id, l.sku",
    )?
    .query_map([], |r| {
        Ok(CartUnits {
            sale_id: r.get(0)?,
            sku: r.get(1)?,
            held: r.get(2)?,
            sold: r.get(3)?,
        })
    })?
    .collect()
}

/// A customer's held and bought units of one SKU on this edge.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CustomerUnits {
    pub customer_id: String,
    pub sale_id: String,
    pub sku: String,
    pub held: i64,
    pub sold: i64,
}

/// What each customer holds (in holds that have not lapsed at `now`: the units the limit counts)
/// and bought, per SKU: the audit checks the limits against it.
pub fn units_per_customer(conn: &Connection, now: i64) -> rusqlite::Result<Vec<CustomerUnits>> {
    conn.prepare_cached(
        "SELECT c.customer_id, l.sale_id, l.sku, \
           SUM(CASE WHEN l.held = 1 AND l.hold_expires_at > ?1 THEN l.quantity ELSE 0 END) AS held, \
           SUM(CASE WHEN c.status = 'checked_out' THEN l.quantity ELSE 0 END) AS sold \
         FROM cart_lines l JOIN carts c ON c.cart_id = l.cart_id \
         GROUP BY c.customer_id, l.sale_id, l.sku HAVING held + sold > 0 \
         ORDER BY c.customer_id, l.sale_id, l.sku",
    )?
    .query_map([now], |r| {
        Ok(CustomerUnits {
            customer_id: r.get(0)?,
            sale_id: r.get(1)?,
            sku: r.get(2)?,
            held: r.get(3)?,
            sold: r.get(4)?,
        })
    })?
    .collect()
}

/// Every order placed here, with its lines, by order id.
pub fn orders(conn: &Connection) -> rusqlite::Result<Vec<Order>> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.order_id, o.cart_id, o.customer_id, o.total_cents, o.placed_at, \
           l.sale_id, l.sku, l.quantity, l.unit_price_cents \
         FROM orders o JOIN cart_lines l ON l.cart_id = o.cart_id \
         ORDER BY o.order_id, l.sale_id, l.sku",
    )?;
    let mut rows = stmt.query([])?;
    let mut out: Vec<Order> = Vec::new();
    while let Some(r) = rows.next()? {
        let order_id: String = r.get(0)?;
        if out.last().is_none_or(|o| o.order_id != order_id) {
            out.push(Order {
                order_id,
                cart_id: r.get(1)?,
                customer_id: r.get(2)?,
                total_cents: r.get(3)?,
                placed_at: r.get(4)?,
                lines: Vec::new(),
            });
        }
        if let Some(order) = out.last_mut() {
            order.lines.push(EventLine {
                sale_id: r.get(5)?,
                sku: r.get(6)?,
                quantity: r.get(7)?,
                unit_price_cents: r.get(8)?,
            });
        }
    }
    Ok(out)
}

/// Replaces what customers bought and hold in this edge id's retired histories.
pub fn set_retired_units(conn: &Connection, units: &[RetiredUnits]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM retired_units")?
        .execute([])?;
    for u in units {
        conn.prepare_cached(
            "INSERT INTO retired_units (customer_id, sale_id, sku, units) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![u.customer_id, u.sku.sale_id, u.sku.sku, u.units])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit's look-up costs the same with 2,000 carts open as with one: it starts from the
    /// customer's carts, never from the sale's lines.
    #[test]
    fn a_customers_other_carts_are_found_from_the_customer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = crate::store::db::open_writer(dir.path()).expect("open");
        let mut plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CUSTOMER_ELSEWHERE}"))
            .expect("plan");
        let steps: Vec<String> = plan
            .query_map(params!["customer", "sale", "SKU", "cart", 0], |r| r.get(3))
            .expect("steps")
            .collect::<Result<_, _>>()
            .expect("steps");
        let searches: Vec<&String> = steps.iter().filter(|s| s.starts_with("SEARCH")).collect();
        assert!(
            searches.len() >= 2
                && searches[0].contains("carts_by_customer")
                && searches[1].contains("PRIMARY KEY (cart_id=? AND sku=?)"),
            "plan: {steps:?}"
        );
    }
}
