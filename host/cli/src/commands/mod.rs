//! The commands of `cart-host`.
//!
//! - [`serve`]: run one edge host.
//! - [`sale`]: load sales into the central database.
//! - [`deploy`]: roll a cart component out to edges, one at a time.
//! - [`audit`]: check conservation and exactly-once delivery across central and edges.
//! - [`load`]: drive edges with flash-sale load and report.
//! - [`demo`]: the embedded default: a SQLite central, a sale, two edges.
//! - [`relay`]: apply the edges' outbox stream (NATS JetStream) to central.
//! - [`scale`]: a reference scaler on one machine: edges started and drained by load.

pub mod audit;
pub mod demo;
pub mod deploy;
pub mod load;
pub mod relay;
pub mod sale;
pub mod scale;
pub mod serve;

use std::path::Path;

use anyhow::Context as _;
use cart_edge::config::CreateRate;

/// What an edge's door allows one client address, as `serve` and `demo` take it.
#[derive(clap::Args)]
pub struct DoorArgs {
    /// New carts one client address may make per second, on average (0: no limit, as for
    /// `cart-host load`); over it, `429` with `Retry-After`.
    #[arg(long, env = "CART_CREATE_RATE", default_value_t = CreateRate::default().per_second)]
    create_rate: u32,
    /// New carts one client address may make at once, before the rate applies.
    #[arg(long, env = "CART_CREATE_BURST", default_value_t = CreateRate::default().burst)]
    create_burst: u32,
    /// Failed operator logins one client address may make a minute; past it, the address is
    /// refused for a minute, right token or not (0: no limit). Each failure costs a quarter
    /// second besides.
    #[arg(long, env = "CART_FAILED_LOGINS_PER_MINUTE", default_value_t = 10)]
    pub failed_logins_per_minute: u32,
}

impl DoorArgs {
    pub fn create_rate(&self) -> CreateRate {
        CreateRate {
            per_second: self.create_rate,
            burst: self.create_burst,
        }
    }
}

/// Reads a secret from a file: its text, trimmed, must not be empty.
pub fn read_secret(file: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the {what} {}", file.display()))?;
    let secret = text.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "the {what} file {} is empty",
        file.display()
    );
    Ok(secret.to_owned())
}

/// The shortest operator token an edge takes: one a guesser cannot find.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// The operator token from `--admin-token-file`, if one was given.
pub fn admin_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = file.map(|f| read_secret(f, "admin token")).transpose()?;
    if let (Some(token), Some(file)) = (&token, file) {
        anyhow::ensure!(
            token.chars().count() >= MIN_ADMIN_TOKEN,
            "the admin token in {} is {} characters: an operator token has at least \
             {MIN_ADMIN_TOKEN} (`openssl rand -hex 16` makes one)",
            file.display(),
            token.chars().count()
        );
    }
    Ok(token)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
