//! The cart operations: one function per export, each run inside the host's transaction.
//!
//! Tables (created by the edge schema, reachable only by this guest):
//! `carts(cart_id, customer_id, token_hash, status, created_at)`,
//! `cart_lines(cart_id, sku, quantity, unit_price_cents, hold_expires_at, held)` and
//! `orders(order_id, cart_id, customer_id, idempotency_key, total_cents, placed_at)`.
//! A line is `held` while its units are reserved for it; a lapsed hold holds nothing, whether the
//! sweep has already returned its units or not.

use crate::bindings::flashsale::cart::types::{
    Cart, CartError, CartLine, CartStatus, CheckoutResult, Event, HoldChange, Order, OrderLine,
};
use crate::bindings::flashsale::cart::{catalog, clock, outbox, stock};
use crate::db::{as_int, as_qty, as_text, execute, int, query, text};

/// More than anyone could mean to hold of one SKU.
pub const MAX_QUANTITY: u32 = 10_000;

/// How many lapsed holds one `sweep` call expires at most; the host calls again while it is busy.
pub const SWEEP_BATCH: u32 = 500;

struct CartRow {
    customer_id: String,
    status: CartStatus,
}

/// A line as stored, with whether its hold still counts at `now`.
struct LineRow {
    quantity: u32,
    hold_expires_at: i64,
    held: bool,
}

impl LineRow {
    fn holds_at(&self, now: i64) -> bool {
        self.held && self.hold_expires_at > now
    }
}

pub fn create_cart(cart_id: &str, customer_id: &str, token_hash: &str) -> Result<Cart, CartError> {
    execute(
        "INSERT INTO carts (cart_id, customer_id, token_hash, status, created_at) \
         VALUES (?1, ?2, ?3, 'open', ?4)",
        &[
            text(cart_id),
            text(customer_id),
            text(token_hash),
            int(clock::now()),
        ],
    );
    Ok(Cart {
        cart_id: cart_id.to_owned(),
        customer_id: customer_id.to_owned(),
        status: CartStatus::Open,
        lines: Vec::new(),
        total_cents: 0,
    })
}

pub fn get_cart(cart_id: &str, token_hash: &str) -> Result<Cart, CartError> {
    let cart = load_cart(cart_id, token_hash)?;
    Ok(view(cart_id, cart))
}

pub fn set_quantity(
    cart_id: &str,
    token_hash: &str,
    sku: &str,
    quantity: u32,
) -> Result<Cart, CartError> {
    if quantity > MAX_QUANTITY {
        return Err(CartError::InvalidQuantity);
    }
    let cart = load_cart(cart_id, token_hash)?;
    if cart.status != CartStatus::Open {
        return Err(CartError::CartClosed);
    }
    let info = catalog::sku(sku).ok_or(CartError::NotFound)?;
    let now = clock::now();
    let line = load_line(cart_id, sku);

    // What the line holds now. A lapsed hold the sweep has not reached yet gives its units back
    // first, so the line starts again from nothing.
    let held_now = match &line {
        Some(l) if l.holds_at(now) => l.quantity,
        Some(l) if l.held => {
            stock::release(sku, l.quantity);
            0
        }
        _ => 0,
    };

    if quantity > held_now {
        if now < info.sale_starts_at {
            return Err(CartError::SaleNotStarted(info.sale_starts_at));
        }
        let elsewhere = customer_quantity_elsewhere(&cart.customer_id, sku, cart_id, now);
        if u64::from(elsewhere) + u64::from(quantity) > u64::from(info.limit_per_customer) {
            return Err(CartError::LimitExceeded(info.limit_per_customer));
        }
        stock::reserve(sku, quantity - held_now).map_err(|s| CartError::SoldOut(s.available))?;
        let expires_at = now + catalog::hold_ttl();
        execute(
            "INSERT INTO cart_lines (cart_id, sku, quantity, unit_price_cents, hold_expires_at, held) \
             VALUES (?1, ?2, ?3, ?4, ?5, 1) \
             ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = excluded.quantity, \
             unit_price_cents = excluded.unit_price_cents, \
             hold_expires_at = excluded.hold_expires_at, held = 1",
            &[
                text(cart_id),
                text(sku),
                int(quantity),
                int(info.price_cents),
                int(expires_at),
            ],
        );
        emit_hold(cart_id, &cart.customer_id, sku, quantity, expires_at);
    } else if quantity < held_now {
        stock::release(sku, held_now - quantity);
        if quantity == 0 {
            delete_line(cart_id, sku);
            emit_hold(cart_id, &cart.customer_id, sku, 0, 0);
        } else {
            execute(
                "UPDATE cart_lines SET quantity = ?3 WHERE cart_id = ?1 AND sku = ?2",
                &[text(cart_id), text(sku), int(quantity)],
            );
            let expires_at = line.map_or(0, |l| l.hold_expires_at);
            emit_hold(cart_id, &cart.customer_id, sku, quantity, expires_at);
        }
    } else if quantity == 0
        && let Some(l) = line
    {
        // Nothing is held, and the line goes. Central heard of the hold; tell it the hold is
        // gone unless the sweep already did.
        delete_line(cart_id, sku);
        if l.held {
            emit_hold(cart_id, &cart.customer_id, sku, 0, 0);
        }
    }
    Ok(view(cart_id, cart))
}

pub fn checkout(
    cart_id: &str,
    token_hash: &str,
    idempotency_key: &str,
) -> Result<CheckoutResult, CartError> {
    let cart = load_cart(cart_id, token_hash)?;
    if cart.status == CartStatus::CheckedOut {
        let (order, key) = load_order(cart_id);
        return if key == idempotency_key {
            Ok(CheckoutResult {
                order,
                replayed: true,
            })
        } else {
            Err(CartError::CartClosed)
        };
    }
    let now = clock::now();
    let lines = query(
        "SELECT sku, quantity, unit_price_cents, hold_expires_at, held FROM cart_lines \
         WHERE cart_id = ?1 ORDER BY sku",
        &[text(cart_id)],
    );
    if lines.is_empty() {
        return Err(CartError::CartEmpty);
    }
    let lapsed: Vec<String> = lines
        .iter()
        .filter(|r| as_int(&r[4]) == 0 || as_int(&r[3]) <= now)
        .map(|r| as_text(&r[0]))
        .collect();
    if !lapsed.is_empty() {
        return Err(CartError::HoldExpired(lapsed));
    }

    let order_lines: Vec<OrderLine> = lines
        .iter()
        .map(|r| OrderLine {
            sku: as_text(&r[0]),
            quantity: as_qty(&r[1]),
            unit_price_cents: as_int(&r[2]),
        })
        .collect();
    for line in &order_lines {
        stock::sell(&line.sku, line.quantity);
    }
    let order = Order {
        order_id: order_id(cart_id),
        cart_id: cart_id.to_owned(),
        customer_id: cart.customer_id,
        total_cents: order_lines.iter().map(line_total).sum(),
        lines: order_lines,
        placed_at: now,
    };
    execute(
        "INSERT INTO orders (order_id, cart_id, customer_id, idempotency_key, total_cents, placed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            text(&order.order_id),
            text(cart_id),
            text(&order.customer_id),
            text(idempotency_key),
            int(order.total_cents),
            int(now),
        ],
    );
    execute(
        "UPDATE carts SET status = 'checked_out' WHERE cart_id = ?1",
        &[text(cart_id)],
    );
    // The lines' units are sold now, not held: the sweep must not return them.
    execute(
        "UPDATE cart_lines SET held = 0 WHERE cart_id = ?1",
        &[text(cart_id)],
    );
    outbox::emit(&Event::OrderPlaced(order.clone()));
    Ok(CheckoutResult {
        order,
        replayed: false,
    })
}

pub fn sweep(now: i64) -> u32 {
    let lapsed = query(
        "SELECT l.cart_id, c.customer_id, l.sku, l.quantity FROM cart_lines l \
         JOIN carts c ON c.cart_id = l.cart_id \
         WHERE l.held = 1 AND l.hold_expires_at <= ?1 \
         ORDER BY l.hold_expires_at LIMIT ?2",
        &[int(now), int(SWEEP_BATCH)],
    );
    for row in &lapsed {
        let (cart_id, customer_id, sku) = (as_text(&row[0]), as_text(&row[1]), as_text(&row[2]));
        stock::release(&sku, as_qty(&row[3]));
        execute(
            "UPDATE cart_lines SET held = 0 WHERE cart_id = ?1 AND sku = ?2",
            &[text(&cart_id), text(&sku)],
        );
        emit_hold(&cart_id, &customer_id, &sku, 0, 0);
    }
    u32::try_from(lapsed.len()).unwrap_or(u32::MAX)
}

fn load_cart(cart_id: &str, token_hash: &str) -> Result<CartRow, CartError> {
    let rows = query(
        "SELECT customer_id, token_hash, status FROM carts WHERE cart_id = ?1",
        &[text(cart_id)],
    );
    let row = rows.first().ok_or(CartError::NotFound)?;
    if as_text(&row[1]) != token_hash {
        return Err(CartError::Unauthorized);
    }
    let status = match as_text(&row[2]).as_str() {
        "open" => CartStatus::Open,
        _ => CartStatus::CheckedOut,
    };
    Ok(CartRow {
        customer_id: as_text(&row[0]),
        status,
    })
}

fn load_line(cart_id: &str, sku: &str) -> Option<LineRow> {
    let rows = query(
        "SELECT quantity, hold_expires_at, held FROM cart_lines WHERE cart_id = ?1 AND sku = ?2",
        &[text(cart_id), text(sku)],
    );
    rows.first().map(|r| LineRow {
        quantity: as_qty(&r[0]),
        hold_expires_at: as_int(&r[1]),
        held: as_int(&r[2]) != 0,
    })
}

fn delete_line(cart_id: &str, sku: &str) {
    execute(
        "DELETE FROM cart_lines WHERE cart_id = ?1 AND sku = ?2",
        &[text(cart_id), text(sku)],
    );
}

/// Units of `sku` the customer holds in their other open carts or bought on this edge.
fn customer_quantity_elsewhere(customer_id: &str, sku: &str, cart_id: &str, now: i64) -> u32 {
    let rows = query(
        "SELECT COALESCE(SUM(l.quantity), 0) FROM carts c \
         JOIN cart_lines l ON l.cart_id = c.cart_id \
         WHERE c.customer_id = ?1 AND l.sku = ?2 AND c.cart_id <> ?3 \
         AND (c.status = 'checked_out' OR (l.held = 1 AND l.hold_expires_at > ?4))",
        &[text(customer_id), text(sku), text(cart_id), int(now)],
    );
    rows.first().map_or(0, |r| as_qty(&r[0]))
}

fn load_order(cart_id: &str) -> (Order, String) {
    let rows = query(
        "SELECT order_id, customer_id, idempotency_key, total_cents, placed_at FROM orders \
         WHERE cart_id = ?1",
        &[text(cart_id)],
    );
    let row = rows
        .first()
        .unwrap_or_else(|| panic!("checked-out cart {cart_id} has no order"));
    let lines = query(
        "SELECT sku, quantity, unit_price_cents FROM cart_lines WHERE cart_id = ?1 ORDER BY sku",
        &[text(cart_id)],
    )
    .iter()
    .map(|r| OrderLine {
        sku: as_text(&r[0]),
        quantity: as_qty(&r[1]),
        unit_price_cents: as_int(&r[2]),
    })
    .collect();
    let order = Order {
        order_id: as_text(&row[0]),
        cart_id: cart_id.to_owned(),
        customer_id: as_text(&row[1]),
        lines,
        total_cents: as_int(&row[3]),
        placed_at: as_int(&row[4]),
    };
    (order, as_text(&row[2]))
}

fn view(cart_id: &str, cart: CartRow) -> Cart {
    let lines: Vec<CartLine> = query(
        "SELECT sku, quantity, unit_price_cents, hold_expires_at FROM cart_lines \
         WHERE cart_id = ?1 ORDER BY sku",
        &[text(cart_id)],
    )
    .iter()
    .map(|r| CartLine {
        sku: as_text(&r[0]),
        quantity: as_qty(&r[1]),
        unit_price_cents: as_int(&r[2]),
        hold_expires_at: as_int(&r[3]),
    })
    .collect();
    Cart {
        cart_id: cart_id.to_owned(),
        customer_id: cart.customer_id,
        status: cart.status,
        total_cents: lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_cents)
            .sum(),
        lines,
    }
}

fn emit_hold(cart_id: &str, customer_id: &str, sku: &str, quantity: u32, expires_at: i64) {
    outbox::emit(&Event::HoldChanged(HoldChange {
        cart_id: cart_id.to_owned(),
        customer_id: customer_id.to_owned(),
        sku: sku.to_owned(),
        quantity,
        expires_at,
    }));
}

fn line_total(line: &OrderLine) -> i64 {
    i64::from(line.quantity) * line.unit_price_cents
}

/// One order per cart, so the order's id follows from the cart's.
fn order_id(cart_id: &str) -> String {
    format!("o_{}", cart_id.strip_prefix("c_").unwrap_or(cart_id))
}
