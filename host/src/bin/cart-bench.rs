//! `cart-bench` (what `make bench` runs): parses its arguments and runs the benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use cart_host::bench::{self, BenchConfig};
use clap::Parser;

/// Measures the edge, a native baseline, `wasmtime serve` and a three-edge PostgreSQL sale in one
/// run on this machine, and writes BENCHMARKS.md.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The cart component.
    #[arg(long, default_value = "target/wasm32-wasip2/release/cart_guest.wasm")]
    module: PathBuf,
    /// The hello-world wasi:http component for `wasmtime serve`.
    #[arg(long, default_value = "target/wasm32-wasip2/release/hello_http.wasm")]
    hello: PathBuf,
    /// The wasmtime CLI (skipped when missing).
    #[arg(long, default_value = "wasmtime")]
    wasmtime: PathBuf,
    /// Seconds per measured step.
    #[arg(long, default_value_t = 8.0)]
    step_secs: f64,
    /// Folder for reports, plots and databases.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Where to write the summary.
    #[arg(long, default_value = "BENCHMARKS.md")]
    summary: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let host_bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("cart-host")))
        .unwrap_or_else(|| PathBuf::from("target/release/cart-host"));
    let wasmtime = which(&args.wasmtime);
    let hello = match (args.hello.exists(), wasmtime) {
        (true, Some(w)) => Some((args.hello.clone(), w)),
        _ => {
            eprintln!("no wasmtime CLI or hello component: skipping the runtime anchor");
            None
        }
    };
    let config = BenchConfig {
        out_dir: args.out,
        host_bin,
        module: args.module,
        hello,
        step_secs: args.step_secs,
        summary: args.summary,
        command: "make bench".into(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench::run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
