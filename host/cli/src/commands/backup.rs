//! `cart-host backup`: a consistent copy of a running edge's database, or of a SQLite central,
//! taken without stopping it (README, "Backups and restores").

use std::path::PathBuf;
use std::process::ExitCode;

use cart_edge::store::db;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The edge's data folder (`serve --data`): its database is copied, while it runs.
    #[arg(
        long,
        env = "CART_DATA",
        conflicts_with = "central",
        required_unless_present = "central"
    )]
    data: Option<PathBuf>,
    /// A SQLite central (`sqlite:PATH`) to copy instead. A PostgreSQL central is backed up with
    /// PostgreSQL's own tools: `pg_dump -Fc`, or continuous archiving.
    #[arg(long)]
    central: Option<String>,
    /// The file to write. It must not exist; it appears only once the copy is complete and
    /// checked.
    #[arg(long)]
    to: PathBuf,
}

/// Copies the database and says what it wrote.
pub fn run(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let (what, from) = match (&args.data, &args.central) {
        (Some(dir), _) => (
            format!("the edge database in {}", dir.display()),
            dir.join(db::FILE_NAME),
        ),
        (None, Some(url)) => {
            let Some(path) = url.strip_prefix("sqlite:") else {
                anyhow::bail!(
                    "central {} is PostgreSQL: back it up with `pg_dump -Fc` or continuous \
                     archiving, and restore it with `pg_restore --single-transaction` (README, \
                     \"Backups and restores\")",
                    cart_central::redacted(url)
                );
            };
            (format!("central {url}"), PathBuf::from(path))
        }
        (None, None) => anyhow::bail!("name the edge's --data folder or a --central to copy"),
    };
    let copy = db::backup(&from, &args.to)?;
    println!(
        "{what}: copied to {} ({} pages, {} bytes), as of one transaction, and checked whole",
        args.to.display(),
        copy.pages,
        copy.bytes
    );
    Ok(ExitCode::SUCCESS)
}
