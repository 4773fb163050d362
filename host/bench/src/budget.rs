//! Where an update's microseconds go on the writer, measured in this process with no HTTP and no
//! disk: one rules call in a fresh instance of the component (what every update pays), the same
//! call on the rules compiled natively, and the component's call once its instance is ready.

use std::path::Path;
use std::time::{Duration, Instant};

use cart_edge::rules::CartRules;
use cart_edge::wasm::{Runtime, SandboxLimits};
use cart_rules::{CartStatus, Line, SetRequest, SkuInfo};

use crate::native::NativeRules;

/// Calls per round, unless told.
pub const CALLS: u32 = 20_000;
/// Instances made ahead, as `serve --instances-ahead` would.
pub const AHEAD: usize = 16;
/// Rounds per measurement, of which the fastest counts (this machine's noise only slows).
const ROUNDS: usize = 5;

/// Microseconds per call on the calling thread (the best of [`ROUNDS`]).
pub struct Budget {
    /// `set_quantity` in a fresh instance the call makes itself: instantiate, call, reset.
    pub component_call_us: f64,
    /// The same with the module serving: its instances made ahead, spent ones reset, elsewhere.
    pub component_ahead_us: f64,
    /// The same call on the native rules.
    pub native_call_us: f64,
    /// What the component's module takes to compile and link, once per deploy (ms).
    pub load_ms: f64,
    pub module_bytes: u64,
    pub calls: u32,
}

pub fn run(module: &Path, calls: u32) -> anyhow::Result<Budget> {
    let bytes = std::fs::read(module)?;
    let runtime = Runtime::new(SandboxLimits::default())?;
    let started = Instant::now();
    let component = runtime.load(&bytes, "budget")?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let component_call_us = per_call(&component, calls)?;
    let ahead = Runtime::new(SandboxLimits {
        instances_ahead: AHEAD,
        ..SandboxLimits::default()
    })?
    .load(&bytes, "budget")?;
    ahead.set_serving(true);
    let component_ahead_us = per_call(&ahead, calls)?;
    ahead.set_serving(false);
    Ok(Budget {
        component_call_us,
        component_ahead_us,
        native_call_us: per_call(&NativeRules, calls)?,
        load_ms,
        module_bytes: bytes.len() as u64,
        calls,
    })
}

/// A raise from 1 to 2 of a held line: the update the benchmarks send most.
fn per_call(rules: &dyn CartRules, calls: u32) -> anyhow::Result<f64> {
    let sku = SkuInfo {
        sku: "SKU-0".into(),
        price_cents: 1999,
        limit_per_customer: 10_000,
        starts_at: 0,
        ends_at: i64::MAX,
        hold_ttl_ms: 600_000,
    };
    let line = Line {
        sku: "SKU-0".into(),
        quantity: 1,
        unit_price_cents: 1999,
        hold_expires_at: 2_000_000_000_000,
        held: true,
    };
    let request = SetRequest {
        now: 1_800_000_000_000,
        status: CartStatus::Open,
        sku: &sku,
        line: Some(&line),
        quantity: 2,
        free: 1_000_000,
        customer_elsewhere: 0,
    };
    // Warm up: the instance pool's slots, the allocator.
    for _ in 0..calls.min(1_000) {
        rules
            .set_quantity(&request)?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..calls {
            rules
                .set_quantity(&request)?
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        best = best.min(micros(started.elapsed()) / f64::from(calls));
    }
    Ok(best)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The budget's section of BENCHMARKS.md.
pub fn summary(s: &mut String, b: &Budget) {
    use std::fmt::Write as _;
    let _ = writeln!(s, "\n## The rules call, on its own\n");
    let _ = writeln!(
        s,
        "`set_quantity` called {} times in a row on one thread of this process (the best of \
         {ROUNDS} rounds), no HTTP, no SQLite: in a fresh instance of the component ({} bytes; compiled and linked in {:.0} ms, \
         once per deploy) each time, as the writer does for every update, and on the rules \
         compiled natively.\n",
        b.calls, b.module_bytes, b.load_ms
    );
    let _ = writeln!(s, "| rules | µs per call |\n| --- | --- |");
    let _ = writeln!(
        s,
        "| component, a fresh instance made and reset by the call | {:.2} |",
        b.component_call_us
    );
    let _ = writeln!(
        s,
        "| component, a fresh instance made ahead and reset on other threads (`serve --instances-ahead {AHEAD}`) | {:.2} |",
        b.component_ahead_us
    );
    let _ = writeln!(s, "| native | {:.2} |", b.native_call_us);
}
