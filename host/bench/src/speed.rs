//! How fast one edge is against issue 14's goals, under `wrk` (closed loop, see [`crate::wrk`]):
//! durable cart updates beside the same rules compiled natively and both hello-world anchors
//! (`wasmtime serve` and plain hyper), the edge's CPU time per update on one core and on two, and
//! cart reads while updates run.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

use crate::harness::{self, BenchConfig, Edge, Rules};
use crate::wrk::{self, WrkReport};
use cart_edge::http_client::HttpClient;
use cart_load::{self as load, LoadConfig, LoadReport, Scenario};

/// Carts the updates and reads rotate over: enough that no two requests in flight share one.
const CARTS: usize = 2_000;
/// Open-loop updates per second while the reads are measured.
pub const UPDATES_DURING_READS: f64 = 2_000.0;

/// The edge's updates with its process on some cores and wrk on others.
pub struct CoreRun {
    /// The cores the edge ran on, and wrk's (`taskset -c`); `None`: not pinned.
    pub edge_cpus: Option<&'static str>,
    pub wrk_cpus: Option<&'static str>,
    pub report: WrkReport,
    /// The edge process's CPU time (all threads, user and system) over the updates answered.
    pub cpu_us_per_update: f64,
    /// The writer's busy time (its batches, from `BEGIN` to the end of `COMMIT`) over the
    /// updates answered: one writer's ceiling is a second of it.
    pub writer_us_per_update: f64,
    /// The share of the updates' instances that were made ahead, off the writer.
    pub made_ahead: f64,
    /// The writer's jobs per batch, so per `COMMIT` (background jobs included).
    pub jobs_per_commit: f64,
}

pub struct Speed {
    /// The component's edge: unpinned, then on one core with wrk on the other.
    pub edge: Vec<CoreRun>,
    /// The component's edge with its instances made ahead (`--instances-ahead`), unpinned.
    pub ahead: CoreRun,
    pub native: CoreRun,
    pub wasmtime_hello: Option<WrkReport>,
    pub hyper_hello: WrkReport,
    /// `GET /v1/carts/{id}` under wrk while open-loop updates run.
    pub reads: WrkReport,
    pub updates_during_reads: LoadReport,
}

pub async fn run(cfg: &BenchConfig) -> anyhow::Result<Speed> {
    let secs = Duration::from_secs_f64(cfg.step_secs);
    eprintln!("  the component's edge under wrk");
    let (edge, reads, updates_during_reads) = component(cfg, secs).await?;
    eprintln!("  the component's edge with instances made ahead, under wrk");
    let ahead = one_run(cfg, "speed-ahead", Rules::Component, AHEAD).await?;
    eprintln!("  the native rules' edge under wrk");
    let native = one_run(cfg, "speed-native", Rules::Native, &[]).await?;
    eprintln!("  wasmtime serve's hello world under wrk");
    let wasmtime_hello = match &cfg.hello {
        Some((hello, wasmtime)) => {
            let mut server = Command::new(wasmtime);
            server.args(["serve", "-S", "cli=y"]);
            Some(hello_world(cfg, server, "--addr", Some(hello), secs).await?)
        }
        None => None,
    };
    eprintln!("  a plain hyper hello world under wrk");
    let mut server = Command::new(&cfg.bench_bin);
    server.arg("hello");
    let hyper_hello = hello_world(cfg, server, "--listen", None, secs).await?;
    Ok(Speed {
        edge,
        ahead,
        native,
        wasmtime_hello,
        hyper_hello,
        reads,
        updates_during_reads,
    })
}

/// The wrk scripts over one edge's carts.
struct Scripts {
    updates: std::path::PathBuf,
    reads: std::path::PathBuf,
}

/// `serve`'s flags for instances made ahead.
const AHEAD: &[&str] = &["--instances-ahead", "16"];

/// One edge's updates under wrk, every core for both.
async fn one_run(
    cfg: &BenchConfig,
    name: &str,
    rules: Rules,
    extra: &[&str],
) -> anyhow::Result<CoreRun> {
    let (edge, scripts) = edge_with_carts(cfg, name, rules, extra).await?;
    let secs = Duration::from_secs_f64(cfg.step_secs);
    let mut runs = updates(&edge, &scripts, secs, &[(None, None)]).await?;
    runs.pop().context("no run")
}

/// A fresh edge on its own SQLite central (`serve` with `extra`), with [`CARTS`] open carts
/// and wrk's scripts for them.
async fn edge_with_carts(
    cfg: &BenchConfig,
    name: &str,
    rules: Rules,
    extra: &[&str],
) -> anyhow::Result<(Edge, Scripts)> {
    let (dir, central) = harness::updates_fleet(cfg, name).await?;
    let edge = Edge::start(cfg, &dir, "edge-1", &central, rules, extra).await?;
    let carts = load::open_carts(
        &HttpClient::default(),
        std::slice::from_ref(&edge.url),
        CARTS,
        None,
    )
    .await?;
    let items: Vec<(String, String)> = carts.into_iter().map(|(_, p, t)| (p, t)).collect();
    let views: Vec<(String, String)> = items
        .iter()
        .map(|(p, t)| (p.split("/items/").next().unwrap_or(p).to_owned(), t.clone()))
        .collect();
    let scripts = Scripts {
        updates: wrk::updates_script(&dir, &items)?,
        reads: wrk::reads_script(&dir, &views)?,
    };
    // Warm up: SQLite's pages and statement caches, the instance pool, the connections.
    wrk::run(&edge.url, &scripts.updates, Duration::from_secs(3), None).await?;
    Ok((edge, scripts))
}

/// wrk's updates against `edge` once per placement (edge's cores, wrk's cores).
async fn updates(
    edge: &Edge,
    scripts: &Scripts,
    secs: Duration,
    placements: &[(Option<&'static str>, Option<&'static str>)],
) -> anyhow::Result<Vec<CoreRun>> {
    let pid = edge.pid()?;
    let mut runs = Vec::new();
    for &(edge_cpus, wrk_cpus) in placements {
        wrk::pin(pid, edge_cpus.unwrap_or(&all_cpus())).await?;
        let (before, counted) = (wrk::cpu_time(pid)?, Counters::read(&edge.url).await?);
        let report = wrk::run(&edge.url, &scripts.updates, secs, wrk_cpus).await?;
        let spent = wrk::cpu_time(pid)? - before;
        let counted = Counters::read(&edge.url).await?.since(&counted);
        let answered = (report.rate * report.seconds).max(1.0);
        let run = CoreRun {
            edge_cpus,
            wrk_cpus,
            cpu_us_per_update: spent.as_secs_f64() * 1e6 / answered,
            writer_us_per_update: counted.writer_busy_s * 1e6 / answered,
            made_ahead: counted.made_ahead / (counted.made_ahead + counted.made_by_call).max(1.0),
            jobs_per_commit: counted.batch_jobs / counted.batches.max(1.0),
            report,
        };
        eprintln!(
            "    edge on {}, wrk on {}: {:.0} updates/s, p99 {:.2} ms; per update {:.1} µs CPU, \
             {:.1} µs of the writer; {:.1} jobs per commit; {:.0}% of instances made ahead",
            edge_cpus.unwrap_or("every core"),
            wrk_cpus.unwrap_or("every core"),
            run.report.rate,
            run.report.p99_ms,
            run.cpu_us_per_update,
            run.writer_us_per_update,
            run.jobs_per_commit,
            run.made_ahead * 100.0
        );
        runs.push(run);
    }
    wrk::pin(pid, &all_cpus()).await?;
    Ok(runs)
}

/// What the edge counts in `/metrics` that the updates are measured by.
struct Counters {
    writer_busy_s: f64,
    made_ahead: f64,
    made_by_call: f64,
    batches: f64,
    batch_jobs: f64,
}

impl Counters {
    async fn read(edge: &str) -> anyhow::Result<Self> {
        let text = HttpClient::default()
            .get(&format!("{edge}/metrics"), None)
            .await?
            .body;
        let text = String::from_utf8_lossy(&text);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Ok(Self {
            writer_busy_s: value("cart_writer_busy_seconds_total"),
            made_ahead: value("cart_guest_instances_made_ahead_total"),
            made_by_call: value("cart_guest_instances_made_by_call_total"),
            batches: value("cart_writer_batch_jobs_count"),
            batch_jobs: value("cart_writer_batch_jobs_sum"),
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            writer_busy_s: self.writer_busy_s - before.writer_busy_s,
            made_ahead: self.made_ahead - before.made_ahead,
            made_by_call: self.made_by_call - before.made_by_call,
            batches: self.batches - before.batches,
            batch_jobs: self.batch_jobs - before.batch_jobs,
        }
    }
}

/// Every core of the machine, for `taskset -c`.
fn all_cpus() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("0-{}", n - 1)
}

/// The component's edge's updates on every core and on one, then with its instances made ahead
/// (each printed as it is measured).
pub async fn component_updates(cfg: &BenchConfig) -> anyhow::Result<Vec<CoreRun>> {
    let (edge, scripts) = edge_with_carts(cfg, "speed-wasm", Rules::Component, &[]).await?;
    let secs = Duration::from_secs_f64(cfg.step_secs);
    let mut runs = updates(&edge, &scripts, secs, PLACEMENTS).await?;
    drop(edge);
    runs.push(one_run(cfg, "speed-ahead", Rules::Component, AHEAD).await?);
    Ok(runs)
}

/// The edge on every core with wrk, then on core 0 with wrk on core 1.
const PLACEMENTS: &[(Option<&str>, Option<&str>)] = &[(None, None), (Some("0"), Some("1"))];

/// The component's edge: updates on every core and on one, then reads while updates run.
async fn component(
    cfg: &BenchConfig,
    secs: Duration,
) -> anyhow::Result<(Vec<CoreRun>, WrkReport, LoadReport)> {
    let (edge, scripts) = edge_with_carts(cfg, "speed-wasm", Rules::Component, &[]).await?;
    let runs = updates(&edge, &scripts, secs, PLACEMENTS).await?;
    let (reads, updates) = reads_during_updates(&edge, &scripts, secs).await?;
    Ok((runs, reads, updates))
}

/// The component's edge's cart reads while updates run (printed as they are measured).
pub async fn component_reads(cfg: &BenchConfig) -> anyhow::Result<(WrkReport, LoadReport)> {
    let (edge, scripts) = edge_with_carts(cfg, "speed-reads", Rules::Component, &[]).await?;
    reads_during_updates(&edge, &scripts, Duration::from_secs_f64(cfg.step_secs)).await
}

/// wrk's cart reads while our generator sends [`UPDATES_DURING_READS`] updates a second.
async fn reads_during_updates(
    edge: &Edge,
    scripts: &Scripts,
    secs: Duration,
) -> anyhow::Result<(WrkReport, LoadReport)> {
    let background = tokio::spawn(load::run(LoadConfig {
        edges: vec![edge.url.clone()],
        scenario: Scenario::Updates,
        rate: UPDATES_DURING_READS,
        // Longer than the reads, so that updates run throughout them.
        duration: secs + Duration::from_secs(2),
        ..LoadConfig::default()
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads = wrk::run(&edge.url, &scripts.reads, secs, None).await?;
    let updates = background.await.context("the updates under the reads")??;
    eprintln!(
        "    reads: {:.0}/s, p99 {:.2} ms, with {:.0} updates/s (p99 {:.2} ms)",
        reads.rate, reads.p99_ms, updates.throughput, updates.latency_ms.p99
    );
    Ok((reads, updates))
}

/// A hello-world server started as `server ADDR_FLAG 127.0.0.1:PORT [component]`, under wrk.
async fn hello_world(
    cfg: &BenchConfig,
    mut server: Command,
    addr_flag: &str,
    component: Option<&Path>,
    secs: Duration,
) -> anyhow::Result<WrkReport> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    server
        .arg(addr_flag)
        .arg(format!("127.0.0.1:{port}"))
        .args(component)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let _server = server.spawn().context("starting a hello-world server")?;
    let url = format!("http://127.0.0.1:{port}/");
    harness::wait_healthy(&url).await?;
    let script = wrk::get_script(&cfg.out_dir)?;
    wrk::run(&url, &script, Duration::from_secs(2), None).await?;
    let report = wrk::run(&url, &script, secs, None).await?;
    eprintln!(
        "    {:.0} requests/s, p99 {:.2} ms",
        report.rate, report.p99_ms
    );
    Ok(report)
}

/// The wrk section of BENCHMARKS.md.
pub fn summary(s: &mut String, speed: &Speed) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\n## Under wrk: the edge beside the same rules natively and two hello worlds\n"
    );
    let _ = writeln!(
        s,
        "`wrk -t{} -c{}` (closed loop) for each server in turn, {:.0} s each, in this one run. The \
         edge's updates rotate over {CARTS} open carts, raising and lowering each in turn so that \
         every request changes a hold (`PUT /v1/carts/{{id}}/items/{{sku}}`, durable); the hello \
         worlds answer `GET /`. CPU per update: the edge process's user and system time, all its \
         threads, over the updates answered; writer per update: its busy time (`BEGIN` to the end \
         of `COMMIT`; the WAL's sync is the flusher's, beside it) from `/metrics`, whose inverse is \
         one writer's ceiling; jobs per commit: the writer's batch size (group commit), from \
         `/metrics`.\n",
        wrk::THREADS,
        wrk::CONNECTIONS,
        speed.hyper_hello.seconds
    );
    let _ = writeln!(
        s,
        "| server | edge on cores | wrk on cores | requests/s | p50 ms | p99 ms | max ms | not 2xx | CPU µs per update | writer µs per update | jobs per commit | instances made ahead |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let row = |s: &mut String,
               what: &str,
               edge: &str,
               client: &str,
               r: &WrkReport,
               run: Option<&CoreRun>| {
        let (cpu, writer, jobs, ahead) = match run {
            Some(run) => (
                format!("{:.1}", run.cpu_us_per_update),
                format!("{:.1}", run.writer_us_per_update),
                format!("{:.1}", run.jobs_per_commit),
                format!("{:.0}%", run.made_ahead * 100.0),
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            s,
            "| {what} | {edge} | {client} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {cpu} | {writer} | {jobs} | {ahead} |",
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.non_2xx + r.socket_errors,
        );
    };
    let cores = |c: Option<&str>| c.unwrap_or("all").to_owned();
    let edge_row = |s: &mut String, what: &str, run: &CoreRun| {
        let (edge, client) = (cores(run.edge_cpus), cores(run.wrk_cpus));
        row(s, what, &edge, &client, &run.report, Some(run));
    };
    for run in &speed.edge {
        edge_row(s, "edge, WebAssembly (a fresh instance per update)", run);
    }
    edge_row(
        s,
        "edge, WebAssembly, instances made ahead (`serve --instances-ahead 16`)",
        &speed.ahead,
    );
    edge_row(s, "edge, the rules compiled natively", &speed.native);
    if let Some(h) = &speed.wasmtime_hello {
        row(s, "`wasmtime serve`, hello world", "all", "all", h, None);
    }
    row(
        s,
        "plain hyper, hello world",
        "all",
        "all",
        &speed.hyper_hello,
        None,
    );
    let _ = writeln!(s, "\n## Cart reads while updates run\n");
    let u = &speed.updates_during_reads;
    let _ = writeln!(
        s,
        "`GET /v1/carts/{{id}}` under wrk over the same {CARTS} carts, while `cart-host load` sends \
         {UPDATES_DURING_READS:.0} updates/s (open loop) to the same edge: reads answered \
         {:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} not 2xx); the updates meanwhile {:.0}/s, p99 \
         {:.2} ms, errors {:?}.",
        speed.reads.rate,
        speed.reads.p50_ms,
        speed.reads.p99_ms,
        speed.reads.non_2xx + speed.reads.socket_errors,
        u.throughput,
        u.latency_ms.p99,
        u.errors
    );
}
