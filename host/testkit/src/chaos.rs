//! A randomized fault run with a checker, in the manner of Jepsen: a fleet of real `cart-host`
//! edges on a real PostgreSQL, each behind links the run controls (to central, and from its
//! peers), shoppers hammering a few scarce SKUs, and a seeded schedule of faults: edges cut off
//! from central or from each other (blackholed or refused), killed with `SIGKILL` and restarted,
//! taken over while cut off, drained. Every answer shoppers got is recorded; after the faults
//! heal, [`check`] proves what the fleet promised: confirmed orders per SKU at most the stock,
//! every confirmed order at central exactly once, no customer past a limit. `cart-host audit`
//! must pass too.
//!
//! `make test` runs a short seeded run; `make bench` a long one, with its figures.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cart_central::Central;
use cart_central::sale::Sale;
use cart_central::time::{rfc3339, wall_ms};
use cart_edge::http_client::HttpClient;
use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::Postgres;
use crate::link::{Link, Mode};

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `cart-host` binary.
    pub host: PathBuf,
    pub seed: u64,
    /// How long faults are injected (then everything heals and the checks run).
    pub duration: Duration,
    pub edges: usize,
    /// Shoppers at once.
    pub shoppers: usize,
    /// Distinct customers the shoppers act for.
    pub customers: usize,
    /// SKUs, each with this stock and this limit per customer.
    pub skus: usize,
    pub stock: u32,
    pub limit: u32,
    /// Each edge's lease.
    pub lease_secs: u64,
    /// Mean time between faults.
    pub fault_every: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            host: PathBuf::from("target/release/cart-host"),
            seed: 1,
            duration: Duration::from_secs(30),
            edges: 3,
            shoppers: 12,
            customers: 400,
            skus: 2,
            stock: 40,
            limit: 2,
            lease_secs: 2,
            fault_every: Duration::from_secs(3),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    /// Shopper requests sent, and their answers by status.
    pub operations: u64,
    pub answers: BTreeMap<u16, u64>,
    /// Every fault injected, in order, with when.
    pub faults: Vec<String>,
    /// Orders shoppers were told were placed.
    pub confirmed: Vec<Confirmed>,
    /// What the checker found wrong (none, when the fleet kept its promises).
    pub violations: Vec<String>,
    /// What `cart-host audit` said.
    pub audit: String,
    pub audit_passed: bool,
}

/// An order a shopper was told was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    pub order_id: String,
    pub customer_id: String,
    /// `(sku, quantity)`.
    pub lines: Vec<(String, u32)>,
}

/// What the fleet's central holds, for the checker.
#[derive(Clone, Debug, Default)]
pub struct AtCentral {
    /// Every order central holds, by id, under any edge or retired history: `(sku, quantity)`
    /// lines. An order id twice is recorded in `twice`.
    pub orders: BTreeMap<String, Vec<(String, u32)>>,
    pub twice: Vec<String>,
}

/// The promises, checked against what shoppers were told and what central holds: confirmed
/// orders per SKU at most the stock, every confirmed order at central (once: central keeps one
/// row per order id, and one recorded twice under two edges is named), and no customer past a
/// limit by confirmed orders. Every way it is broken, in words.
pub fn check(
    confirmed: &[Confirmed],
    central: &AtCentral,
    stock: &BTreeMap<String, u32>,
    limit: u32,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut sold: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_customer: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for order in confirmed {
        if !seen.insert(order.order_id.as_str()) {
            violations.push(format!("order {} was confirmed twice", order.order_id));
            continue;
        }
        for (sku, n) in &order.lines {
            *sold.entry(sku).or_default() += u64::from(*n);
            *per_customer.entry((&order.customer_id, sku)).or_default() += u64::from(*n);
        }
        match central.orders.get(&order.order_id) {
            None => violations.push(format!(
                "order {} was confirmed to {} and is not at central",
                order.order_id, order.customer_id
            )),
            Some(lines) if *lines != order.lines => violations.push(format!(
                "order {} differs: confirmed {:?}, central holds {lines:?}",
                order.order_id, order.lines
            )),
            Some(_) => {}
        }
    }
    for id in &central.twice {
        violations.push(format!("central holds order {id} twice"));
    }
    let mut central_sold: BTreeMap<&str, u64> = BTreeMap::new();
    for lines in central.orders.values() {
        for (sku, n) in lines {
            *central_sold.entry(sku).or_default() += u64::from(*n);
        }
    }
    for (sku, total) in stock {
        for (what, sold) in [("confirmed", &sold), ("at central", &central_sold)] {
            let n = sold.get(sku.as_str()).copied().unwrap_or(0);
            if n > u64::from(*total) {
                violations.push(format!(
                    "{n} units of {sku} sold ({what}) of a stock of {total}"
                ));
            }
        }
    }
    for ((customer, sku), n) in per_customer {
        if n > u64::from(limit) {
            violations.push(format!(
                "customer {customer} was confirmed {n} of {sku}, past the limit of {limit}"
            ));
        }
    }
    violations
}

/// The admin token and fleet secret every edge of the run takes.
const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789";
const SECRET: &str = "chaos-fleet-secret-0123456789";

/// One process serving an edge id.
struct Process {
    edge_id: String,
    folder: PathBuf,
    /// Its log (warnings and errors), one per folder.
    log: PathBuf,
    child: Child,
    /// Where shoppers reach it.
    url: String,
    /// Its way to central, and its peers' way to it (its registered URL).
    to_central: Link,
    from_peers: Link,
    /// Taken over while cut off: kept to deliver its outbox, not shopped at.
    superseded: bool,
    /// Started with `--take-over`, as a restart of it is too (the same command line, as a
    /// service manager would run it).
    take_over: bool,
}

impl Process {
    /// Which process this is, for a report, with the end of its log.
    fn described(&self) -> String {
        format!(
            "{} ({}at {}; its log ends:\n{})",
            self.edge_id,
            if self.superseded { "superseded, " } else { "" },
            self.url,
            log_tail(&self.log, 20)
        )
    }
}

/// The run's state: the fleet's processes, by edge id, and where they live.
struct Fleet {
    dir: PathBuf,
    host: PathBuf,
    central_url: String,
    pg_target: SocketAddr,
    lease_secs: u64,
    processes: Vec<Process>,
    /// Shoppers' view: each edge id's current URL (none while it is down or gone).
    serving: Arc<Mutex<BTreeMap<String, String>>>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Fleet {
    /// Starts a process for `edge_id` on `folder`, behind fresh links.
    async fn start(&mut self, edge_id: &str, folder: &str, take_over: bool) -> anyhow::Result<()> {
        let port = free_port()?;
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let to_central = Link::start(self.pg_target).await?;
        let from_peers = Link::start(listen).await?;
        let central = to_central.url(&self.central_url, self.pg_target);
        let folder_path = self.dir.join(folder);
        let token = self.dir.join("admin-token");
        let secret = self.dir.join("fleet-secret");
        let log_path = self.dir.join(format!("{folder}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = Command::new(&self.host);
        command
            .arg("serve")
            .args(["--listen", &listen.to_string()])
            .args(["--data", &folder_path.display().to_string()])
            .args(["--edge-id", edge_id])
            .args(["--central", &central])
            .args(["--admin-token-file", &token.display().to_string()])
            .args(["--fleet-secret-file", &secret.display().to_string()])
            .args(["--public-url", &format!("http://{}", from_peers.addr())])
            .args(["--lease-secs", &self.lease_secs.to_string()])
            .args(["--drain-timeout", "10"])
            .env("CART_CREATE_RATE", "0")
            .env("CART_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if take_over {
            command.arg("--take-over");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.host.display()))?;
        let url = format!("http://{listen}");
        let client = HttpClient::new(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = client.get(&format!("{url}/healthz"), None).await;
            if up.is_ok_and(|r| r.status == StatusCode::OK) {
                break;
            }
            let exited = child.try_wait()?;
            if exited.is_some() || Instant::now() >= deadline {
                anyhow::bail!(
                    "{edge_id} on {folder} did not start ({}); its log ends:\n{}",
                    exited.map_or("no answer in 60 s".to_owned(), |s| s.to_string()),
                    log_tail(&log_path, 10)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(edge_id.to_owned(), url.clone());
        self.processes.push(Process {
            edge_id: edge_id.to_owned(),
            folder: folder_path,
            log: log_path,
            child,
            url,
            to_central,
            from_peers,
            superseded: false,
            take_over,
        });
        Ok(())
    }

    /// Where the live, current process of `edge_id` is in `processes`.
    fn current(&self, edge_id: &str) -> Option<usize> {
        self.processes
            .iter()
            .rposition(|p| p.edge_id == edge_id && !p.superseded)
    }

    fn unserve(&self, edge_id: &str) {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(edge_id);
    }
}

/// Runs the fleet through the faults, heals it, and checks it.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let dir = tempfile::Builder::new().prefix("cart-chaos-").tempdir()?;
    let pg = Postgres::start()?;
    let central_url = pg.database("chaos").await?;
    let pg_target: SocketAddr = format!("127.0.0.1:{}", pg.port).parse()?;
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN)?;
    std::fs::write(dir.path().join("fleet-secret"), SECRET)?;
    let skus: Vec<String> = (0..config.skus).map(|i| format!("SKU-{i}")).collect();
    let stock: BTreeMap<String, u32> = skus.iter().map(|s| (s.clone(), config.stock)).collect();
    let sale = Sale::parse(
        &json!({
            "sale_id": "chaos",
            "starts_at": rfc3339(wall_ms() - 60_000),
            // Holds lapse quickly, so the scarce units turn over and many orders go through.
            "hold_ttl_seconds": 5,
            "skus": skus.iter().map(|s| json!({"sku": s, "name": s, "price_cents": 1000,
                "stock": config.stock, "limit_per_customer": config.limit})).collect::<Vec<_>>(),
        })
        .to_string(),
    )?;
    Central::connect(&central_url)
        .await?
        .load_sale(&sale)
        .await?;

    let mut fleet = Fleet {
        dir: dir.path().to_owned(),
        host: config.host.clone(),
        central_url: central_url.clone(),
        pg_target,
        lease_secs: config.lease_secs,
        processes: Vec::new(),
        serving: Arc::default(),
    };
    let ids: Vec<String> = (1..=config.edges).map(|i| format!("edge-{i}")).collect();
    for id in &ids {
        fleet.start(id, id, false).await?;
    }

    let mut report = ChaosReport {
        seed: config.seed,
        ..ChaosReport::default()
    };
    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut shoppers = tokio::task::JoinSet::new();
    for n in 0..config.shoppers {
        let (serving, recorder, stop) = (
            Arc::clone(&fleet.serving),
            Arc::clone(&recorder),
            Arc::clone(&stop),
        );
        let (skus, customers, limit, seed) = (
            skus.clone(),
            config.customers,
            config.limit,
            config.seed.wrapping_mul(1000) + n as u64,
        );
        shoppers.spawn(async move {
            shop(serving, recorder, stop, skus, customers, limit, seed).await;
        });
    }

    let started = Instant::now();
    let mut drained = false;
    let mut takeovers = 0usize;
    // Drains cut short by their timeout, in words.
    let mut left_undone = Vec::new();
    while started.elapsed() < config.duration {
        let wait = config.fault_every.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(wait).await;
        let at = started.elapsed().as_secs_f64();
        let id = ids[rng.random_range(0..ids.len())].clone();
        let Some(i) = fleet.current(&id) else {
            continue;
        };
        let hold = Duration::from_millis(rng.random_range(500..4_000));
        // A take-over a third of the way in, a drain two thirds in; random faults around them.
        let elapsed = started.elapsed().as_secs_f64() / config.duration.as_secs_f64();
        let pick = if takeovers == 0 && elapsed > 0.33 {
            8
        } else if !drained && elapsed > 0.66 {
            9
        } else {
            rng.random_range(0..8)
        };
        let what = match pick {
            0..=2 => {
                let mode = if rng.random_bool(0.5) {
                    Mode::Blackholed
                } else {
                    Mode::Refused
                };
                fleet.processes[i].to_central.set(mode);
                tokio::time::sleep(hold).await;
                fleet.processes[i].to_central.heal();
                format!("{at:.1}s: {id} cut off from central ({mode:?}) for {hold:?}")
            }
            3..=4 => {
                fleet.processes[i].from_peers.set(Mode::Blackholed);
                tokio::time::sleep(hold).await;
                fleet.processes[i].from_peers.heal();
                format!("{at:.1}s: {id} cut off from its peers for {hold:?}")
            }
            5..=7 => {
                fleet.unserve(&id);
                let mut p = fleet.processes.remove(i);
                p.child.start_kill()?;
                p.child.wait().await?;
                tokio::time::sleep(hold).await;
                let folder = p
                    .folder
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let take_over = p.take_over;
                drop(p);
                fleet.start(&id, &folder, take_over).await?;
                format!("{at:.1}s: {id} killed (SIGKILL), restarted on its folder after {hold:?}")
            }
            8 => {
                // Cut off from central, then taken over elsewhere: the old process stops
                // selling at its lease's end, the new one waits for the lease at central.
                takeovers += 1;
                fleet.processes[i].to_central.set(Mode::Blackholed);
                fleet.processes[i].superseded = true;
                fleet.unserve(&id);
                let folder = format!("{id}-taken-{takeovers}");
                fleet.start(&id, &folder, true).await?;
                tokio::time::sleep(hold).await;
                for q in fleet.processes.iter().filter(|q| q.superseded) {
                    q.to_central.heal();
                }
                format!("{at:.1}s: {id} cut off from central and taken over on {folder}")
            }
            9 if ids.len() > 2 => {
                drained = true;
                fleet.unserve(&id);
                let mut p = fleet.processes.remove(i);
                let client = HttpClient::new(Duration::from_secs(5));
                let auth = format!("Bearer {ADMIN_TOKEN}");
                client
                    .send(
                        Method::POST,
                        &format!("{}/admin/drain", p.url),
                        &[("authorization", auth.as_str())],
                        "",
                    )
                    .await?;
                let exited = tokio::time::timeout(Duration::from_secs(30), p.child.wait()).await;
                anyhow::ensure!(exited.is_ok(), "{id} did not exit after its drain");
                // A drain cut short by its timeout warns (the edges log warnings only), and
                // leaves orders on a disk no process serves now, which the checks then miss.
                let log = std::fs::read_to_string(&p.log)?;
                if let Some(line) = log
                    .lines()
                    .find(|l| l.contains("drain ended with work left"))
                {
                    let said = line.split("drain ended").last().unwrap_or(line);
                    left_undone.push(format!("{id}'s drain ended{said}"));
                }
                format!("{at:.1}s: {id} drained and left the fleet")
            }
            _ => {
                drained = true;
                continue;
            }
        };
        report.faults.push(what);
    }
    stop.store(true, Ordering::SeqCst);
    while shoppers.join_next().await.is_some() {}

    // Heal everything; a superseded process delivers what it has, then stops.
    for p in &fleet.processes {
        p.to_central.heal();
        p.from_peers.heal();
    }
    let client = HttpClient::new(Duration::from_secs(5));
    let mut unsettled = Vec::new();
    for p in fleet.processes.iter_mut().filter(|p| p.superseded) {
        if !settle(&client, &p.url, Duration::from_secs(60)).await {
            unsettled.push(p.described());
        }
        p.child.start_kill()?;
        let _ = p.child.wait().await;
    }
    fleet.processes.retain(|p| !p.superseded);
    let live: Vec<String> = fleet.processes.iter().map(|p| p.url.clone()).collect();
    for p in &fleet.processes {
        if !settle(&client, &p.url, Duration::from_secs(60)).await {
            unsettled.push(p.described());
        }
    }

    report.operations = recorder.operations.load(Ordering::Relaxed);
    report.answers = recorder
        .answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    report.confirmed = recorder
        .confirmed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let at_central = at_central(&central_url).await?;
    report.violations = check(&report.confirmed, &at_central, &stock, config.limit);
    // Said first: what they left undelivered is what the checks above then miss at central.
    let undelivered = left_undone
        .into_iter()
        .chain(unsettled.into_iter().map(|process| {
            format!("{process} still had events to deliver a minute after the faults healed")
        }));
    report.violations.splice(0..0, undelivered);
    let audit = Command::new(&config.host)
        .arg("audit")
        .args(["--central", &central_url])
        .args(live.iter().flat_map(|u| ["--edge", u.as_str()]))
        .args([
            "--admin-token-file",
            &dir.path().join("admin-token").display().to_string(),
        ])
        .args(["--wait-secs", "60"])
        .output()
        .await?;
    report.audit_passed = audit.status.success();
    report.audit = String::from_utf8_lossy(&audit.stdout).into_owned();
    for p in &mut fleet.processes {
        let _ = p.child.start_kill();
        let _ = p.child.wait().await;
    }
    drop(pg);
    Ok(report)
}

/// The last `lines` lines of a process's log, for a report.
fn log_tail(log: &std::path::Path, lines: usize) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Waits until an edge has delivered its outbox; whether it did within the time.
async fn settle(client: &HttpClient, url: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let status = client
            .get(&format!("{url}/admin/status"), Some(ADMIN_TOKEN))
            .await;
        if let Ok(r) = status
            && r.json().is_ok_and(|s| s["outbox_backlog"] == 0)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Every order at central, under any edge or history.
pub async fn at_central(central_url: &str) -> anyhow::Result<AtCentral> {
    let central = Central::connect(central_url).await?;
    let mut found = AtCentral::default();
    for edge in central.snapshot().await?.edges.keys() {
        for o in central.orders_of(edge).await? {
            let lines = o
                .lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity))
                .collect();
            if found.orders.insert(o.order_id.clone(), lines).is_some() {
                found.twice.push(o.order_id);
            }
        }
    }
    Ok(found)
}

/// What the shoppers were told.
#[derive(Default)]
struct Recorder {
    operations: AtomicU64,
    answers: Mutex<BTreeMap<u16, u64>>,
    confirmed: Mutex<Vec<Confirmed>>,
}

impl Recorder {
    fn answered(&self, status: StatusCode) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        *self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status.as_u16())
            .or_default() += 1;
    }
}

/// One shopper: picks an edge, a customer and a SKU, holds, and about half the time checks
/// out; every answer recorded, every confirmed order kept.
async fn shop(
    serving: Arc<Mutex<BTreeMap<String, String>>>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    skus: Vec<String>,
    customers: usize,
    limit: u32,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let client = HttpClient::new(Duration::from_secs(10));
    while !stop.load(Ordering::SeqCst) {
        let urls: Vec<String> = serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        if urls.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let url = &urls[rng.random_range(0..urls.len())];
        let customer = format!("c-{}", rng.random_range(0..customers));
        let sku = &skus[rng.random_range(0..skus.len())];
        let quantity = rng.random_range(1..=limit);
        let checkout = rng.random_bool(0.5);
        let _ = visit(&client, &recorder, url, &customer, sku, quantity, checkout).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
    }
}

/// A cart, a hold, maybe a checkout; stops at the first answer that is not a success.
async fn visit(
    client: &HttpClient,
    recorder: &Recorder,
    url: &str,
    customer: &str,
    sku: &str,
    quantity: u32,
    checkout: bool,
) -> Option<()> {
    let send = |method: Method,
                path: String,
                token: Option<String>,
                headers: Vec<(&'static str, String)>,
                body: Value| async move {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            all.push(("authorization", a));
        }
        for (k, v) in &headers {
            all.push((k, v));
        }
        let answer = client
            .send(method, &format!("{url}{path}"), &all, body.to_string())
            .await;
        match answer {
            Ok(r) => {
                recorder.answered(r.status);
                Some((r.status, r.json().unwrap_or(Value::Null)))
            }
            Err(_) => {
                recorder.answered(StatusCode::GATEWAY_TIMEOUT);
                None
            }
        }
    };
    let (status, cart) = send(
        Method::POST,
        "/v1/carts".into(),
        None,
        Vec::new(),
        json!({ "customer_id": customer }),
    )
    .await?;
    if status != StatusCode::CREATED {
        return None;
    }
    let id = cart["cart_id"].as_str()?.to_owned();
    let token = cart["cart_token"].as_str()?.to_owned();
    let (status, _) = send(
        Method::PUT,
        format!("/v1/carts/{id}/items/{sku}"),
        Some(token.clone()),
        Vec::new(),
        json!({ "quantity": quantity }),
    )
    .await?;
    if status != StatusCode::OK || !checkout {
        return None;
    }
    let (status, order) = send(
        Method::POST,
        format!("/v1/carts/{id}/checkout"),
        Some(token),
        vec![("idempotency-key", format!("k-{id}"))],
        json!({}),
    )
    .await?;
    if status == StatusCode::CREATED {
        let lines = order["lines"]
            .as_array()?
            .iter()
            .filter_map(|l| {
                Some((
                    l["sku"].as_str()?.to_owned(),
                    u32::try_from(l["quantity"].as_u64()?).ok()?,
                ))
            })
            .collect();
        recorder
            .confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Confirmed {
                order_id: order["order_id"].as_str()?.to_owned(),
                customer_id: customer.to_owned(),
                lines,
            });
    }
    Some(())
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}: {} shopper requests, {} orders confirmed, {} faults injected, {} violations, audit {}",
            self.seed,
            self.operations,
            self.confirmed.len(),
            self.faults.len(),
            self.violations.len(),
            if self.audit_passed {
                "passed"
            } else {
                "FAILED"
            }
        )?;
        writeln!(f, "answers by status: {:?}", self.answers)?;
        for fault in &self.faults {
            writeln!(f, "  fault {fault}")?;
        }
        for v in &self.violations {
            writeln!(f, "  VIOLATION {v}")?;
        }
        if !self.audit_passed {
            write!(f, "{}", self.audit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, customer: &str, n: u32) -> Confirmed {
        Confirmed {
            order_id: id.into(),
            customer_id: customer.into(),
            lines: vec![("SKU-0".into(), n)],
        }
    }

    /// The checker is trusted only because it fails on each broken promise.
    #[test]
    fn the_checker_names_every_broken_promise() {
        let stock = BTreeMap::from([("SKU-0".to_owned(), 3)]);
        let kept = vec![order("o1", "ann", 1), order("o2", "bob", 2)];
        let mut central = AtCentral::default();
        for o in &kept {
            central.orders.insert(o.order_id.clone(), o.lines.clone());
        }
        assert_eq!(check(&kept, &central, &stock, 2), Vec::<String>::new());

        let mut lost = kept.clone();
        lost.push(order("o3", "cat", 1));
        let found = check(&lost, &central, &stock, 2);
        assert!(
            found
                .iter()
                .any(|v| v.contains("o3") && v.contains("not at central")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|v| v.contains("4 units of SKU-0 sold (confirmed)")),
            "{found:?}"
        );

        let mut greedy = kept.clone();
        greedy.push(order("o4", "bob", 1));
        let mut with_o4 = central.clone();
        with_o4
            .orders
            .insert("o4".into(), vec![("SKU-0".into(), 1)]);
        let found = check(&greedy, &with_o4, &stock, 2);
        assert!(
            found
                .iter()
                .any(|v| v.contains("customer bob was confirmed 3")),
            "{found:?}"
        );

        let mut doubled = central.clone();
        doubled.twice.push("o1".into());
        let found = check(&kept, &doubled, &stock, 2);
        assert!(found.iter().any(|v| v.contains("o1 twice")), "{found:?}");

        let mut changed = central.clone();
        changed
            .orders
            .insert("o2".into(), vec![("SKU-0".into(), 1)]);
        let found = check(&kept, &changed, &stock, 2);
        assert!(found.iter().any(|v| v.contains("o2 differs")), "{found:?}");
    }
}
