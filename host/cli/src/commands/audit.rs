//! `cart-host audit`: after the edges' outboxes drain, checks that stock is conserved, that
//! central's holds and sales match what each edge committed, and that every outbox event was
//! applied exactly once.

use std::fmt;
use std::time::{Duration, Instant};

use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;

use anyhow::Context as _;
use cart_central::events::Order;
use cart_central::time::{Millis, wall_ms};
use cart_central::{Central, SkuKey, SkuLedger, Snapshot};
use cart_edge::wire::{self, EdgeBooks, EdgeStatus};
use clap::Args;

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    central: super::CentralArgs,
    /// An edge's URL; repeat for each. Default: every edge registered with central.
    #[arg(long = "edge", env = "CART_EDGES", value_delimiter = ',')]
    edges: Vec<String>,
    /// File holding the operator token the edges accept.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// How long to wait for the edges' outboxes to drain, in seconds.
    #[arg(long, env = "CART_AUDIT_WAIT_SECS", default_value_t = 30)]
    wait_secs: u64,
    #[command(flatten)]
    tls: super::FleetCaArgs,
}

/// Runs the audit, prints its report, and fails unless it passed.
pub async fn run_command(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let report = run(&AuditConfig {
        central: args.central.url()?,
        edges: args.edges,
        admin_token: super::admin_token(args.admin_token_file.as_deref())?,
        wait: Duration::from_secs(args.wait_secs),
        fleet_ca: args.tls.fleet_ca,
    })
    .await?;
    print!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub struct AuditConfig {
    pub central: String,
    /// Edge URLs; empty: every edge registered with central.
    pub edges: Vec<String>,
    pub admin_token: Option<String>,
    /// How long to wait for outboxes to drain.
    pub wait: Duration,
    /// The CA `https://` edges' certificates are checked against (default: the system's).
    pub fleet_ca: Option<PathBuf>,
}

/// What the audit found: the checks it made and every difference.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub checked: Vec<String>,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            self.problems.push(what);
        }
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.checked {
            writeln!(f, "checked: {line}")?;
        }
        for p in &self.problems {
            writeln!(f, "DIFFERS: {p}")?;
        }
        if self.passed() {
            writeln!(f, "audit passed")
        } else {
            writeln!(f, "audit FAILED: {} difference(s)", self.problems.len())
        }
    }
}

/// What the audit read of one edge: its status, its books, and central's orders for it.
pub struct AuditedEdge {
    pub status: EdgeStatus,
    pub books: EdgeBooks,
    pub central_orders: Vec<Order>,
}

pub async fn run(config: &AuditConfig) -> anyhow::Result<AuditReport> {
    let central = Central::connect(&config.central).await.with_context(|| {
        format!(
            "opening central {}",
            cart_central::redacted(&config.central)
        )
    })?;
    let urls: Vec<String> = if config.edges.is_empty() {
        central
            .snapshot()
            .await?
            .edges
            .into_values()
            .filter(|e| !e.retired && !e.drained)
            .map(|e| e.url)
            .collect()
    } else {
        config.edges.clone()
    };
    anyhow::ensure!(!urls.is_empty(), "no edges to audit: name them with --edge");
    let client = super::edge_client(config.fleet_ca.as_deref(), Duration::from_secs(10))?;
    let token = config.admin_token.as_deref();

    // The fleet runs while it is audited: grants, returns and events move between the edges and
    // central. Each round reads every edge's books, then central, then the books again; equal,
    // settled marks on both sides mean nothing moved in between, so the books and central are
    // compared as of one moment. Rounds repeat until then, or until the deadline.
    let deadline = Instant::now() + config.wait;
    loop {
        let mut statuses = Vec::with_capacity(urls.len());
        let mut books = Vec::with_capacity(urls.len());
        for url in &urls {
            statuses.push(wire::fetch(&client, url, token).await?);
            books.push(wire::fetch_books(&client, url, token).await?);
        }
        let snapshot = central.snapshot().await?;
        let mut central_orders = Vec::with_capacity(urls.len());
        let mut still = true;
        for ((url, status), books) in urls.iter().zip(&statuses).zip(&books) {
            central_orders.push(central.orders_of(&status.edge_id).await?);
            let again = wire::fetch_books(&client, url, token).await?;
            // Through a queue, delivered means stored in the stream: the relay may still be
            // applying it.
            let applied = snapshot.edges.get(&status.edge_id).map(|e| e.high_water);
            still &= status.settled()
                && books.mark.settled()
                && again.mark == books.mark
                && status.delivered_seq == books.mark.delivered_seq
                && applied == Some(books.mark.delivered_seq);
        }
        if still || Instant::now() >= deadline {
            let edges: Vec<AuditedEdge> = statuses
                .into_iter()
                .zip(books)
                .zip(central_orders)
                .map(|((status, books), central_orders)| AuditedEdge {
                    status,
                    books,
                    central_orders,
                })
                .collect();
            let mut report = compare(&snapshot, &edges, wall_ms());
            report.expect(
                still,
                format!(
                    "the fleet did not hold still within {:?}: grants, returns or events moved \
                     while it was read, so the books and central were compared as read",
                    config.wait
                ),
            );
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checks themselves, on what central and the edges said. Each edge's counters are
/// checked against its own carts and orders, and both against central; every SKU's stock must
/// be accounted for; every ended sale must be final.
pub fn compare(snapshot: &Snapshot, edges: &[AuditedEdge], now: Millis) -> AuditReport {
    let mut report = AuditReport::default();
    for e in edges {
        check_edge(&mut report, snapshot, e);
    }
    report.checked.push(format!(
        "{} edge(s): outboxes drained and applied once each; stock counters agree with carts \
         and orders, and with central; orders match central's line by line",
        edges.len()
    ));
    for (key, ledger) in &snapshot.skus {
        check_sku(&mut report, snapshot, edges, key, ledger);
    }
    check_limits(&mut report, snapshot, edges);
    for o in &snapshot.over_limit {
        report.problems.push(format!(
            "customer {} bought and holds {} of {} by central's own orders and holds (every \
             edge and history), over its limit of {}",
            o.customer_id, o.units, o.sku, o.limit
        ));
    }
    for o in &snapshot.late_orders {
        report.problems.push(format!(
            "order {} of {} was placed at {}, at or after sale {}'s end at {}",
            o.order_id,
            o.edge_id,
            cart_central::time::rfc3339(o.placed_at),
            o.sale_id,
            cart_central::time::rfc3339(o.ends_at)
        ));
    }
    report.checked.push(
        "central's orders and holds: no customer past a limit, no order after its sale's end"
            .into(),
    );
    for (sale_id, sale) in &snapshot.sales {
        if sale.ends_at <= now {
            check_final(&mut report, snapshot, sale_id);
        }
    }
    report
}

fn check_edge(report: &mut AuditReport, snapshot: &Snapshot, e: &AuditedEdge) {
    let (status, books) = (&e.status, &e.books);
    let id = &status.edge_id;
    report.expect(
        status.settled(),
        format!(
            "edge {id}: not settled: {} outbox events, {} grants and {} returns in flight",
            status.outbox_backlog, status.grants_in_flight, status.returns_in_flight
        ),
    );
    let Some(ledger) = snapshot.edges.get(id) else {
        report
            .problems
            .push(format!("edge {id} never registered with central"));
        return;
    };
    report.expect(
        ledger.high_water == status.delivered_seq,
        format!(
            "edge {id}: central applied its outbox up to seq {}, the edge marked {} delivered",
            ledger.high_water, status.delivered_seq
        ),
    );
    // Sequence numbers run 1, 2, 3...: one applied event per number, none twice, none missed,
    // its receipt kept or counted as forgotten.
    report.expect(
        ledger.events_applied + ledger.events_pruned == ledger.high_water,
        format!(
            "edge {id}: {} events applied for sequence numbers 1..={} ({} receipts kept, {} \
             forgotten)",
            ledger.events_applied + ledger.events_pruned,
            ledger.high_water,
            ledger.events_applied,
            ledger.events_pruned
        ),
    );
    // Sales past the edge's retention: their carts and orders are gone from it (or going).
    let kept = |sale_id: &str| !books.pruned_sales.iter().any(|s| s == sale_id);
    for line in books.stock.iter().filter(|l| kept(&l.sale_id)) {
        let key = SkuKey::new(&line.sale_id, &line.sku);
        let in_carts = books
            .carts
            .iter()
            .find(|c| c.sale_id == line.sale_id && c.sku == line.sku)
            .map_or((0, 0), |c| (c.held, c.sold));
        let units = &line.units;
        let (held, sold) = (i64::from(units.held), i64::from(units.sold));
        report.expect(
            held == in_carts.0,
            format!(
                "{key} at {id}: the stock counts {held} held, the carts hold {}",
                in_carts.0
            ),
        );
        report.expect(
            sold == in_carts.1,
            format!(
                "{key} at {id}: the stock counts {sold} sold, the orders hold {}",
                in_carts.1
            ),
        );
        let central = snapshot.skus.get(&key);
        let at =
            |m: Option<&BTreeMap<String, i64>>| m.and_then(|m| m.get(id)).copied().unwrap_or(0);
        let central_held = at(central.map(|c| &c.held));
        report.expect(
            central_held == in_carts.0,
            format!(
                "{key} at {id}: central records {central_held} held, the edge's carts hold {}",
                in_carts.0
            ),
        );
        let central_sold = at(central.map(|c| &c.sold));
        report.expect(
            central_sold == in_carts.1,
            format!(
                "{key} at {id}: central records {central_sold} sold, the edge's orders hold {}",
                in_carts.1
            ),
        );
        let allotted = at(central.map(|c| &c.allotted));
        let here = i64::from(units.free) + held + sold;
        report.expect(
            allotted == here,
            format!(
                "{key} at {id}: central allotted {allotted}, the edge has {here} (free+held+sold)"
            ),
        );
    }
    for c in books.carts.iter().filter(|c| {
        kept(&c.sale_id)
            && !books
                .stock
                .iter()
                .any(|l| l.sale_id == c.sale_id && l.sku == c.sku)
    }) {
        report.problems.push(format!(
            "{}/{} at {id}: carts hold {} and sold {} of a SKU the edge has no stock of",
            c.sale_id, c.sku, c.held, c.sold
        ));
    }
    let central_orders: Vec<&Order> = e
        .central_orders
        .iter()
        .filter(|o| o.lines.iter().any(|l| kept(&l.sale_id)))
        .collect();
    if central_orders.len() < e.central_orders.len() {
        report.checked.push(format!(
            "edge {id}: {} order(s) of sales past its retention left out (sales {})",
            e.central_orders.len() - central_orders.len(),
            books.pruned_sales.join(", ")
        ));
    }
    compare_orders(report, id, &books.orders, &central_orders);
}

/// The edge's orders and central's, line by line.
fn compare_orders(report: &mut AuditReport, id: &str, edge: &[Order], central: &[&Order]) {
    let at_central: BTreeMap<&str, &Order> =
        central.iter().map(|o| (o.order_id.as_str(), *o)).collect();
    let at_edge: BTreeMap<&str, &Order> = edge.iter().map(|o| (o.order_id.as_str(), o)).collect();
    for (order_id, order) in &at_edge {
        match at_central.get(order_id) {
            None => report.problems.push(format!(
                "order {order_id} of edge {id} is missing at central"
            )),
            Some(c) if c != order => report.problems.push(format!(
                "order {order_id} of edge {id} differs: the edge has {order:?}, central {c:?}"
            )),
            Some(_) => {}
        }
    }
    for order_id in at_central.keys().filter(|o| !at_edge.contains_key(*o)) {
        report.problems.push(format!(
            "central holds order {order_id} for edge {id}, which the edge never placed"
        ));
    }
}

/// Per customer and SKU, what they hold and bought on every edge together is within the SKU's
/// limit.
fn check_limits(report: &mut AuditReport, snapshot: &Snapshot, edges: &[AuditedEdge]) {
    let mut units: BTreeMap<(&str, SkuKey), i64> = BTreeMap::new();
    for c in edges.iter().flat_map(|e| &e.books.customers) {
        *units
            .entry((&c.customer_id, SkuKey::new(&c.sale_id, &c.sku)))
            .or_default() += c.held + c.sold;
    }
    for ((customer, key), held_and_sold) in &units {
        let limit = snapshot.skus.get(key).map_or(0, |l| l.limit_per_customer);
        report.expect(
            *held_and_sold <= limit,
            format!(
                "customer {customer} holds and bought {held_and_sold} of {key} across the \
                 fleet, over its limit of {limit}"
            ),
        );
    }
    report.checked.push(format!(
        "{} customer and SKU pair(s): held and bought across the fleet within the limit",
        units.len()
    ));
}

fn check_sku(
    report: &mut AuditReport,
    snapshot: &Snapshot,
    edges: &[AuditedEdge],
    key: &SkuKey,
    ledger: &SkuLedger,
) {
    for (what, per_edge) in [
        ("allotted", &ledger.allotted),
        ("held", &ledger.held),
        ("sold", &ledger.sold),
    ] {
        for (edge, n) in per_edge.iter().filter(|(_, n)| **n < 0) {
            report
                .problems
                .push(format!("{key}: central counts {n} {what} at {edge}"));
        }
    }
    report.expect(
        ledger.unallocated >= 0,
        format!("{key}: central counts {} unallocated", ledger.unallocated),
    );
    let audited = |edge: &str| edges.iter().any(|e| e.status.edge_id == edge);
    let retired = |edge: &str| snapshot.edges.get(edge).is_some_and(|l| l.retired);
    let drained = |edge: &str| snapshot.edges.get(edge).is_some_and(|l| l.drained);
    let (mut at_edges, mut unaudited) = (0i64, 0i64);
    for (edge, n) in &ledger.allotted {
        if audited(edge) {
            at_edges += n;
        } else {
            unaudited += n;
        }
        if retired(edge) {
            // A retired history keeps its units until its folder reports what it sold before
            // its lease lapsed (or they would be sold twice): in doubt, not lost.
            let sold = ledger.sold.get(edge).copied().unwrap_or(0);
            let held = ledger.held.get(edge).copied().unwrap_or(0);
            if *n != sold {
                report.checked.push(format!(
                    "{key}: retired {edge} keeps {} units in doubt ({held} held) until its \
                     folder delivers what it has",
                    n - sold
                ));
            }
        }
        if drained(edge) && !audited(edge) {
            // Its carts went to other edges with their held and sold units; the rest came back.
            let held = ledger.held.get(edge).copied().unwrap_or(0);
            let sold = ledger.sold.get(edge).copied().unwrap_or(0);
            report.expect(
                *n == 0 && held == 0 && sold == 0,
                format!(
                    "{key}: drained {edge} still has {n} units allotted, {held} held and {sold} sold"
                ),
            );
        }
    }
    let accounted = ledger.unallocated + at_edges + unaudited;
    report.expect(
        ledger.stock_total == accounted,
        format!(
            "{key}: stock_total {} but unallocated {} + audited edges {at_edges} + other edges \
             {unaudited} = {accounted}",
            ledger.stock_total, ledger.unallocated
        ),
    );
    report.checked.push(format!(
        "{key}: stock_total {} = unallocated {} + at edges {at_edges}{}",
        ledger.stock_total,
        ledger.unallocated,
        if unaudited != 0 {
            format!(" + unaudited or retired edges {unaudited}")
        } else {
            String::new()
        }
    ));
}

/// An ended sale's ledger is final: nothing held, and every unit sold or back at central.
fn check_final(report: &mut AuditReport, snapshot: &Snapshot, sale_id: &str) {
    let mut final_ok = true;
    let (mut sold_total, mut back) = (0i64, 0i64);
    for (key, ledger) in snapshot.skus.iter().filter(|(k, _)| k.sale_id == sale_id) {
        let held: i64 = ledger.held.values().sum();
        let sold: i64 = ledger.sold.values().sum();
        let allotted: i64 = ledger.allotted.values().sum();
        sold_total += sold;
        back += ledger.unallocated;
        if held != 0 {
            final_ok = false;
            report.problems.push(format!(
                "{key}: the sale has ended, yet central records {held} held"
            ));
        }
        if allotted != sold {
            final_ok = false;
            report.problems.push(format!(
                "{key}: the sale has ended, yet {} unsold units are still at edges",
                allotted - sold
            ));
        }
    }
    if final_ok {
        report.checked.push(format!(
            "sale {sale_id} has ended and is final: {sold_total} sold, {back} back at central"
        ));
    }
}
