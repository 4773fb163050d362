//! What every part of the benchmark suite shares: its configuration, edge processes on the
//! component or the native rules, fresh fleets and sales on SQLite or PostgreSQL, a measured
//! load run with its report and plot, the audit, and the table rows the summary prints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cart_central::Central;
use cart_central::sale::Sale;
use cart_central::time::{rfc3339, wall_ms};
use cart_edge::http_client::HttpClient;
use cart_load::{self as load, Curve, LoadConfig, LoadReport, Scenario};
use cart_testkit::Postgres;
use serde_json::json;
use tokio::process::{Child, Command};

pub struct BenchConfig {
    /// Where reports, plots and the edges' databases go.
    pub out_dir: PathBuf,
    /// The `cart-host` binary to run edges and the audit with.
    pub host_bin: PathBuf,
    /// This `cart-bench` binary, which serves the native baseline (`cart-bench edge`).
    pub bench_bin: PathBuf,
    /// The cart component.
    pub module: PathBuf,
    /// The hello-world `wasi:http` component and a `wasmtime` CLI, for the runtime anchor.
    pub hello: Option<(PathBuf, PathBuf)>,
    /// Seconds per measured step.
    pub step_secs: f64,
    /// Where to write the summary.
    pub summary: PathBuf,
    /// The command that ran this, for the summary.
    pub command: String,
}

/// What an edge process decides carts with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rules {
    /// The cart component (`cart-host serve`).
    Component,
    /// The same rules compiled in (`cart-bench edge`).
    Native,
}

/// An edge process for the benchmark.
pub(crate) struct Edge {
    /// Dropping it kills the edge (`kill_on_drop`).
    child: Child,
    pub(crate) url: String,
}

impl Edge {
    pub(crate) async fn start(
        cfg: &BenchConfig,
        dir: &Path,
        id: &str,
        central: &str,
        rules: Rules,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
        let token = dir.join("admin-token");
        std::fs::write(&token, TOKEN)?;
        let (program, command) = match rules {
            Rules::Component => (&cfg.host_bin, "serve"),
            Rules::Native => (&cfg.bench_bin, "edge"),
        };
        let child = Command::new(program)
            .arg(command)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(dir.join(id))
            .args(["--edge-id", id, "--central", central])
            .arg("--module")
            .arg(&cfg.module)
            .arg("--admin-token-file")
            .arg(&token)
            .args(extra)
            // The load generator makes every cart from one address.
            .env("CART_CREATE_RATE", "0")
            .env("CART_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&format!("{url}/healthz")).await?;
        Ok(Self { child, url })
    }

    /// The process's id, while it runs.
    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the edge has exited")
    }

    /// Waits for the process to exit (after a drain): how, or `None` if it did not in time.
    pub(crate) async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()?
            .ok()
    }
}

pub(crate) async fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let client = HttpClient::new(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client
            .get(url, None)
            .await
            .is_ok_and(|r| r.status.is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not come up")
}

pub(crate) fn bench_sale(units: u32, limit: u32, skus: usize) -> anyhow::Result<Sale> {
    let skus: Vec<_> = (0..skus)
        .map(|i| {
            json!({"sku": format!("SKU-{i}"), "name": format!("Item {i}"), "price_cents": 1999,
                   "stock": units, "limit_per_customer": limit})
        })
        .collect();
    let text = json!({"sale_id": "bench", "starts_at": rfc3339(wall_ms() - 60_000),
                      "hold_ttl_seconds": 600, "skus": skus});
    Ok(Sale::parse(&text.to_string())?)
}

pub(crate) async fn measure(
    cfg: &BenchConfig,
    name: &str,
    config: LoadConfig,
) -> anyhow::Result<LoadReport> {
    eprintln!(
        "  {name}: {:?} at {:.0}/s for {:.0}s",
        config.scenario,
        config.rate,
        config.duration.as_secs_f64()
    );
    let report = load::run(config).await?;
    eprint!("    {report}");
    load::write_json(&report, &cfg.out_dir.join(format!("{name}.json")))?;
    crate::plot::write_plot(&report, &cfg.out_dir.join(format!("{name}.svg")))?;
    Ok(report)
}

/// A fresh folder `name` for a cart-updates benchmark, and its SQLite central's URL, holding
/// one SKU with stock enough for any run.
pub(crate) async fn updates_fleet(
    cfg: &BenchConfig,
    name: &str,
) -> anyhow::Result<(PathBuf, String)> {
    let dir = cfg.out_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let central = format!("sqlite:{}", dir.join("central.db").display());
    Central::connect(&central)
        .await?
        .load_sale(&bench_sale(1_000_000_000, 10_000, 1)?)
        .await?;
    Ok((dir, central))
}

/// Two edges of one fleet (edge-1 and edge-2) on a fresh [`updates_fleet`] `name`.
pub(crate) async fn two_edges(cfg: &BenchConfig, name: &str) -> anyhow::Result<(Edge, Edge)> {
    let (dir, central) = updates_fleet(cfg, name).await?;
    let secret = dir.join("fleet-secret");
    std::fs::write(&secret, "a-fleet-secret-for-the-benchmark")?;
    let secret = secret.display().to_string();
    let fleet = ["--fleet-secret-file", secret.as_str()];
    let one = Edge::start(cfg, &dir, "edge-1", &central, Rules::Component, &fleet).await?;
    let two = Edge::start(cfg, &dir, "edge-2", &central, Rules::Component, &fleet).await?;
    Ok((one, two))
}

/// The noon sale the fleet runs measure: shoppers on a noon curve peaking at 1,500/s, for two
/// steps.
pub(crate) fn noon_sale(cfg: &BenchConfig, urls: &[String]) -> LoadConfig {
    LoadConfig {
        edges: urls.to_vec(),
        scenario: Scenario::Sale,
        curve: Curve::Noon,
        rate: 1_500.0,
        duration: Duration::from_secs_f64(cfg.step_secs * 2.0),
        admin_token: Some(TOKEN.into()),
        ..LoadConfig::default()
    }
}

/// A throwaway PostgreSQL with the noon sale loaded (3 SKUs × 2,000 units, limit 2); its URL.
pub(crate) async fn postgres_with_sale() -> anyhow::Result<(Postgres, String)> {
    let pg = Postgres::start()?;
    let central = pg.database("bench").await?;
    Central::connect(&central)
        .await?
        .load_sale(&bench_sale(2_000, 2, 3)?)
        .await?;
    Ok((pg, central))
}

/// `cart-host relay` from `queue` to `central`, logging to `relay.log` in `dir`; killed when
/// dropped.
pub(crate) fn relay(
    cfg: &BenchConfig,
    dir: &Path,
    queue: &str,
    central: &str,
) -> anyhow::Result<Child> {
    Command::new(&cfg.host_bin)
        .args(["relay", "--queue", queue, "--central", central])
        .env("CART_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("relay.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("starting cart-host relay")
}

/// `cart-host audit` of these edges, waiting up to a minute for them to settle: `passed`, or
/// what it found.
pub(crate) async fn audit(
    cfg: &BenchConfig,
    central: &str,
    dir: &Path,
    urls: &[String],
) -> anyhow::Result<String> {
    let audit = Command::new(&cfg.host_bin)
        .args(["audit", "--central", central, "--wait-secs", "60"])
        .arg("--admin-token-file")
        .arg(dir.join("admin-token"))
        .args(urls.iter().flat_map(|u| ["--edge", u.as_str()]))
        .output()
        .await
        .context("running cart-host audit")?;
    Ok(if audit.status.success() {
        "passed".into()
    } else {
        format!("FAILED\n{}", String::from_utf8_lossy(&audit.stdout))
    })
}

pub(crate) fn row(name: &str, r: &LoadReport) -> String {
    let l = &r.latency_ms;
    format!(
        "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
        r.target_rate,
        r.throughput,
        l.p50,
        l.p99,
        l.p999,
        l.max,
        r.errors_total()
    )
}

/// The benchmark edges' operator token (as long as `serve` requires: 16 characters or more).
pub(crate) const TOKEN: &str = "bench-operator-token";
/// The benchmark fleets' shared secret.
pub(crate) const FLEET_SECRET: &str = "bench-fleet-secret";

pub(crate) const TABLE_HEAD: &str = "| step | rate/s | answered/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n\
                          | --- | --- | --- | --- | --- | --- | --- | --- |\n";

/// The head of a table of goals, whose rows [`goal`] writes.
pub const GOALS_HEAD: &str =
    "| goal | measured | target | measured / target | met |\n| --- | --- | --- | --- | --- |\n";

/// A row of a table of goals: `what`, as measured (`got`, in words), against `target`, a floor
/// when `higher` (met when measured / target ≥ 1) or else a ceiling (target / measured).
pub fn goal(s: &mut String, what: &str, got: String, measured: f64, target: f64, higher: bool) {
    let ratio = match (higher, measured > 0.0) {
        (true, _) => measured / target,
        (false, true) => target / measured,
        (false, false) => f64::INFINITY,
    };
    let met = if ratio >= 1.0 { "yes" } else { "no" };
    let target = if higher {
        format!("≥ {target}")
    } else {
        format!("≤ {target}")
    };
    let _ = writeln!(s, "| {what} | {got} | {target} | {ratio:.2} | {met} |");
}
