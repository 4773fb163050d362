//! `cart-host audit`: after the edges' outboxes drain, checks that stock is conserved, that
//! central's holds and sales match what each edge committed, and that every outbox event was
//! applied exactly once.

use std::fmt;
use std::time::{Duration, Instant};

use std::path::PathBuf;
use std::process::ExitCode;

use cart_central::Central;
use cart_edge::http_client::HttpClient;
use cart_edge::status::{self, EdgeStatus};
use clap::Args;

#[derive(Args)]
pub struct AuditArgs {
    /// Central database: sqlite:PATH or postgres://user@host:port/db.
    #[arg(long, env = "CART_CENTRAL")]
    central: String,
    /// An edge's URL; repeat for each. Default: every edge registered with central.
    #[arg(long = "edge", env = "CART_EDGES", value_delimiter = ',')]
    edges: Vec<String>,
    /// File holding the operator token the edges accept.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// How long to wait for the edges' outboxes to drain, in seconds.
    #[arg(long, env = "CART_AUDIT_WAIT_SECS", default_value_t = 30)]
    wait_secs: u64,
}

/// Runs the audit, prints its report, and fails unless it passed.
pub async fn run_command(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let report = run(&AuditConfig {
        central: args.central,
        edges: args.edges,
        admin_token: super::admin_token(args.admin_token_file.as_deref())?,
        wait: Duration::from_secs(args.wait_secs),
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

pub async fn run(config: &AuditConfig) -> anyhow::Result<AuditReport> {
    let central = Central::connect(&config.central).await?;
    let urls: Vec<String> = if config.edges.is_empty() {
        central
            .snapshot()
            .await?
            .edges
            .into_values()
            .map(|e| e.url)
            .collect()
    } else {
        config.edges.clone()
    };
    anyhow::ensure!(!urls.is_empty(), "no edges to audit: name them with --edge");
    let client = HttpClient::default();
    let token = config.admin_token.as_deref();

    // Wait for every outbox to drain, so central has heard everything the edges committed.
    let deadline = Instant::now() + config.wait;
    let statuses = loop {
        let mut statuses = Vec::with_capacity(urls.len());
        for url in &urls {
            statuses.push(status::fetch(&client, url, token).await?);
        }
        if statuses.iter().all(EdgeStatus::settled) || Instant::now() >= deadline {
            break statuses;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let snapshot = central.snapshot().await?;
    Ok(compare(&snapshot, &statuses))
}

/// The checks themselves, on what central and the edges said.
pub fn compare(snapshot: &cart_central::Snapshot, edges: &[EdgeStatus]) -> AuditReport {
    let mut report = AuditReport::default();
    for e in edges {
        report.expect(
            e.settled(),
            format!(
                "edge {}: not settled: {} outbox events, {} grants and {} returns in flight",
                e.edge_id, e.outbox_backlog, e.grants_in_flight, e.returns_in_flight
            ),
        );
        let Some(ledger) = snapshot.edges.get(&e.edge_id) else {
            report
                .problems
                .push(format!("edge {} never registered with central", e.edge_id));
            continue;
        };
        report.expect(
            ledger.high_water == e.delivered_seq,
            format!(
                "edge {}: central applied up to seq {}, the edge delivered up to {}",
                e.edge_id, ledger.high_water, e.delivered_seq
            ),
        );
        // Sequence numbers run 1, 2, 3...: one applied event per number, none twice, none missed.
        report.expect(
            ledger.events_applied == ledger.high_water,
            format!(
                "edge {}: {} events applied for sequence numbers 1..={}",
                e.edge_id, ledger.events_applied, ledger.high_water
            ),
        );
    }
    report.checked.push(format!(
        "outboxes drained and applied once each on {} edge(s)",
        edges.len()
    ));

    for (sku, ledger) in &snapshot.skus {
        let mut at_edges = 0i64;
        for e in edges {
            let here = e.skus.get(&sku.sku).map_or((0, 0, 0), |s| {
                (i64::from(s.free), i64::from(s.held), i64::from(s.sold))
            });
            let units = here.0 + here.1 + here.2;
            at_edges += units;
            let id = &e.edge_id;
            let allotted = ledger.allotted.get(id).copied().unwrap_or(0);
            report.expect(
                allotted == units,
                format!("{sku} at {id}: central allotted {allotted}, the edge has {units} (free+held+sold)"),
            );
            let held = ledger.held.get(id).copied().unwrap_or(0);
            report.expect(
                held == here.1,
                format!(
                    "{sku} at {id}: central records {held} held, the edge {}",
                    here.1
                ),
            );
            let sold = ledger.sold.get(id).copied().unwrap_or(0);
            report.expect(
                sold == here.2,
                format!(
                    "{sku} at {id}: central records {sold} sold, the edge {}",
                    here.2
                ),
            );
        }
        // Units allotted to edges this audit was not told about still count.
        let elsewhere: i64 = ledger
            .allotted
            .iter()
            .filter(|(id, _)| !edges.iter().any(|e| &e.edge_id == *id))
            .map(|(_, n)| n)
            .sum();
        let accounted = ledger.unallocated + at_edges + elsewhere;
        report.expect(
            ledger.stock_total == accounted,
            format!(
                "{sku}: stock_total {} but unallocated {} + edges {} + unaudited edges {elsewhere} = {accounted}",
                ledger.stock_total, ledger.unallocated, at_edges
            ),
        );
        report.checked.push(format!(
            "{sku}: stock_total {} = unallocated {} + at edges {}{}",
            ledger.stock_total,
            ledger.unallocated,
            at_edges,
            if elsewhere > 0 {
                format!(" + unaudited edges {elsewhere}")
            } else {
                String::new()
            }
        ));
    }
    report
}
