//! `cart-host sale`: the central database's sales.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use cart_central::sale::Sale;
use cart_central::time::rfc3339;
use cart_central::{Central, Loaded};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SaleCommand {
    /// Create the central schema if needed and load a sale file.
    Load {
        /// Central database: sqlite:PATH or postgres://user@host:port/db.
        #[arg(long, env = "CART_CENTRAL")]
        central: String,
        /// The sale file (JSON; see schema/sale.schema.json).
        file: PathBuf,
    },
}

pub async fn run(command: SaleCommand) -> anyhow::Result<ExitCode> {
    match command {
        SaleCommand::Load { central, file } => load(&central, &file).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn load(central: &str, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let sale = Sale::parse(&text).with_context(|| format!("refusing {}", file.display()))?;
    let db = Central::connect(central).await?;
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
