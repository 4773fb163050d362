//! `cart-host sale`: the central database's sales.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use cart_central::Loaded;
use cart_central::sale::Sale;
use cart_central::time::{Millis, parse_rfc3339, rfc3339, wall_ms};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SaleCommand {
    /// Add a sale to the calendar (creating the central schema if needed). Loading the same sale
    /// again changes nothing; a changed sale replaces the loaded one until it starts, and is
    /// refused after, naming what differs. A sale sharing SKU codes with another one at the
    /// same time is refused.
    Load {
        #[command(flatten)]
        central: super::CentralArgs,
        /// The sale file (JSON; see schema/sale.schema.json).
        file: PathBuf,
        /// Start the sale at this time instead of the file's (`now`, or an RFC 3339 time), keeping
        /// its length: to rehearse a sale file, or to run the example.
        #[arg(long, env = "CART_SALE_STARTS_AT", value_parser = parse_start)]
        starts_at: Option<Millis>,
    },
    /// The calendar: every sale, past, running and scheduled, with its units.
    List {
        #[command(flatten)]
        central: super::CentralArgs,
    },
    /// End a sale now: its holds are released and its unsold units come back to central.
    End {
        #[command(flatten)]
        central: super::CentralArgs,
        /// The sale's id.
        sale_id: String,
    },
}

pub async fn run(command: SaleCommand) -> anyhow::Result<ExitCode> {
    match command {
        SaleCommand::Load {
            central,
            file,
            starts_at,
        } => load(&central, &file, starts_at).await?,
        SaleCommand::List { central } => list(&central).await?,
        SaleCommand::End { central, sale_id } => {
            let ended = central.connect().await?.end_sale(&sale_id).await?;
            println!(
                "sale {sale_id} ends at {}, once every edge can know it (after the leases \
                 central has granted): no hold or order after that; edges then release its \
                 holds and return its units within seconds",
                rfc3339(ended)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(central: &super::CentralArgs) -> anyhow::Result<()> {
    let db = central.connect().await?;
    let sales = db.sales_ending_after(Millis::MIN).await?;
    let snapshot = db.snapshot().await?;
    let now = wall_ms();
    let mut rows: Vec<[String; 9]> = vec![
        [
            "sale",
            "state",
            "starts",
            "ends",
            "skus",
            "stock",
            "sold",
            "held",
            "unallocated",
        ]
        .map(str::to_owned),
    ];
    for sale in sales {
        let state = if now < sale.starts_at {
            "scheduled"
        } else if now < sale.ends_at {
            "running"
        } else {
            "ended"
        };
        let (mut stock, mut sold, mut held, mut unallocated) = (0i64, 0i64, 0i64, 0i64);
        for ledger in snapshot
            .skus
            .iter()
            .filter(|(k, _)| k.sale_id == sale.sale_id)
            .map(|(_, l)| l)
        {
            stock += ledger.stock_total;
            sold += ledger.sold.values().sum::<i64>();
            held += ledger.held.values().sum::<i64>();
            unallocated += ledger.unallocated;
        }
        rows.push([
            sale.sale_id.clone(),
            state.to_owned(),
            rfc3339(sale.starts_at),
            rfc3339(sale.ends_at),
            sale.skus.len().to_string(),
            stock.to_string(),
            sold.to_string(),
            held.to_string(),
            unallocated.to_string(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Rows as columns that line up: text to the left, counts (from the fifth column) to the right.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c < 4 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn parse_start(s: &str) -> Result<Millis, String> {
    if s == "now" {
        Ok(wall_ms())
    } else {
        parse_rfc3339(s).ok_or_else(|| format!("{s:?} is neither `now` nor an RFC 3339 time"))
    }
}

async fn load(
    central: &super::CentralArgs,
    file: &Path,
    starts_at: Option<Millis>,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut sale = Sale::parse(&text).with_context(|| format!("refusing {}", file.display()))?;
    if let Some(at) = starts_at {
        sale = sale.moved_to(at);
    }
    let db = central.connect().await?;
    let known = db
        .sales_ending_after(Millis::MIN)
        .await?
        .iter()
        .any(|s| s.sale_id == sale.sale_id);
    if !known && sale.ends_at <= wall_ms() {
        anyhow::bail!(
            "refusing {}: sale {} ended at {}, so nothing was loaded \
             (--starts-at now runs it from now)",
            file.display(),
            sale.sale_id,
            rfc3339(sale.ends_at)
        );
    }
    let done = db.load_sale(&sale).await?;
    let units: u64 = sale.skus.iter().map(|s| u64::from(s.stock_total)).sum();
    let what = match done {
        Loaded::New => "loaded",
        Loaded::Replaced => "replaced (it had not started)",
        Loaded::Unchanged => "unchanged (already loaded)",
    };
    println!(
        "sale {} ({} SKUs, {units} units, {} to {}): {what}",
        sale.sale_id,
        sale.skus.len(),
        rfc3339(sale.starts_at),
        rfc3339(sale.ends_at)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_columns_line_up_however_long_a_cell() {
        let rows = [
            ["sale", "state", "starts", "ends", "stock"].map(str::to_owned),
            [
                "noon-drop",
                "running",
                "2026-12-05T17:41:31.335Z",
                "x",
                "120",
            ]
            .map(str::to_owned),
        ];
        let text = super::table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("ends"), lines[1].find('x'), "{text}");
        assert_eq!(lines[0].len(), lines[1].len(), "{text}");
    }
}
