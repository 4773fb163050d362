//! `cart-bench` (what `make bench` runs): runs the benchmark suite, or serves one edge on the
//! natively compiled rules for the suite to measure (`cart-bench edge`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cart_bench::harness::BenchConfig;
use cart_bench::native::NativeRules;
use cart_bench::suite;
use cart_edge::config::CreateRate;
use cart_edge::edge::{EdgeConfig, ModuleBytes};
use cart_edge::rules::FixedRules;
use clap::{Args, Parser, Subcommand};

/// Measures the edge, a native baseline, `wasmtime serve` and a three-edge PostgreSQL sale in
/// one run on this machine, and writes BENCHMARKS.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    suite: SuiteArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one edge deciding carts with the rules compiled into this binary: the baseline.
    Edge(EdgeArgs),
    /// Only what the operator dashboard costs an edge (a part of the suite), printed rather
    /// than written to BENCHMARKS.md: for measuring a change to it before and after.
    Watching,
    /// Only the scaling run (a part of the suite): the noon sale through `cart-host scale`,
    /// printed rather than written to BENCHMARKS.md.
    Scaling,
    /// Only the drain under load (a part of the suite), printed.
    Draining,
    /// Only the edge, the native rules and both hello worlds under wrk, CPU time per update and
    /// reads during updates (a part of the suite), printed.
    Speed,
    /// Only the component's edge under wrk, on every core and on one: for measuring a change to
    /// the edge before and after.
    SpeedEdge,
    /// Only the component's edge's cart reads while updates run: for measuring a change to the
    /// read path before and after.
    SpeedReads,
    /// Only the rules call on its own, in a fresh instance and natively (a part of the suite),
    /// printed.
    Budget {
        /// Calls per round.
        #[arg(long, default_value_t = cart_bench::budget::CALLS)]
        calls: u32,
    },
    /// Serve a plain hyper hello world: the HTTP anchor the suite measures beside the edge.
    Hello {
        #[arg(long)]
        listen: String,
    },
    /// Only the long randomized fault run (a part of the suite), printed.
    Faults,
    /// Only the edges against the central-database cart with central 80 ms away (a part of
    /// the suite), printed.
    Wan,
    /// Only the thirty daily sales with and without retention, and the database sizes after
    /// each (a part of the suite), printed.
    Days,
    /// Only the three-edge noon sale on PostgreSQL at rising peaks, until one is not sustained
    /// (a part of the suite), printed.
    Noon,
    /// Draw a `cart-host load --report` file: latency over time, as an SVG.
    Plot {
        /// The report (JSON) `cart-host load --report` wrote.
        #[arg(long)]
        report: PathBuf,
        /// Where to write the plot.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The suite's flags: before or after the part's name (`cart-bench speed --hello ...`).
#[derive(Args)]
struct SuiteArgs {
    /// The cart component.
    #[arg(
        long,
        global = true,
        default_value = "target/wasm32-wasip2/release/cart_guest.wasm"
    )]
    module: PathBuf,
    /// The hello-world wasi:http component for `wasmtime serve`.
    #[arg(
        long,
        global = true,
        default_value = "target/wasm32-wasip2/release/hello_http.wasm"
    )]
    hello: PathBuf,
    /// The wasmtime CLI (skipped when missing).
    #[arg(long, global = true, default_value = "wasmtime")]
    wasmtime: PathBuf,
    /// Seconds per measured step.
    #[arg(long, global = true, default_value_t = 8.0)]
    step_secs: f64,
    /// Folder for reports, plots and databases.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
    /// Where to write the summary.
    #[arg(long, global = true, default_value = "BENCHMARKS.md")]
    summary: PathBuf,
}

#[derive(Args)]
struct EdgeArgs {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    edge_id: String,
    #[arg(long)]
    central: String,
    /// The component stored as the edge's module (its rules are not called).
    #[arg(long)]
    module: PathBuf,
    #[arg(long)]
    admin_token_file: PathBuf,
}

/// One part of the suite on its own: measured, and its section printed rather than written to
/// BENCHMARKS.md.
macro_rules! part {
    ($suite:expr, $module:ident :: $run:ident, $_m:ident :: $summary:ident) => {
        async {
            let cfg = suite_config($suite);
            std::fs::create_dir_all(&cfg.out_dir)?;
            let measured = cart_bench::$module::$run(&cfg).await?;
            let mut text = String::new();
            cart_bench::$module::$summary(&mut text, &measured);
            println!("{text}");
            anyhow::Ok(())
        }
    };
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CART_LOG")
                .unwrap_or_else(|_| "info,refinery_core=warn,tokio_postgres=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour for a terminal, not for a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Some(Command::Edge(args)) => runtime.block_on(native_edge(args)),
        Some(Command::Watching) => {
            runtime.block_on(part!(cli.suite, watching::compare, watching::summary))
        }
        Some(Command::Scaling) => {
            runtime.block_on(part!(cli.suite, scaling::run, scaling::summary))
        }
        Some(Command::Draining) => {
            runtime.block_on(part!(cli.suite, draining::run, draining::summary))
        }
        Some(Command::Speed) => runtime.block_on(part!(cli.suite, speed::run, speed::summary)),
        Some(Command::SpeedEdge) => runtime.block_on(async {
            let cfg = suite_config(cli.suite);
            std::fs::create_dir_all(&cfg.out_dir)?;
            cart_bench::speed::component_updates(&cfg).await.map(drop)
        }),
        Some(Command::SpeedReads) => runtime.block_on(async {
            let cfg = suite_config(cli.suite);
            std::fs::create_dir_all(&cfg.out_dir)?;
            cart_bench::speed::component_reads(&cfg).await.map(drop)
        }),
        Some(Command::Budget { calls }) => {
            cart_bench::budget::run(&cli.suite.module, calls).map(|b| {
                let mut text = String::new();
                cart_bench::budget::summary(&mut text, &b);
                println!("{text}");
            })
        }
        Some(Command::Hello { listen }) => runtime.block_on(async {
            cart_bench::hello::serve(tokio::net::TcpListener::bind(&listen).await?).await
        }),
        Some(Command::Faults) => runtime.block_on(part!(cli.suite, faults::run, faults::summary)),
        Some(Command::Wan) => runtime.block_on(part!(cli.suite, wan::run, wan::summary)),
        Some(Command::Noon) => {
            runtime.block_on(part!(cli.suite, suite::noon, suite::peaks_summary))
        }
        Some(Command::Days) => runtime.block_on(part!(cli.suite, days::run, days::summary)),
        Some(Command::Plot { report, out }) => cart_bench::plot::read_and_draw(&report, &out),
        None => runtime.block_on(suite::run(&suite_config(cli.suite))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn suite_config(args: SuiteArgs) -> BenchConfig {
    let bench_bin = std::env::current_exe().unwrap_or_else(|_| "target/release/cart-bench".into());
    let host_bin = bench_bin
        .parent()
        .map(|d| d.join("cart-host"))
        .unwrap_or_else(|| PathBuf::from("target/release/cart-host"));
    let hello = match (args.hello.exists(), which(&args.wasmtime)) {
        (true, Some(w)) => Some((args.hello.clone(), w)),
        _ => {
            eprintln!("no wasmtime CLI or hello component: skipping the runtime anchor");
            None
        }
    };
    BenchConfig {
        out_dir: args.out,
        host_bin,
        bench_bin,
        module: args.module,
        hello,
        step_secs: args.step_secs,
        summary: args.summary,
        command: "make bench".into(),
    }
}

/// An edge on the native rules, until Ctrl-C or SIGTERM.
async fn native_edge(args: EdgeArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.admin_token_file)?;
    let config = EdgeConfig {
        edge_id: args.edge_id,
        data_dir: args.data,
        central_url: args.central,
        module: ModuleBytes::read(&args.module)?,
        admin_token: Some(token.trim().to_owned()),
        fixed_rules: Some(FixedRules(Arc::new(NativeRules))),
        // The load generator makes every cart from one address.
        create_rate: CreateRate::UNLIMITED,
        ..EdgeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    cart_edge::server::run(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
        cart_edge::server::Ending::Drain
    })
    .await
}

/// The program's path, looked up on PATH when it is a bare name.
fn which(program: &std::path::Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.exists().then(|| program.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
