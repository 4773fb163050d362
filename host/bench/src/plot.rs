//! Plots of the load generator's reports: latency over time, as an SVG.

use std::path::Path;

use anyhow::Context as _;
use cart_load::{Latency, LoadReport};

/// Reads a report `cart-host load --report` wrote and draws it.
pub fn read_and_draw(report: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read(report).with_context(|| format!("reading {}", report.display()))?;
    let report: LoadReport = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a load report", report.display()))?;
    write_plot(&report, out)
}

/// Draws latency over time (p50, p99, p99.9 per second) as an SVG.
pub fn write_plot(report: &LoadReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let seconds = report.timeline.len().max(1) as f64;
    let top = report
        .timeline
        .iter()
        .map(|s| s.latency_ms.p999)
        .fold(1.0f64, f64::max)
        * 1.1;
    let title = format!(
        "{:?} at {:.0}/s: latency over time (ms, by scheduled second)",
        report.scenario, report.target_rate
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ms")
        .draw()?;
    type Pick = fn(&Latency) -> f64;
    let series: [(&str, Pick, RGBColor); 3] = [
        ("p50", |l| l.p50, BLUE),
        ("p99", |l| l.p99, RED),
        ("p99.9", |l| l.p999, BLACK),
    ];
    for (name, pick, color) in series {
        chart
            .draw_series(LineSeries::new(
                report
                    .timeline
                    .iter()
                    .map(|s| (s.t as f64, pick(&s.latency_ms))),
                &color,
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
