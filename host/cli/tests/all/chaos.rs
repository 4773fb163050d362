//! A seeded run of faults over a fleet of real edges on a real PostgreSQL (see
//! `cart_testkit::chaos`): edges cut off from central and from each other, killed and
//! restarted, taken over while cut off, drained, while shoppers hammer two scarce SKUs. Every
//! answer shoppers got is checked against central afterwards, and the audit must pass. `make
//! bench` runs a longer one. `CART_CHAOS_SEED=N` runs it with another seed, to try more
//! schedules, or the one a failure printed again (its faults, not their exact timing).

use std::time::Duration;

use cart_testkit::chaos::{self, ChaosConfig};

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_run_of_faults_breaks_no_promise() {
    let report = chaos::run(&ChaosConfig {
        host: env!("CARGO_BIN_EXE_cart-host").into(),
        seed: std::env::var("CART_CHAOS_SEED")
            .map(|s| s.parse().expect("CART_CHAOS_SEED is a number"))
            .unwrap_or(20_261_205),
        duration: Duration::from_secs(30),
        ..ChaosConfig::default()
    })
    .await
    .expect("the run");
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert!(report.audit_passed, "{report}");
    assert!(
        report.faults.len() >= 4,
        "too few faults to mean much: {report}"
    );
    assert!(
        !report.confirmed.is_empty(),
        "no order went through: {report}"
    );
}
