//! The scaling run: the noon sale through one address in front of `cart-host scale`, which starts
//! edges as the rush climbs and drains them after it. The report puts the fleet's size over time
//! next to the shoppers' latency, and the audit runs on what is left.
//!
//! On a two-core machine more edges add no capacity (they share the cores): the per-edge target
//! is set low, so that the run shows the mechanics, growth before the peak and drains after it,
//! not a gain in throughput.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::process::Command;

use crate::harness::{BenchConfig, FLEET_SECRET, TOKEN, audit, measure, postgres_with_sale};
use cart_central::time::wall_ms;
use cart_edge::http_client::HttpClient;
use cart_load::{Curve, LoadConfig, LoadReport, Scenario};

/// The sale's peak, in shoppers arriving a second.
const PEAK: f64 = 400.0;
/// Cart updates a second one edge is meant to take (see the module's note).
const PER_EDGE: f64 = 150.0;
const MAX_EDGES: usize = 4;
/// The scaler keeps running this long after the sale, to drain back.
const AFTER: Duration = Duration::from_secs(25);

/// One second of the scaler's record (see `cart-host scale --record`).
#[derive(Clone, Debug, Deserialize)]
pub struct SizeAt {
    pub at_ms: i64,
    pub edges: usize,
    pub ready: usize,
    pub updates_per_second: f64,
}

pub struct Scaling {
    pub report: LoadReport,
    /// When the load began (wall clock, ms).
    pub started_ms: i64,
    pub sizes: Vec<SizeAt>,
    pub audit: String,
    /// What the scaler printed: each change of size and each drained edge's exit.
    pub changes: Vec<String>,
}

impl Scaling {
    fn largest(&self) -> usize {
        self.sizes.iter().map(|s| s.edges).max().unwrap_or(0)
    }

    /// The fleet's size at the end of the record.
    fn last(&self) -> usize {
        self.sizes.last().map_or(0, |s| s.edges)
    }

    /// The worst p99 of any second of the plateau (the peak of the curve: 10% to 30% of it).
    fn peak_p99_ms(&self) -> f64 {
        let n = self.report.timeline.len();
        self.report.timeline[n / 10..(n * 3 / 10).max(n / 10)]
            .iter()
            .map(|s| s.latency_ms.p99)
            .fold(0.0, f64::max)
    }
}

pub async fn run(cfg: &BenchConfig) -> anyhow::Result<Scaling> {
    let dir = cfg.out_dir.join("scaling");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_pg, central) = postgres_with_sale().await?;
    std::fs::write(dir.join("admin-token"), TOKEN)?;
    std::fs::write(dir.join("fleet-secret"), FLEET_SECRET)?;
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (door, base) = (free()?, free()?);
    let record = dir.join("size.jsonl");
    let mut scaler = Command::new(&cfg.host_bin)
        .arg("scale")
        .args(["--central", &central])
        .args(["--listen", &format!("127.0.0.1:{door}")])
        .arg("--data")
        .arg(dir.join("edges"))
        .args(["--base-port", &base.to_string()])
        .args(["--min-edges", "1", "--max-edges", &MAX_EDGES.to_string()])
        .args(["--target-updates-per-edge", &PER_EDGE.to_string()])
        .args(["--cool-down-secs", "2", "--scale-in-after-secs", "5"])
        .arg("--record")
        .arg(&record)
        .arg("--")
        .arg("--module")
        .arg(&cfg.module)
        .arg("--admin-token-file")
        .arg(dir.join("admin-token"))
        .arg("--fleet-secret-file")
        .arg(dir.join("fleet-secret"))
        .args(["--create-rate", "0"])
        .env("CART_LOG", "warn")
        .stdout(std::fs::File::create(dir.join("scale.out"))?)
        .stderr(std::fs::File::create(dir.join("scale.log"))?)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting cart-host scale")?;
    let url = format!("http://127.0.0.1:{door}");
    let client = HttpClient::default();
    let ready = async {
        while !client
            .get(&format!("{url}/readyz"), None)
            .await
            .is_ok_and(|r| r.status.is_success())
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .context("the scaled fleet's first edge did not get ready")?;

    let started_ms = wall_ms();
    let report = measure(
        cfg,
        "scaling",
        LoadConfig {
            edges: vec![url],
            scenario: Scenario::Sale,
            curve: Curve::Noon,
            rate: PEAK,
            duration: Duration::from_secs_f64(cfg.step_secs * 6.0),
            admin_token: Some(TOKEN.into()),
            ..LoadConfig::default()
        },
    )
    .await?;
    tokio::time::sleep(AFTER).await;
    // Every edge still registered: the ones the scaler did not drain.
    let audit = audit(cfg, &central, &dir, &[]).await?;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &scaler.id().unwrap_or_default().to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(60), scaler.wait()).await;
    let sizes = std::fs::read_to_string(&record)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let changes = std::fs::read_to_string(dir.join("scale.out"))?
        .lines()
        .filter(|l| l.contains("growing") || l.contains("draining") || l.contains("exited"))
        .map(|l| l.split(": Reading").next().unwrap_or(l).to_owned())
        .collect();
    let scaling = Scaling {
        report,
        started_ms,
        sizes,
        audit,
        changes,
    };
    write_plot(&scaling, &cfg.out_dir.join("scaling-size.svg"))?;
    Ok(scaling)
}

pub fn summary(s: &mut String, r: &Scaling) {
    let _ = writeln!(s, "## The scaling run\n");
    let _ = writeln!(
        s,
        "The noon sale (peak {PEAK:.0} shoppers/s, PostgreSQL) through the one address of \
         `cart-host scale --min-edges 1 --max-edges {MAX_EDGES} --target-updates-per-edge \
         {PER_EDGE:.0} --cool-down-secs 2 --scale-in-after-secs 5`, which then runs {}s more. \
         On two cores extra edges add no capacity: the low target shows the mechanics (growth \
         before the peak, drains after it), not a gain in throughput.\n",
        AFTER.as_secs()
    );
    let _ = writeln!(
        s,
        "- fleet: 1 edge at the start, {} at most, {} at the end\n\
         - p99 of the plateau's worst second: {:.1} ms (budget 250 ms)\n\
         - answered: {} of {} requests; errors: {:?}\n\
         - audit of the edges left: {}\n\
         - changes: {}\n\
         - fleet size and latency over time: `target/bench/scaling-size.svg`\n",
        r.largest(),
        r.last(),
        r.peak_p99_ms(),
        r.report.ok,
        r.report.sent,
        r.report.errors,
        r.audit.lines().next().unwrap_or_default(),
        r.changes.join("; ")
    );
}

/// Fleet size (edges, ready edges) and the shoppers' p99 per second, one above the other, on
/// one time axis (seconds since the load began).
fn write_plot(r: &Scaling, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(300);
    let secs = |at_ms: i64| (at_ms - r.started_ms) as f64 / 1_000.0;
    let end = r
        .sizes
        .last()
        .map_or(r.report.timeline.len() as f64, |s| secs(s.at_ms))
        .max(1.0);
    let top = r
        .report
        .timeline
        .iter()
        .map(|s| s.latency_ms.p99)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut latency = ChartBuilder::on(&upper)
        .caption(
            "The noon sale through cart-host scale: p99 per second (ms)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    latency.configure_mesh().y_desc("ms").draw()?;
    latency.draw_series(LineSeries::new(
        r.report
            .timeline
            .iter()
            .map(|s| (s.t as f64, s.latency_ms.p99)),
        &RED,
    ))?;
    let most = r.largest().max(1) as f64 + 0.5;
    let mut size = ChartBuilder::on(&lower)
        .caption("edges (black) and ready edges (blue)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..end, 0f64..most)?;
    size.configure_mesh()
        .x_desc("seconds since the sale began")
        .y_desc("edges")
        .draw()?;
    type Pick = fn(&SizeAt) -> f64;
    let series: [(Pick, RGBColor); 2] = [(|s| s.edges as f64, BLACK), (|s| s.ready as f64, BLUE)];
    for (pick, color) in series {
        size.draw_series(LineSeries::new(
            r.sizes.iter().map(|s| (secs(s.at_ms), pick(s))),
            &color,
        ))?;
    }
    root.present()?;
    Ok(())
}
