//! What the edge's books need of any cart rules, whatever else they decide: every decision is
//! held to these. A deploy's smoke check ([`crate::modules::smoke`]) holds a new module's
//! decisions of a cart's life to them; `cart-host rules test` holds its decisions of generated
//! requests to them, and shrinks a request that breaks one.

use cart_rules::{
    CartError, CartStatus, CheckoutOutcome, CheckoutRequest, Line, MAX_PRICE_CENTS, MAX_QUANTITY,
    SetRequest,
};

use crate::asked::Asked;
use crate::decided::Decided;
use crate::rules::GuestFault;

/// Every rule a decision is held to, in the order reported.
pub const INVARIANTS: &[(&str, &str)] = &[
    (
        "no-fault",
        "a call neither traps nor runs past its deadline or memory",
    ),
    (
        "free",
        "a set-quantity never holds more units than are free at the edge",
    ),
    (
        "limit",
        "a line raised to hold more never takes the customer past the SKU's limit, counting \
         customer-elsewhere",
    ),
    (
        "closed",
        "a set-quantity never changes a checked-out cart's line",
    ),
    (
        "line",
        "a line is of the SKU asked, 1 to 10,000 units, at a price from 0",
    ),
    (
        "sold-out",
        "sold-out(n) never offers more than the free units and the line's own",
    ),
    (
        "place",
        "checkout places only an open cart with lines, every one of them held",
    ),
    ("replay", "checkout replays only a checked-out cart"),
    (
        "hold-expired",
        "hold-expired names SKUs of the cart's lines, and only at checkout",
    ),
];

/// What `rule` asks of any rules, as [`INVARIANTS`] says it.
pub fn told(rule: &str) -> &'static str {
    INVARIANTS
        .iter()
        .find(|(r, _)| *r == rule)
        .map_or("", |(_, what)| what)
}

/// Whether `line`, decided for `sku`, is one the books can take: of that SKU, 1 to
/// [`MAX_QUANTITY`] units, at a price from 0 to [`MAX_PRICE_CENTS`]. The edge refuses any
/// other decision as a guest fault.
pub fn line_is_sane(line: &Line, sku: &str) -> bool {
    line.sku == sku
        && (1..=MAX_QUANTITY).contains(&line.quantity)
        && (0..=MAX_PRICE_CENTS).contains(&line.unit_price_cents)
}

/// Whether the SKUs of a `hold-expired` at checkout name lines of the cart (`lines`): at least
/// one, no more than it has lines, each of its lines. The edge refuses any other as a guest
/// fault.
pub fn names_the_carts_lines(skus: &[String], lines: &[Line]) -> bool {
    !skus.is_empty()
        && skus.len() <= lines.len()
        && skus.iter().all(|s| lines.iter().any(|l| &l.sku == s))
}

/// The rules a decision of `asked` breaks.
pub fn broken(asked: &Asked, decided: &Decided) -> Vec<&'static str> {
    match (asked, decided) {
        (Asked::Set(a), Decided::Set(d)) => set_broken(&a.request(), d),
        (Asked::Checkout(a), Decided::Checkout(d)) => checkout_broken(&a.request(), d),
        _ => Vec::new(),
    }
}

/// The rules a set-quantity decision breaks.
fn set_broken(
    req: &SetRequest<'_>,
    decided: &Result<Result<Option<Line>, CartError>, GuestFault>,
) -> Vec<&'static str> {
    let mut broken = Vec::new();
    let decision = match decided {
        Err(_) => return vec!["no-fault"],
        Ok(d) => d,
    };
    let before = req.line.map_or(0, Line::reserved);
    let holding = req
        .line
        .filter(|l| l.holds_at(req.now))
        .map_or(0, |l| l.quantity);
    match decision {
        Ok(line) => {
            let after = line.as_ref().map_or(0, Line::reserved);
            if after > before && after - before > req.free {
                broken.push("free");
            }
            // A held line counts whether or not its time has passed: the books reserve by
            // `held`, and the sweep is what lets a lapsed hold go.
            if let Some(l) = line
                && l.held
                && l.quantity > holding
                && u64::from(req.customer_elsewhere) + u64::from(l.quantity)
                    > u64::from(req.sku.limit_per_customer)
            {
                broken.push("limit");
            }
            if req.status == CartStatus::CheckedOut && line.as_ref() != req.line {
                broken.push("closed");
            }
            if line
                .as_ref()
                .is_some_and(|l| !line_is_sane(l, &req.sku.sku))
            {
                broken.push("line");
            }
        }
        Err(CartError::SoldOut(n)) if u64::from(*n) > u64::from(req.free) + u64::from(before) => {
            broken.push("sold-out");
        }
        Err(CartError::HoldExpired(_)) => broken.push("hold-expired"),
        Err(_) => {}
    }
    broken
}

/// The rules a checkout decision breaks.
fn checkout_broken(
    req: &CheckoutRequest<'_>,
    decided: &Result<Result<CheckoutOutcome, CartError>, GuestFault>,
) -> Vec<&'static str> {
    match decided {
        Err(_) => vec!["no-fault"],
        Ok(Ok(CheckoutOutcome::Place))
            if req.status != CartStatus::Open
                || req.lines.is_empty()
                || req.lines.iter().any(|l| !l.held) =>
        {
            vec!["place"]
        }
        Ok(Ok(CheckoutOutcome::Replay)) if req.status != CartStatus::CheckedOut => {
            vec!["replay"]
        }
        Ok(Err(CartError::HoldExpired(skus))) if !names_the_carts_lines(skus, req.lines) => {
            vec!["hold-expired"]
        }
        Ok(_) => Vec::new(),
    }
}
