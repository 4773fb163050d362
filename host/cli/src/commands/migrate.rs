//! `cart-host migrate`: central's schema brought up to date, on its own.

use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    central: super::CentralArgs,
}

/// Brings the schema up to date and says so; fails, naming central (without its password), if
/// central cannot be reached or refuses.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let central = args.central.connect().await?;
    central
        .migrate()
        .await
        .with_context(|| format!("migrating central {}", args.central.shown()))?;
    println!("central {}: its schema is up to date", args.central.shown());
    Ok(ExitCode::SUCCESS)
}
