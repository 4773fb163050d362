//! The commands of `cart-host`.
//!
//! - [`serve`]: run one edge host.
//! - [`sale`]: load sales into the central database.
//! - [`deploy`]: roll a cart component out to edges, one at a time; `activate` a stored one.
//! - [`audit`]: check conservation and exactly-once delivery across central and edges.
//! - [`load`]: drive edges with flash-sale load and report.
//! - [`demo`]: the embedded default: a SQLite central, a sale, two edges.
//! - [`relay`]: apply the edges' outbox stream (NATS JetStream) to central.
//! - [`scale`]: a reference scaler on one machine: edges started and drained by load.
//! - [`rules`]: for authors of cart rules: a new rules crate, and a module checked offline.

pub mod audit;
pub mod backup;
pub mod demo;
pub mod deploy;
pub mod load;
pub mod migrate;
pub mod relay;
pub mod rules;
pub mod sale;
pub mod scale;
pub mod serve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cart_edge::config::CreateRate;
use cart_edge::http_client::HttpClient;

/// What one guest call may use: `serve` runs the rules under these limits, and `rules check`
/// checks a module against them.
#[derive(clap::Args)]
pub struct GuestArgs {
    /// Longest a guest call may run, in milliseconds.
    #[arg(long, env = "CART_GUEST_DEADLINE_MS", default_value_t = 100)]
    guest_deadline_ms: u64,
    /// Most linear memory a guest instance may use, in MiB.
    #[arg(long, env = "CART_GUEST_MEMORY_MIB", default_value_t = 16)]
    guest_memory_mib: usize,
}

impl Default for GuestArgs {
    /// An edge's defaults.
    fn default() -> Self {
        Self {
            guest_deadline_ms: 100,
            guest_memory_mib: 16,
        }
    }
}

impl GuestArgs {
    pub fn limits(&self) -> cart_edge::wasm::SandboxLimits {
        cart_edge::wasm::SandboxLimits {
            deadline: Duration::from_millis(self.guest_deadline_ms),
            memory_bytes: self.guest_memory_mib << 20,
            ..cart_edge::wasm::SandboxLimits::default()
        }
    }
}

/// Whether a long-running process may change central's schema.
#[derive(clap::Args)]
pub struct SchemaArgs {
    /// `migrate`: bring an older central schema up to this release (needs DDL rights). `check`:
    /// never change it; refuse to start against one older than this release (run `cart-host
    /// migrate` first) or one that needs a newer release (README, "Upgrades").
    #[arg(long = "schema", env = "CART_SCHEMA", value_enum, default_value_t = Schema::Migrate)]
    schema: Schema,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Schema {
    Migrate,
    Check,
}

impl SchemaArgs {
    pub fn policy(&self) -> cart_central::SchemaPolicy {
        match self.schema {
            Schema::Migrate => cart_central::SchemaPolicy::Migrate,
            Schema::Check => cart_central::SchemaPolicy::Check,
        }
    }
}

/// Where central is, as every command that reaches it takes it.
#[derive(clap::Args, Clone)]
pub struct CentralArgs {
    /// Central database: sqlite:PATH or postgres://user@host:port/db. PostgreSQL takes libpq's
    /// `sslmode` (disable, allow, prefer (the default), require, verify-ca, verify-full) and
    /// `sslrootcert` (a PEM file, or `system`) in the URL. The password need not be in it: it
    /// comes from --central-password-file, else `PGPASSWORD`, else `PGPASSFILE` or `~/.pgpass`.
    #[arg(long = "central", env = "CART_CENTRAL", hide_env_values = true)]
    url: String,
    /// A file holding central's PostgreSQL password.
    #[arg(long, env = "CART_CENTRAL_PASSWORD_FILE")]
    central_password_file: Option<PathBuf>,
}

impl CentralArgs {
    /// The URL to connect with: the password file's password in it, if one was given. Print
    /// [`Self::shown`], never this.
    pub fn url(&self) -> anyhow::Result<String> {
        match &self.central_password_file {
            None => Ok(self.url.clone()),
            Some(file) => {
                let password = read_secret(file, "central password")?;
                Ok(cart_central::with_password(&self.url, &password)?)
            }
        }
    }

    /// Opens central.
    pub async fn connect(&self) -> anyhow::Result<cart_central::Central> {
        cart_central::Central::connect(&self.url()?)
            .await
            .with_context(|| format!("opening central {}", self.shown()))
    }

    /// The URL as it may be printed: without a password.
    pub fn shown(&self) -> String {
        cart_central::redacted(&self.url)
    }

    /// The same flags, for a process this one starts (the password stays in its file).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--central".into(), self.url.clone().into()];
        if let Some(file) = &self.central_password_file {
            args.extend([
                "--central-password-file".into(),
                file.clone().into_os_string(),
            ]);
        }
        args
    }
}

/// How to reach NATS beyond its URL, as `serve` and `relay` take it.
#[derive(clap::Args)]
pub struct QueueAuthArgs {
    /// PEM roots to check the NATS server's TLS certificate against; TLS is then required (as
    /// with a `tls://` URL, which otherwise checks against the system's roots).
    #[arg(long, env = "CART_QUEUE_CA")]
    queue_ca: Option<PathBuf>,
    /// A NATS user to log in as; the password is in --queue-password-file.
    #[arg(
        long,
        env = "CART_QUEUE_USER",
        requires = "queue_password_file",
        conflicts_with = "queue_creds"
    )]
    queue_user: Option<String>,
    /// A file holding --queue-user's password.
    #[arg(long, env = "CART_QUEUE_PASSWORD_FILE", requires = "queue_user")]
    queue_password_file: Option<PathBuf>,
    /// A NATS credentials file (`.creds`: a user's JWT and its key's seed, as `nsc` writes it
    /// for a server in operator mode, or as NGS and Synadia Cloud hand out).
    #[arg(long, env = "CART_QUEUE_CREDS")]
    queue_creds: Option<PathBuf>,
}

impl QueueAuthArgs {
    pub fn auth(&self) -> anyhow::Result<cart_queue::QueueAuth> {
        let user = match (&self.queue_user, &self.queue_password_file) {
            (Some(user), Some(file)) => Some((user.clone(), read_secret(file, "NATS password")?)),
            _ => None,
        };
        let creds = match &self.queue_creds {
            // Read as it is: the format wants the line ends that trimming would take.
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(anyhow::Error::from)
                    .and_then(|text| Ok(cart_queue::Creds::parse(text)?))
                    .with_context(|| format!("the NATS credentials in {}", file.display()))?,
            ),
            None => None,
        };
        Ok(cart_queue::QueueAuth {
            ca: self.queue_ca.clone(),
            user,
            creds,
        })
    }
}

/// How `serve` uses TLS (see `cart_edge::tls`).
#[derive(clap::Args)]
pub struct ServeTlsArgs {
    /// The edge's certificate chain (PEM, its own certificate first): with it the edge serves
    /// HTTPS only. Read again when the file changes or on SIGHUP, without dropping connections.
    #[arg(long, env = "CART_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "CART_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The fleet's CA (PEM): peers' certificates are checked against it, and a request from a
    /// peer (a forward, a hand-off) is taken only over a connection that presented a
    /// certificate it signed. --tls-cert must then be one it signed, for both server and client
    /// authentication.
    #[arg(long, env = "CART_FLEET_CA", requires = "tls_cert")]
    fleet_ca: Option<PathBuf>,
}

impl ServeTlsArgs {
    /// The same flags, for a process this one starts.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--fleet-ca", &self.fleet_ca),
        ]
        .into_iter()
        .filter_map(|(flag, file)| Some([flag.into(), file.clone()?.into_os_string()]))
        .flatten()
        .collect()
    }

    pub fn files(&self) -> Option<cart_edge::tls::TlsFiles> {
        Some(cart_edge::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            fleet_ca: self.fleet_ca.clone(),
        })
    }
}

/// How the commands that talk to edges check an `https://` edge's certificate.
#[derive(clap::Args)]
pub struct FleetCaArgs {
    /// The CA (PEM) edges' certificates are checked against (default: the system's roots).
    #[arg(long, env = "CART_FLEET_CA")]
    pub fleet_ca: Option<PathBuf>,
}

/// A client for edges whose certificates `fleet_ca` signed (or the system's roots), waiting at
/// most `timeout` for an answer.
pub fn edge_client(fleet_ca: Option<&Path>, timeout: Duration) -> anyhow::Result<HttpClient> {
    HttpClient::trusting(timeout, fleet_ca).context("the fleet CA")
}

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

/// The signal that asked a long-running command to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `SIGINT` (Ctrl-C).
    Interrupt,
    /// `SIGTERM` (an orchestrator, `kill`, `systemctl stop`).
    Terminate,
}

/// A future that resolves on `SIGINT` or `SIGTERM`, saying which. The handlers are installed by
/// this call, not when the future is first polled: a long-running command calls it before
/// anything else, so a signal that arrives while it is still starting (binding, migrating,
/// loading its module) is kept for it rather than killing the process by the signal's default
/// action.
pub fn stop_signal() -> impl Future<Output = Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => Stop::Interrupt,
                    _ = terminate.recv() => Stop::Terminate,
                }
            }
            // No handler could be installed: only Ctrl-C, as best it can.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                Stop::Interrupt
            }
        }
    }
}

/// [`stop_signal`], for a command that ends the same way on either.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let stop = stop_signal();
    async move {
        stop.await;
    }
}
