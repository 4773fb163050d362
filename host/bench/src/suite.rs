//! `make bench` (the `cart-bench` binary): one run on one machine of the edge's sustained rate of
//! durable cart updates and its latency at fixed rates, the same rules compiled natively as a
//! baseline, `wasmtime serve` with a hello-world component as the runtime anchor, the same
//! servers and a plain hyper hello world under wrk with the edge's CPU and writer time per update
//! ([`speed`]), the rules call on its own ([`budget`]), a three-edge sale against PostgreSQL, and
//! that sale on ten edges with direct and queued delivery ([`delivery`]), what watching the rush
//! on the dashboard costs ([`watching`]), and a drain under load ([`draining`]) and the noon sale
//! through a fleet that grows and drains with it ([`scaling`]), and thirty daily sales with and
//! without retention ([`days`]); results in `BENCHMARKS.md`,
//! reports and plots beside.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::Command;

use crate::harness::{
    BenchConfig, Edge, GOALS_HEAD, Rules, TABLE_HEAD, TOKEN, audit, goal, measure, noon_sale,
    postgres_with_sale, row, two_edges, updates_fleet, wait_healthy,
};
use crate::{budget, days, delivery, draining, faults, scaling, speed, wan, watching, wrk};
use cart_central::time::{rfc3339, wall_ms};
use cart_edge::http_client::HttpClient;
use cart_load::{self as load, LoadConfig, LoadReport, Scenario};

/// Fixed rates at which latency is reported.
const FIXED_RATES: [f64; 3] = [2_000.0, 5_000.0, 10_000.0];
/// Rates tried, in order, for the highest sustained one.
const RAMP: [f64; 16] = [
    1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0, 7_000.0, 8_000.0, 9_000.0, 10_000.0,
    12_000.0, 14_000.0, 16_000.0, 20_000.0, 25_000.0, 30_000.0,
];
/// A step is sustained when it is answered at 95% of its rate, without errors, with p99 at
/// most the design's response budget.
const BUDGET_MS: f64 = 250.0;

/// Peaks of the noon sale tried, in order, for the highest one the three-edge fleet sustains.
const NOON_PEAKS: [f64; 5] = [1_500.0, 3_000.0, 4_500.0, 6_000.0, 8_000.0];
/// Answers a sale gives by design (its stock is gone, a customer's limit is reached): not
/// failures.
const BUSINESS_ANSWERS: [&str; 2] = ["sold_out", "limit_exceeded"];

/// Everything after this line of BENCHMARKS.md is written by hand and kept across runs.
const KEPT: &str = "<!-- Written by hand below this line; `make bench` keeps it. -->";

fn sustained(r: &LoadReport) -> bool {
    r.throughput >= 0.95 * r.target_rate && r.errors_total() == 0 && r.latency_ms.p99 <= BUDGET_MS
}

/// The ramp's outcome: the highest sustained step, and the first one that was not.
struct Ramp {
    best: Option<LoadReport>,
    failed: Option<LoadReport>,
}

/// Steps up the rate (skipping steps below `from`) until a step is not sustained.
async fn highest_sustained(
    cfg: &BenchConfig,
    name: &str,
    base: &LoadConfig,
    from: f64,
) -> anyhow::Result<Ramp> {
    let mut ramp = Ramp {
        best: None,
        failed: None,
    };
    for rate in RAMP.into_iter().filter(|r| *r >= from) {
        let step = LoadConfig {
            rate,
            ..base.clone()
        };
        let report = measure(cfg, &format!("{name}-{rate:.0}"), step).await?;
        if !sustained(&report) {
            ramp.failed = Some(report);
            break;
        }
        ramp.best = Some(report);
    }
    Ok(ramp)
}

/// A cart update answered by the edge it reached, and one forwarded there by another edge.
struct Forwarding {
    local: LoadReport,
    forwarded: LoadReport,
}

/// Rate of the forwarding comparison: well below either edge's limit, so that the difference
/// is the hop, not a queue.
const FORWARDING_RATE: f64 = 1_000.0;

/// Two edges of one fleet; the same updates of edge-1's carts sent to edge-1, then to edge-2,
/// which forwards each to edge-1.
async fn forwarding(cfg: &BenchConfig) -> anyhow::Result<Forwarding> {
    let (one, two) = two_edges(cfg, "forwarding").await?;
    let base = LoadConfig {
        edges: vec![one.url.clone()],
        scenario: Scenario::Updates,
        rate: FORWARDING_RATE,
        duration: Duration::from_secs_f64(cfg.step_secs),
        ..LoadConfig::default()
    };
    load::run(LoadConfig {
        duration: Duration::from_secs(3),
        via: Some(two.url.clone()),
        ..base.clone()
    })
    .await?;
    let local = measure(cfg, "forwarding-local", base.clone()).await?;
    let forwarded = measure(
        cfg,
        "forwarding-forwarded",
        LoadConfig {
            via: Some(two.url.clone()),
            ..base
        },
    )
    .await?;
    Ok(Forwarding { local, forwarded })
}

/// What one system under test did.
struct Measured {
    fixed: Vec<LoadReport>,
    max: Ramp,
}

async fn cart_updates(cfg: &BenchConfig, name: &str, rules: Rules) -> anyhow::Result<Measured> {
    let (dir, central) = updates_fleet(cfg, name).await?;
    let edge = Edge::start(cfg, &dir, "edge-1", &central, rules, &[]).await?;
    let base = LoadConfig {
        edges: vec![edge.url.clone()],
        scenario: Scenario::Updates,
        duration: Duration::from_secs_f64(cfg.step_secs),
        ..LoadConfig::default()
    };
    // Warm up: compile caches, SQLite pages, connection pools.
    load::run(LoadConfig {
        rate: 2_000.0,
        duration: Duration::from_secs(3),
        ..base.clone()
    })
    .await?;
    let mut fixed = Vec::new();
    for rate in FIXED_RATES {
        fixed.push(
            measure(
                cfg,
                &format!("{name}-fixed-{rate:.0}"),
                LoadConfig {
                    rate,
                    ..base.clone()
                },
            )
            .await?,
        );
    }
    // Start the ramp at the highest fixed rate that was sustained.
    let from = fixed
        .iter()
        .filter(|r| sustained(r))
        .map(|r| r.target_rate)
        .fold(1_000.0, f64::max);
    let max = highest_sustained(cfg, &format!("{name}-ramp"), &base, from).await?;
    drop(edge);
    Ok(Measured { fixed, max })
}

async fn wasmtime_hello(cfg: &BenchConfig) -> anyhow::Result<Option<Ramp>> {
    let Some((hello, wasmtime)) = &cfg.hello else {
        return Ok(None);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = Command::new(wasmtime)
        .args([
            "serve",
            "-S",
            "cli=y",
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg(hello)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", wasmtime.display()))?;
    let url = format!("http://127.0.0.1:{port}/");
    wait_healthy(&url).await?;
    let base = LoadConfig {
        edges: vec![url],
        scenario: Scenario::Get,
        duration: Duration::from_secs_f64(cfg.step_secs),
        ..LoadConfig::default()
    };
    load::run(LoadConfig {
        rate: 2_000.0,
        duration: Duration::from_secs(2),
        ..base.clone()
    })
    .await?;
    highest_sustained(cfg, "wasmtime-serve-hello", &base, 1_000.0)
        .await
        .map(Some)
}

/// A noon sale is sustained when its answers are in the response budget at p99 and none failed
/// (a sold-out or a limit is an answer).
fn sale_sustained(r: &LoadReport) -> bool {
    r.latency_ms.p99 <= BUDGET_MS
        && r.errors
            .keys()
            .all(|code| BUSINESS_ANSWERS.contains(&code.as_str()))
}

/// CPU time the parts of a fleet on this machine used: what a shopper costs, and where.
#[derive(Clone, Copy, Default)]
struct FleetCpu {
    edges: Duration,
    postgres: Duration,
    /// This process: the load generator (and the bench's sampling of the edges).
    generator: Duration,
    /// Every process on the machine, from `/proc/stat`, the kernel's interrupts included.
    machine: Duration,
    /// The time it was measured over.
    wall: Duration,
}

impl FleetCpu {
    /// The CPU time used so far by the edges `edge_pids`, every PostgreSQL process, this
    /// process and the whole machine.
    fn now(edge_pids: &[u32]) -> anyhow::Result<Self> {
        let postgres = std::fs::read_dir("/proc")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "postgres")
            });
        Ok(Self {
            edges: cpu_of(edge_pids.iter().copied()),
            postgres: cpu_of(postgres),
            generator: wrk::cpu_time(std::process::id())?,
            machine: machine_busy()?,
            wall: Duration::ZERO,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            edges: self.edges.saturating_sub(before.edges),
            postgres: self.postgres.saturating_sub(before.postgres),
            generator: self.generator.saturating_sub(before.generator),
            machine: self.machine.saturating_sub(before.machine),
            wall: self.wall,
        }
    }
}

/// CPU time the processes `pids` have used so far; one that has exited counts for none.
fn cpu_of(pids: impl Iterator<Item = u32>) -> Duration {
    pids.filter_map(|pid| wrk::cpu_time(pid).ok()).sum()
}

/// CPU time the whole machine has been busy (all but idle and I/O wait), from `/proc/stat`.
fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .context("/proc/stat is empty")?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal, then guest time, which user counts.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4))
        .map(|(_, t)| t)
        .sum();
    Ok(Duration::from_secs_f64(busy as f64 / wrk::clock_ticks()))
}

/// The three-edge sale against PostgreSQL, and how far behind central the outboxes got.
struct FleetRun {
    report: LoadReport,
    /// What the sale cost the machine's CPU, while it ran.
    cpu: FleetCpu,
    max_sync_lag_ms: i64,
    drained_after: Duration,
    audit: String,
    postgres: String,
}

/// The noon sale on three fresh edges and a fresh PostgreSQL, shoppers arriving at up to `peak`
/// a second.
async fn fleet_sale(cfg: &BenchConfig, peak: f64) -> anyhow::Result<FleetRun> {
    let dir = cfg.out_dir.join("fleet");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (pg, central) = postgres_with_sale().await?;
    let mut edges = Vec::new();
    for id in ["edge-1", "edge-2", "edge-3"] {
        edges.push(Edge::start(cfg, &dir, id, &central, Rules::Component, &[]).await?);
    }
    let urls: Vec<String> = edges.iter().map(|e| e.url.clone()).collect();
    let client = HttpClient::default();
    let worst_lag = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (client, urls, worst) = (client.clone(), urls.clone(), Arc::clone(&worst_lag));
        tokio::spawn(async move {
            loop {
                for u in &urls {
                    if let Ok(r) = client.get(&format!("{u}/admin/status"), Some(TOKEN)).await
                        && let Ok(v) = r.json()
                    {
                        worst.fetch_max(v["sync_lag_ms"].as_i64().unwrap_or(0), Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let sale = noon_sale(cfg, &urls);
    let name = if peak == sale.rate {
        "fleet-sale-postgres".to_owned()
    } else {
        format!("fleet-sale-postgres-{peak:.0}")
    };
    let sale = LoadConfig { rate: peak, ..sale };
    let pids = edges
        .iter()
        .map(Edge::pid)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (before, started) = (FleetCpu::now(&pids)?, Instant::now());
    let report = measure(cfg, &name, sale).await?;
    let cpu = FleetCpu {
        wall: started.elapsed(),
        ..FleetCpu::now(&pids)?.since(before)
    };
    let ended = Instant::now();
    let audit = audit(cfg, &central, &dir, &urls).await?;
    let drained_after = ended.elapsed();
    sampler.abort();
    let max_sync_lag_ms = worst_lag.load(Ordering::Relaxed);
    drop(edges);
    Ok(FleetRun {
        report,
        cpu,
        max_sync_lag_ms,
        drained_after,
        audit,
        postgres: pg.version(),
    })
}

pub async fn run(cfg: &BenchConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.out_dir)?;
    eprintln!("edge (WebAssembly component)");
    let wasm = cart_updates(cfg, "edge-wasm", Rules::Component).await?;
    eprintln!("edge (rules compiled natively, no WebAssembly)");
    let native = cart_updates(cfg, "edge-native", Rules::Native).await?;
    eprintln!("wasmtime serve, hello world");
    let hello = wasmtime_hello(cfg).await?;
    eprintln!("under wrk: the edge, the native rules, two hello worlds; reads during updates");
    let under_wrk = speed::run(cfg).await?;
    eprintln!("the rules call on its own");
    let rules_call = budget::run(&cfg.module, budget::CALLS)?;
    eprintln!("an update forwarded by another edge against one sent to the cart's edge");
    let forwarding = forwarding(cfg).await?;
    eprintln!(
        "three edges, PostgreSQL, a noon sale, then at higher peaks until one is not sustained"
    );
    let noon = noon(cfg).await?;
    eprintln!(
        "{} edges, PostgreSQL, the noon sale: outboxes direct, then through NATS JetStream",
        delivery::EDGES
    );
    let delivery = delivery::compare(cfg).await?;
    eprintln!("what the operator dashboard costs an edge");
    let watching = watching::compare(cfg).await?;
    eprintln!(
        "a drain under load: {} shoppers' carts move to the other edges",
        draining::SHOPPERS
    );
    let drained = draining::run(cfg).await?;
    eprintln!("the noon sale through cart-host scale: edges started and drained by load");
    let scaling = scaling::run(cfg).await?;
    eprintln!(
        "far from central: edges against the central-database cart, {} ms away",
        wan::RTT.as_millis()
    );
    let far = wan::run(cfg).await?;
    eprintln!(
        "{} daily sales, with and without retention: database sizes",
        days::DAYS
    );
    let days = days::run(cfg).await?;
    eprintln!("faults at random for {} s", faults::DURATION.as_secs());
    let faults = faults::run(cfg).await?;
    let mut text = summary(
        cfg,
        &wasm,
        &native,
        hello.as_ref(),
        &forwarding,
        &noon,
        &under_wrk,
    );
    speed::summary(&mut text, &under_wrk);
    budget::summary(&mut text, &rules_call);
    delivery::summary(&mut text, &delivery);
    watching::summary(&mut text, &watching);
    draining::summary(&mut text, &drained);
    scaling::summary(&mut text, &scaling);
    wan::summary(&mut text, &far);
    days::summary(&mut text, &days);
    faults::summary(&mut text, &faults);
    // What people wrote below the marker (the optimisation log) survives a new run.
    let earlier = std::fs::read_to_string(&cfg.summary).unwrap_or_default();
    match earlier.find(KEPT) {
        Some(at) => text.push_str(&earlier[at..]),
        None => text.push_str(&format!("\n{KEPT}\n")),
    }
    std::fs::write(&cfg.summary, text)
        .with_context(|| format!("writing {}", cfg.summary.display()))?;
    eprintln!("wrote {}", cfg.summary.display());
    Ok(())
}

/// The noon sale's peaks, one after another from the second, while each is sustained.
pub struct Peaks {
    /// The sale at the first peak, which the suite reports in full.
    sale: FleetRun,
    /// Each higher peak tried, with its run.
    higher: Vec<(f64, FleetRun)>,
    /// The highest peak sustained, if any was.
    best: Option<f64>,
}

/// Only the noon sale at rising peaks (a part of the suite): `cart-bench noon`.
pub async fn noon(cfg: &BenchConfig) -> anyhow::Result<Peaks> {
    let first = fleet_sale(cfg, NOON_PEAKS[0]).await?;
    let mut peaks = Peaks {
        higher: Vec::new(),
        sale: first,
        best: None,
    };
    if !sale_sustained(&peaks.sale.report) {
        return Ok(peaks);
    }
    peaks.best = Some(NOON_PEAKS[0]);
    for peak in NOON_PEAKS.into_iter().skip(1) {
        let run = fleet_sale(cfg, peak).await?;
        let sustained = sale_sustained(&run.report);
        peaks.higher.push((peak, run));
        if !sustained {
            break;
        }
        peaks.best = Some(peak);
    }
    Ok(peaks)
}

pub fn peaks_summary(s: &mut String, peaks: &Peaks) {
    let _ = writeln!(
        s,
        "\n### The noon sale's highest peak\n\nThe same sale on a fresh fleet at each peak of \
         {NOON_PEAKS:?} shoppers/s in turn, until one is not sustained: p99 of the 2xx answers \
         at most {BUDGET_MS} ms and no answer other than {BUSINESS_ANSWERS:?}.\n"
    );
    let _ = writeln!(
        s,
        "| peak shoppers/s | requests | answered 2xx | p50 ms | p99 ms | worst second's p99 ms | other answers | sustained | CPU µs per request: edges | PostgreSQL | load generator | whole machine | cores busy |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let first = std::iter::once((NOON_PEAKS[0], &peaks.sale));
    for (peak, run) in first.chain(peaks.higher.iter().map(|(p, r)| (*p, r))) {
        let (r, cpu) = (&run.report, &run.cpu);
        let per_request = |d: Duration| d.as_secs_f64() * 1e6 / r.sent.max(1) as f64;
        let _ = writeln!(
            s,
            "| {peak:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:?} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            r.sent,
            r.ok,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.peak_p99_ms(),
            r.errors,
            if sale_sustained(r) { "yes" } else { "no" },
            per_request(cpu.edges),
            per_request(cpu.postgres),
            per_request(cpu.generator),
            per_request(cpu.machine),
            cpu.machine.as_secs_f64() / cpu.wall.as_secs_f64().max(1e-9),
        );
    }
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{cores} cores ({cpu}), {:.1} GiB memory, Linux {}",
        mem_kb as f64 / 1_048_576.0,
        kernel.trim()
    )
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "rustc (unknown)".into())
}

fn ramp_rows(s: &mut String, ramp: &Ramp) {
    match &ramp.best {
        Some(r) => s.push_str(&row("highest sustained", r)),
        None => s.push_str("| highest sustained | none of the steps | | | | | | |\n"),
    }
    if let Some(r) = &ramp.failed {
        s.push_str(&row("next step (not sustained)", r));
    }
}

fn summary(
    cfg: &BenchConfig,
    wasm: &Measured,
    native: &Measured,
    hello: Option<&Ramp>,
    forwarding: &Forwarding,
    peaks: &Peaks,
    speed: &speed::Speed,
) -> String {
    let fleet = &peaks.sale;
    let mut s = String::new();
    let rate = |m: Option<&LoadReport>| m.map_or(0.0, |r| r.throughput);
    let wasm_max = rate(wasm.max.best.as_ref());
    let native_max = rate(native.max.best.as_ref());
    let p99_at = |m: &Measured| {
        m.fixed
            .iter()
            .find(|r| r.target_rate == 10_000.0)
            .map(|r| r.latency_ms.p99)
    };
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `{}` on {}. Every figure below is from that one run; reports (JSON) and \
         latency-over-time plots (SVG) for each step are in `target/bench/`.\n",
        cfg.command,
        rfc3339(wall_ms())
    );
    let _ = writeln!(s, "- machine: {}", machine());
    let _ = writeln!(
        s,
        "- versions: {}, wasmtime 48.0.8, SQLite {}, {}",
        rustc_version(),
        rusqlite::version(),
        fleet.postgres
    );
    let _ = writeln!(
        s,
        "- load: `cart-host load` in the same process as the benchmark driver, on the same \
         machine as the edge, open-loop (latency from each request's scheduled time), {:.0} s \
         per step; every acknowledged update durable (SQLite WAL; pipelined group commit: the \
         writer commits at `synchronous=NORMAL` and a flusher `fdatasync`s the WAL before any \
         update of the batch is answered)\n",
        cfg.step_secs
    );
    let _ = writeln!(s, "## Goals\n");
    let _ = writeln!(
        s,
        "Default configuration: a fresh instance per call, pipelined group commit. \
         Open loop: `cart-host load` (below); wrk: `wrk -t{} -c{}`, every server in this run \
         with the same client (section \"Under wrk\").\n",
        crate::wrk::THREADS,
        crate::wrk::CONNECTIONS
    );
    s.push_str(GOALS_HEAD);
    let per_s = |r: f64| format!("{r:.0}/s");
    goal(
        &mut s,
        "durable cart updates/s at one edge, open loop (highest sustained)",
        per_s(wasm_max),
        wasm_max,
        20_000.0,
        true,
    );
    let wrk_edge = speed.edge.first().map_or(0.0, |r| r.report.rate);
    goal(
        &mut s,
        "durable cart updates/s at one edge, wrk",
        per_s(wrk_edge),
        wrk_edge,
        20_000.0,
        true,
    );
    if let Some(edge) = speed.edge.first() {
        goal(
            &mut s,
            "writer busy µs per update (`BEGIN` to `COMMIT`, the sync not in it), wrk",
            format!("{:.1} µs", edge.writer_us_per_update),
            edge.writer_us_per_update,
            30.0,
            false,
        );
        goal(
            &mut s,
            "edge CPU µs per update (every thread), wrk",
            format!("{:.1} µs", edge.cpu_us_per_update),
            edge.cpu_us_per_update,
            45.0,
            false,
        );
    }
    if let Some(h) = &speed.wasmtime_hello {
        goal(
            &mut s,
            "edge updates ÷ `wasmtime serve` hello world, wrk",
            format!("{wrk_edge:.0} ÷ {:.0}/s", h.rate),
            wrk_edge / h.rate.max(1.0),
            2.5,
            true,
        );
    }
    let hyper = speed.hyper_hello.rate;
    goal(
        &mut s,
        "edge updates ÷ plain hyper hello world, wrk",
        format!("{wrk_edge:.0} ÷ {hyper:.0}/s"),
        wrk_edge / hyper.max(1.0),
        0.15,
        true,
    );
    if let Some(p99) = p99_at(wasm) {
        goal(
            &mut s,
            "p99 ms at 10,000 updates/s offered, open loop",
            format!("{p99:.2} ms"),
            p99,
            10.0,
            false,
        );
    }
    goal(
        &mut s,
        "WebAssembly ÷ native rules, open loop (highest sustained)",
        format!("{wasm_max:.0} ÷ {native_max:.0}/s"),
        wasm_max / native_max.max(1.0),
        0.8,
        true,
    );
    let wrk_native = speed.native.report.rate;
    goal(
        &mut s,
        "WebAssembly ÷ native rules, wrk",
        format!("{wrk_edge:.0} ÷ {wrk_native:.0}/s"),
        wrk_edge / wrk_native.max(1.0),
        0.8,
        true,
    );
    goal(
        &mut s,
        &format!(
            "`GET /v1/carts/{{id}}`/s while {:.0} updates/s run, wrk",
            speed::UPDATES_DURING_READS
        ),
        per_s(speed.reads.rate),
        speed.reads.rate,
        40_000.0,
        true,
    );
    let peak = fleet.report.peak_p99_ms();
    goal(
        &mut s,
        "three-edge noon sale on PostgreSQL: worst one-second p99 ms at its peak",
        format!("{peak:.2} ms"),
        peak,
        50.0,
        false,
    );
    let best = peaks.best.unwrap_or(0.0);
    goal(
        &mut s,
        &format!(
            "three-edge noon sale on PostgreSQL: highest peak shoppers/s at p99 ≤ {BUDGET_MS} ms"
        ),
        format!("{best:.0}/s"),
        best,
        6_000.0,
        true,
    );
    let _ = writeln!(
        s,
        "\nThe native rules pay no conversion the component does not: they take the rules' own \
         types, as the component's bindings do after the canonical ABI.\n"
    );
    let _ = writeln!(
        s,
        "\nThe highest sustained rate is the highest step of {RAMP:?}/s answered at ≥ 95% of its \
         rate with no errors and p99 ≤ {BUDGET_MS} ms; ratios are taken between those.\n"
    );
    let table = |s: &mut String, title: &str, m: &Measured| {
        let _ = writeln!(s, "## {title}\n");
        s.push_str(TABLE_HEAD);
        for r in &m.fixed {
            s.push_str(&row("fixed rate", r));
        }
        ramp_rows(s, &m.max);
        s.push('\n');
    };
    table(
        &mut s,
        "Edge: durable cart updates (`PUT /v1/carts/{id}/items/{sku}`), a fresh instance per call",
        wasm,
    );
    table(
        &mut s,
        "Baseline: the same rules compiled natively into the same host",
        native,
    );
    let _ = writeln!(
        s,
        "## Runtime anchor: `wasmtime serve` with a hello-world `wasi:http` component\n"
    );
    match hello {
        Some(h) => {
            let _ = writeln!(s, "`GET /`, the same load tool and criteria.\n");
            s.push_str(TABLE_HEAD);
            ramp_rows(&mut s, h);
        }
        None => {
            let _ = writeln!(
                s,
                "Not measured in this run: no `wasmtime` CLI or hello component."
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## One fleet: an update forwarded by another edge against one sent to the cart's edge\n"
    );
    let _ = writeln!(
        s,
        "Two edges with a fleet secret, SQLite central; the same updates of edge-1's carts at \
         {FORWARDING_RATE:.0}/s, sent to edge-1, then to edge-2, which forwards each to edge-1 \
         and returns its answer (`--via` of `cart-host load`).\n"
    );
    s.push_str(TABLE_HEAD);
    s.push_str(&row("sent to the cart's edge", &forwarding.local));
    s.push_str(&row("forwarded by another edge", &forwarding.forwarded));
    let _ = writeln!(
        s,
        "\nThe hop costs {:+.2} ms at p50 and {:+.2} ms at p99.",
        forwarding.forwarded.latency_ms.p50 - forwarding.local.latency_ms.p50,
        forwarding.forwarded.latency_ms.p99 - forwarding.local.latency_ms.p99
    );
    let f = &fleet.report;
    let _ = writeln!(s, "\n## Three edges, PostgreSQL central, a noon sale\n");
    let _ = writeln!(
        s,
        "Shoppers arrive on a noon curve peaking at {:.0}/s for {:.0} s across three edges; each \
         creates a cart, holds a unit, a third raise to two, half check out. 3 SKUs × 2,000 units, \
         limit 2 per customer.\n",
        f.target_rate, f.duration_s
    );
    let _ = writeln!(
        s,
        "| requests | answered 2xx | p50 ms | p99 ms | p99.9 ms | max ms | sell-through | max outbox lag | drained after | audit |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let _ = writeln!(
        s,
        "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}% | {} ms | {:.1} s | {} |",
        f.sent,
        f.ok,
        f.latency_ms.p50,
        f.latency_ms.p99,
        f.latency_ms.p999,
        f.latency_ms.max,
        f.sell_through.unwrap_or(0.0) * 100.0,
        fleet.max_sync_lag_ms,
        fleet.drained_after.as_secs_f64(),
        fleet.audit
    );
    let _ = writeln!(s, "\nBusiness answers by code: {:?}", f.errors);
    peaks_summary(&mut s, peaks);
    s
}
