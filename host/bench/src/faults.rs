//! The long randomized fault run (`cart_testkit::chaos`): a fleet of real edges on PostgreSQL
//! through partitions, kills, a take-over and a drain, while shoppers hammer scarce SKUs; every
//! confirmed order checked against central, and the audit. `make test` runs a short one.

use std::fmt::Write as _;
use std::time::Duration;

use cart_testkit::chaos::{self, ChaosConfig, ChaosReport};

use crate::harness::BenchConfig;

/// How long the faults go on.
pub const DURATION: Duration = Duration::from_secs(180);

/// Runs it, seeded from the clock (the seed is in the report, to run it again).
pub async fn run(cfg: &BenchConfig) -> anyhow::Result<ChaosReport> {
    let seed = cart_central::time::wall_ms().unsigned_abs();
    chaos::run(&ChaosConfig {
        host: cfg.host_bin.clone(),
        seed,
        duration: DURATION,
        shoppers: 24,
        customers: 1_000,
        stock: 200,
        ..ChaosConfig::default()
    })
    .await
}

pub fn summary(s: &mut String, r: &ChaosReport) {
    let _ = writeln!(
        s,
        "\n## Faults at random (`cart_testkit::chaos`)\n\n\
         Three edges on PostgreSQL, each behind links the run controls; {} s of a seeded schedule \
         of faults (edges cut off from central or from their peers, blackholed or refused; \
         `SIGKILL` and restarts; a take-over while cut off; a drain) while 24 shoppers buy two \
         SKUs of 200 units, limit 2. Then every order shoppers were told was placed is checked \
         against central, and `cart-host audit` runs.\n",
        DURATION.as_secs()
    );
    let _ = writeln!(
        s,
        "| seed | shopper requests | orders confirmed | faults | violations | audit |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} |\n",
        r.seed,
        r.operations,
        r.confirmed.len(),
        r.faults.len(),
        r.violations.len(),
        if r.audit_passed { "passed" } else { "FAILED" }
    );
    let _ = writeln!(s, "Answers by status: {:?}.\n", r.answers);
    for fault in &r.faults {
        let _ = writeln!(s, "- {fault}");
    }
    for v in &r.violations {
        let _ = writeln!(s, "- **VIOLATION** {v}");
    }
}
