//! The same servers under `wrk` (Debian's, a C load generator far cheaper than ours): closed
//! loop, `wrk -t1 -c32`, one client for the edge and both anchors in one run. For cart updates a
//! Lua script rotates over open carts and raises and lowers their quantity in turn, so every
//! request changes a hold; for the anchors, a plain `GET /`. What the script prints at the end is
//! the report (JSON), so nothing is scraped from wrk's text.
//!
//! Also here: the CPU an edge process spent (from `/proc`), for the CPU time per update that
//! does not depend on the client, and pinning processes to cores with `taskset`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// wrk's threads and connections: the client the issue's figures were taken with.
pub const THREADS: u32 = 1;
pub const CONNECTIONS: u32 = 32;

/// What one wrk run measured (latencies in ms).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WrkReport {
    pub requests: u64,
    /// Answers other than 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// 2xx answers per second.
    pub rate: f64,
}

impl WrkReport {
    pub fn clean(&self) -> bool {
        self.non_2xx == 0 && self.socket_errors == 0
    }
}

/// What the script's `done` prints: the report's raw counts, latencies in microseconds.
const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"non_2xx":%d,"socket_errors":%d,"micros":%d,"p50":%d,"p99":%d,"max":%d}\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

#[derive(Deserialize)]
struct Done {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    micros: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// A script that `GET`s the URL given to wrk.
pub fn get_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("wrk-get.lua");
    std::fs::write(&path, DONE)?;
    Ok(path)
}

/// A script that `GET`s `carts` (path, cart token) in turn.
pub fn reads_script(dir: &Path, carts: &[(String, String)]) -> anyhow::Result<PathBuf> {
    let request = r#"
request = function()
  local cart = carts[(n % #carts) + 1]
  n = n + 1
  return wrk.format("GET", cart[1], {["Authorization"] = cart[2]})
end
"#;
    carts_script(&dir.join("wrk-reads.lua"), carts, request)
}

/// A script that sets the quantity of `carts` (item path, cart token) in turn: 1, 2, 3, 1, ...
/// for each cart, so that every update raises or lowers a hold.
pub fn updates_script(dir: &Path, carts: &[(String, String)]) -> anyhow::Result<PathBuf> {
    let request = r#"
request = function()
  local cart = carts[(n % #carts) + 1]
  local quantity = (math.floor(n / #carts) % 3) + 1
  n = n + 1
  return wrk.format("PUT", cart[1],
    {["Authorization"] = cart[2], ["Content-Type"] = "application/json"},
    '{"quantity": ' .. quantity .. '}')
end
"#;
    carts_script(&dir.join("wrk-updates.lua"), carts, request)
}

/// A script at `path` with the table `carts` of {path, "Bearer token"}, a counter `n`, the
/// `request` function given and [`DONE`].
fn carts_script(path: &Path, carts: &[(String, String)], request: &str) -> anyhow::Result<PathBuf> {
    let mut lua = String::from("local carts = {\n");
    for (path, token) in carts {
        // Paths and tokens are ours (ids of [A-Za-z0-9_-]): quoted for Rust, they are Lua strings.
        let _ = writeln!(lua, "  {{{:?}, {:?}}},", path, format!("Bearer {token}"));
    }
    lua.push_str("}\nlocal n = 0\n");
    lua.push_str(request);
    lua.push_str(DONE);
    std::fs::write(path, lua)?;
    Ok(path.to_owned())
}

/// Runs `wrk -t1 -c32` with `script` against `url` for `duration`, on the cores `cpus` if given.
pub async fn run(
    url: &str,
    script: &Path,
    duration: Duration,
    cpus: Option<&str>,
) -> anyhow::Result<WrkReport> {
    let mut command = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    let out = command
        .arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .await
        .context("running wrk (Debian's package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("wrk printed no report: {text}"))?;
    let done: Done = serde_json::from_str(line).with_context(|| format!("wrk's report {line}"))?;
    let seconds = done.micros as f64 / 1e6;
    let ok = done.requests.saturating_sub(done.non_2xx);
    Ok(WrkReport {
        requests: done.requests,
        non_2xx: done.non_2xx,
        socket_errors: done.socket_errors,
        seconds,
        p50_ms: done.p50 / 1000.0,
        p99_ms: done.p99 / 1000.0,
        max_ms: done.max / 1000.0,
        rate: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
    })
}

/// Pins every thread of process `pid` (and the threads it starts from now on) to `cpus`.
pub async fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-c", "-p", cpus, &pid.to_string()])
        .output()
        .await
        .context("running taskset")?;
    anyhow::ensure!(
        out.status.success(),
        "taskset -a -c -p {cpus} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// CPU time (user and system) process `pid` has used so far, all its threads.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of proc(5), 12 and 13 after the name and state.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("/proc/{pid}/stat is short"))?
            .parse()?)
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks()))
}

/// `sysconf(_SC_CLK_TCK)`, as `getconf` reports it (asked once); Linux's is 100 everywhere but
/// on exotica.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
