//! `cart-host`: parses the command line (every flag also from `CART_*` variables) and calls the
//! library. Nothing else lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cart_host::central::Central;
use cart_host::edge::EdgeConfig;
use cart_host::rules::FixedRules;
use cart_host::sale::Sale;
use cart_host::wasm::SandboxLimits;
use cart_host::{audit, demo, deploy, load, server};
use clap::{Args, Parser, Subcommand};

/// The flash-sale edge host: serves carts from a WebAssembly component, syncs with central.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one edge host.
    Serve(ServeArgs),
    /// Manage sales in the central database.
    #[command(subcommand)]
    Sale(SaleCommand),
    /// Deploy a cart component to edges, one after another; stop at the first failure.
    Deploy(DeployArgs),
    /// Check conservation of stock and exactly-once delivery across central and edges.
    Audit(AuditArgs),
    /// Drive edges with flash-sale load at a set rate; report latency, throughput, errors.
    Load(LoadArgs),
    /// Run the embedded demo: a SQLite central, a sale starting now, two edges on localhost.
    Demo(DemoArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CART_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Folder for this edge's SQLite database.
    #[arg(long, env = "CART_DATA")]
    data: PathBuf,
    /// This edge's id, unique in the fleet.
    #[arg(long, env = "CART_EDGE_ID")]
    edge_id: String,
    /// Central database: sqlite:PATH or postgres://user@host:port/db.
    #[arg(long, env = "CART_CENTRAL")]
    central: String,
    /// The cart component to run while the edge has none stored.
    #[arg(long, env = "CART_MODULE")]
    module: PathBuf,
    /// File holding the operator token; without it the operator API answers 403.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The URL central records for this edge (default: http:// and the listen address).
    #[arg(long, env = "CART_PUBLIC_URL")]
    public_url: Option<String>,
    /// Longest a guest call may run, in milliseconds.
    #[arg(long, env = "CART_GUEST_DEADLINE_MS", default_value_t = 100)]
    guest_deadline_ms: u64,
    /// Most linear memory a guest instance may use, in MiB.
    #[arg(long, env = "CART_GUEST_MEMORY_MIB", default_value_t = 16)]
    guest_memory_mib: usize,
    /// Benchmarks only: run the cart rules compiled into this binary instead of the module.
    #[arg(long, env = "CART_NATIVE_BASELINE")]
    native_baseline: bool,
    /// An ed25519 public key (SPKI PEM); with any, only modules signed by one are deployed.
    #[arg(long = "trusted-key", env = "CART_TRUSTED_KEYS", value_delimiter = ',')]
    trusted_keys: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum SaleCommand {
    /// Create the central schema if needed and load a sale file.
    Load {
        /// Central database: sqlite:PATH or postgres://user@host:port/db.
        #[arg(long, env = "CART_CENTRAL")]
        central: String,
        /// The sale file (JSON; see schema/sale.schema.json).
        file: PathBuf,
    },
}

#[derive(Args)]
struct DeployArgs {
    /// The component to deploy.
    #[arg(long, env = "CART_MODULE")]
    module: PathBuf,
    /// An edge's URL; repeat for each, in the order to deploy.
    #[arg(
        long = "edge",
        env = "CART_EDGES",
        value_delimiter = ',',
        required = true
    )]
    edges: Vec<String>,
    /// File holding the operator token the edges accept.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// ed25519 private key (PKCS#8 PEM) to sign the module with.
    #[arg(long, env = "CART_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Version to deploy as (default: the first 12 hex digits of the module's sha256).
    #[arg(long, env = "CART_MODULE_VERSION")]
    version: Option<String>,
}

#[derive(Args)]
struct AuditArgs {
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

#[derive(Args)]
struct LoadArgs {
    /// An edge's URL; repeat for each (for `get`, the full URL to fetch).
    #[arg(
        long = "edge",
        env = "CART_EDGES",
        value_delimiter = ',',
        required = true
    )]
    edges: Vec<String>,
    /// What each arrival does.
    #[arg(long, value_enum, default_value = "updates")]
    scenario: load::Scenario,
    /// Arrivals per second (at the peak of the curve).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// How the rate moves over the run.
    #[arg(long, value_enum, default_value = "flat")]
    curve: load::Curve,
    /// `updates`: carts to spread the updates over.
    #[arg(long, default_value_t = 2000)]
    carts: usize,
    /// SKUs to use (default: the first for `updates`, all for `sale`).
    #[arg(long = "sku", value_delimiter = ',')]
    skus: Vec<String>,
    /// Operator token file, to read sell-through from the edges.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Write the full report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write a latency-over-time plot (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    /// Folder for the demo's databases; emptied of an earlier demo first.
    #[arg(long, env = "CART_DATA", default_value = "data")]
    data: PathBuf,
    /// The cart component.
    #[arg(long, env = "CART_MODULE", default_value = demo::DEFAULT_MODULE)]
    module: PathBuf,
    /// Port of the first edge; the second listens on the next one.
    #[arg(long, env = "CART_DEMO_PORT", default_value_t = 8081)]
    port: u16,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CART_LOG")
                .unwrap_or_else(|_| "info,refinery_core=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        Command::Sale(SaleCommand::Load { central, file }) => {
            load_sale(&central, &file).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Deploy(args) => {
            use std::io::IsTerminal as _;
            let report = deploy::run(&deploy::DeployConfig {
                module: args.module,
                edges: args.edges,
                admin_token: read_token(args.admin_token_file.as_deref())?,
                signing_key: args.signing_key,
                version: args.version,
                progress: std::io::stderr().is_terminal(),
            })
            .await?;
            print!("{report}");
            Ok(if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Audit(args) => {
            let token = read_token(args.admin_token_file.as_deref())?;
            let report = audit::run(&audit::AuditConfig {
                central: args.central,
                edges: args.edges,
                admin_token: token,
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
        Command::Load(args) => {
            use std::io::IsTerminal as _;
            let report = load::run(load::LoadConfig {
                edges: args.edges,
                scenario: args.scenario,
                rate: args.rate,
                duration: Duration::from_secs_f64(args.duration),
                curve: args.curve,
                carts: args.carts,
                skus: args.skus,
                admin_token: read_token(args.admin_token_file.as_deref())?,
                progress: std::io::stderr().is_terminal(),
                ..load::LoadConfig::default()
            })
            .await?;
            print!("{report}");
            if let Some(path) = &args.report {
                load::write_json(&report, path)?;
            }
            if let Some(path) = &args.plot {
                load::write_plot(&report, path)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => demo::run(
            &demo::DemoConfig {
                data_dir: args.data,
                module: args.module,
                port: args.port,
            },
            shutdown_signal(),
        )
        .await
        .map(|()| ExitCode::SUCCESS),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let trusted_keys = args
        .trusted_keys
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            cart_host::modules::read_public_key(&pem)
                .with_context(|| format!("trusted key {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = EdgeConfig {
        trusted_keys,
        edge_id: args.edge_id,
        data_dir: args.data,
        central_url: args.central,
        module: args.module,
        admin_token: read_token(args.admin_token_file.as_deref())?,
        public_url: args.public_url,
        sandbox: SandboxLimits {
            deadline: Duration::from_millis(args.guest_deadline_ms),
            memory_bytes: args.guest_memory_mib << 20,
        },
        fixed_rules: args
            .native_baseline
            .then(|| FixedRules(std::sync::Arc::new(cart_host::native::NativeRules))),
        ..EdgeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    server::run(listener, config, shutdown_signal()).await
}

async fn load_sale(central: &str, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let sale = Sale::parse(&text).with_context(|| format!("refusing {}", file.display()))?;
    let db = Central::connect(central).await?;
    db.load_sale(&sale).await?;
    let units: u64 = sale.skus.iter().map(|s| u64::from(s.stock_total)).sum();
    println!(
        "loaded sale {} ({} SKUs, {units} units) into {central}",
        sale.sale_id,
        sale.skus.len()
    );
    Ok(())
}

fn read_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(file) = file else { return Ok(None) };
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("reading the admin token {}", file.display()))?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the admin token file {} is empty",
        file.display()
    );
    Ok(Some(token.to_owned()))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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
