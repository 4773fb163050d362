//! `cart-host`: parses the command line and runs the command (see the library's `commands`).

use std::process::ExitCode;

use cart_host::commands::{
    audit, backup, demo, deploy, load, migrate, relay, rules, sale, scale, serve,
};
use clap::{Parser, Subcommand};

/// The flash-sale edge host: serves carts from a WebAssembly component, syncs with central.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text`, coloured on a terminal only, or `json`, one
    /// object a line (timestamp, level, target, message, and the edge and request they are
    /// about) for a log collector. What is logged is set by `CART_LOG` (`info` by default;
    /// `debug`, or per module: `info,cart_edge::sync=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CART_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one edge host.
    Serve(Box<serve::ServeArgs>),
    /// Bring central's schema up to this release, and exit: once before a rollout (a Kubernetes
    /// Job), so that no edge needs to change the schema as it starts.
    Migrate(migrate::MigrateArgs),
    /// Manage sales in the central database.
    #[command(subcommand)]
    Sale(sale::SaleCommand),
    /// For authors of cart rules: start a crate of one's own rules, check a module offline, test
    /// it against the rules every module keeps, compare two modules' decisions.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Deploy a cart component to edges, one after another; stop at the first failure.
    Deploy(deploy::DeployArgs),
    /// Make a stored module version active on every edge of the fleet, one after another (a
    /// rollback, or forward again); stop at the first failure.
    Activate(deploy::ActivateArgs),
    /// Check conservation of stock and exactly-once delivery across central and edges.
    Audit(audit::AuditArgs),
    /// Write a consistent copy of a running edge's database (or of a SQLite central).
    Backup(backup::BackupArgs),
    /// Drive edges with flash-sale load at a set rate; report latency, throughput, errors.
    Load(load::LoadArgs),
    /// Apply the edges' outbox stream (NATS JetStream) to central, exactly once.
    Relay(relay::RelayArgs),
    /// Run the embedded demo: a SQLite central, a sale starting now, two edges on localhost.
    Demo(demo::DemoArgs),
    /// Run a fleet that grows and shrinks with its load, behind one address (a reference
    /// scaler on one machine: it starts edges and drains them with SIGTERM).
    Scale(scale::ScaleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CART_LOG")
                .unwrap_or_else(|_| "info,refinery_core=warn,tokio_postgres=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colour for a terminal, not for a file or a pipe.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The message at the top level; the spans it happened in (`edge` with its id,
        // `request` with its id) as a list.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Sale(command) => sale::run(command).await,
            Command::Rules(command) => rules::run(command).await,
            Command::Deploy(args) => deploy::run_command(args).await,
            Command::Activate(args) => deploy::activate_command(args).await,
            Command::Audit(args) => audit::run_command(args).await,
            Command::Backup(args) => backup::run(args),
            Command::Load(args) => load::run(args).await,
            Command::Demo(args) => demo::run_command(args).await,
            Command::Relay(args) => relay::run(args).await,
            Command::Scale(args) => scale::run(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // What ended the command, as the log's other lines are: a collector reading JSON
            // sees why an edge would not start (a crash loop's one clue).
            match log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
