//! `cart-host load`: drive edges with flash-sale load (the generator is the `cart-load` crate).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cart_load::{self as load, Curve, LoadConfig, Scenario};
use clap::Args;

#[derive(Args)]
pub struct LoadArgs {
    /// An edge's URL; repeat for each (for `get`, the full URL to fetch).
    #[arg(
        long = "edge",
        env = "CART_EDGES",
        value_delimiter = ',',
        required = true
    )]
    edges: Vec<String>,
    /// What each arrival does.
    #[arg(
        long,
        env = "CART_LOAD_SCENARIO",
        value_enum,
        default_value = "updates"
    )]
    scenario: Scenario,
    /// Arrivals per second (at the peak of the curve).
    #[arg(long, env = "CART_LOAD_RATE", default_value_t = 1000.0)]
    rate: f64,
    /// How long to send, in seconds.
    #[arg(long, env = "CART_LOAD_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// How the rate moves over the run.
    #[arg(long, env = "CART_LOAD_CURVE", value_enum, default_value = "flat")]
    curve: Curve,
    /// `updates`: carts to spread the updates over.
    #[arg(long, env = "CART_LOAD_CARTS", default_value_t = 2000)]
    carts: usize,
    /// `updates`: send every update through this edge rather than the cart's own, so that each
    /// is forwarded to the cart's edge (to measure forwarding; the edges need a fleet secret).
    #[arg(long, env = "CART_LOAD_VIA")]
    via: Option<String>,
    /// SKUs to use (default: the first for `updates`, all for `sale`).
    #[arg(long = "sku", env = "CART_LOAD_SKUS", value_delimiter = ',')]
    skus: Vec<String>,
    /// Operator token file, to read sell-through from the edges.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Write the full report (JSON) here; `cart-bench plot` draws it.
    #[arg(long, env = "CART_LOAD_REPORT")]
    report: Option<PathBuf>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    let report = load::run(LoadConfig {
        edges: args.edges,
        scenario: args.scenario,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        curve: args.curve,
        carts: args.carts,
        via: args.via,
        skus: args.skus,
        admin_token: super::admin_token(args.admin_token_file.as_deref())?,
        progress: std::io::stderr().is_terminal(),
        ..LoadConfig::default()
    })
    .await?;
    print!("{report}");
    if let Some(path) = &args.report {
        load::write_json(&report, path)?;
    }
    // Every answer a refusal (a sold-out SKU, a wrong one) measures nothing: say so.
    if report.ok == 0 && report.sent > 0 {
        eprintln!("error: no request succeeded: see the errors above");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
