//! `cart-host migrate`: central's schema brought up to this release, on its own (README,
//! "Upgrades"); a newer schema is left as it is. With `--restored`, after a restore from a
//! backup, central grants nothing new until the edges have sent theirs again.

use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    central: super::CentralArgs,
    /// Central was just restored from a backup: it grants no new units until every edge that
    /// may be selling has sent the grants it holds again, so that units granted since the
    /// backup are not granted twice. (Edges notice a restore themselves at their next call to
    /// central; this closes the moments before that.)
    #[arg(long)]
    restored: bool,
}

/// Brings the schema up to date and says so; fails, naming central (without its password), if
/// central cannot be reached or refuses.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let central = args.central.connect().await?;
    central
        .migrate()
        .await
        .with_context(|| format!("migrating central {}", args.central.shown()))?;
    if args.restored {
        central
            .restored()
            .await
            .with_context(|| format!("marking central {} restored", args.central.shown()))?;
        println!(
            "central {}: marked restored from a backup; it grants no new units until every \
             edge has sent its grants again",
            args.central.shown()
        );
    }
    let (release, edges_from) = central
        .schema_release()
        .await
        .with_context(|| format!("reading central {}'s release", args.central.shown()))?;
    let newer = cart_central::Release::parse(&release) > Some(cart_central::Release::this());
    println!(
        "central {}: its schema is up to date, at release {release}{}; processes of release \
         {edges_from} and later may run against it",
        args.central.shown(),
        if newer {
            format!(
                " (newer than this cart-host {}: left as it is)",
                env!("CARGO_PKG_VERSION")
            )
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
