//! The test harness: a SQLite central in a temporary folder, edges served in-process on
//! `127.0.0.1:0` with the real component, or as real `cart-host` processes, and a client.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cart_central::Central;
use cart_central::sale::Sale;
use cart_edge::clock::{Clock, rfc3339, wall_ms};
use cart_edge::edge::EdgeConfig;
use cart_edge::http_client::{HttpClient, HttpResponse};
use cart_edge::server::{self, RunningEdge};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "test-admin-token";

fn built(var: &str, file: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/wasm32-wasip2/release")
            .join(file)
    });
    assert!(
        path.exists(),
        "{} is missing: run the tests with `make test`, which builds the components",
        path.display()
    );
    path
}

/// A component's bytes, as an edge takes them.
pub fn module(path: PathBuf) -> cart_edge::edge::ModuleBytes {
    cart_edge::edge::ModuleBytes::read(&path).expect("the component")
}

/// The real cart component, as `make guest` builds it.
pub fn guest_wasm() -> PathBuf {
    built("CART_GUEST_WASM", "cart_guest.wasm")
}

/// The component whose checkout forgets idempotency (`guest/faulty`, feature `smoke-fail`).
pub fn smoke_fail_wasm() -> PathBuf {
    built("CART_SMOKE_FAIL_WASM", "cart_guest_smoke_fail.wasm")
}

/// One of the worked examples of one's own rules (`guest/examples/NAME`), as `make guest`
/// builds it.
pub fn example_wasm(name: &str) -> PathBuf {
    built(
        &format!("CART_{}_WASM", name.to_uppercase().replace('-', "_")),
        &format!("cart_rules_{}.wasm", name.replace('-', "_")),
    )
}

/// The deliberately broken component (`guest/faulty`).
pub fn faulty_wasm() -> PathBuf {
    built("CART_FAULTY_WASM", "cart_guest_faulty.wasm")
}

/// A sale starting `starts_in_secs` from now (negative: already started).
pub fn sale(skus: &[(&str, u32, u32)], starts_in_secs: i64) -> Sale {
    sale_of("test-sale", skus, starts_in_secs, starts_in_secs + 86_400)
}

/// A sale of `skus` (code, stock, limit) from `starts_in` to `ends_in` seconds from now.
pub fn sale_of(id: &str, skus: &[(&str, u32, u32)], starts_in: i64, ends_in: i64) -> Sale {
    let now = wall_ms();
    let skus: Vec<Value> = skus
        .iter()
        .map(|(sku, stock, limit)| {
            json!({"sku": sku, "name": format!("{sku} item"), "price_cents": 1000,
                   "stock": stock, "limit_per_customer": limit})
        })
        .collect();
    Sale::parse(
        &json!({"sale_id": id, "starts_at": rfc3339(now + starts_in * 1000),
                "ends_at": rfc3339(now + ends_in * 1000), "hold_ttl_seconds": 600,
                "skus": skus})
        .to_string(),
    )
    .expect("a valid sale")
}

/// The ledger of one of the test sale's SKUs in a central snapshot.
pub fn ledger<'a>(snapshot: &'a cart_central::Snapshot, sku: &str) -> &'a cart_central::SkuLedger {
    &snapshot.skus[&cart_central::SkuKey::new("test-sale", sku)]
}

/// A central database (SQLite) with a sale loaded, in its own temporary folder.
pub struct Fleet {
    pub dir: TempDir,
    pub central_url: String,
    /// The CA the edges' certificates are checked against, for a fleet over HTTPS.
    pub fleet_ca: Option<PathBuf>,
}

impl Fleet {
    /// What the process `name` of the fleet (an edge, a relay) wrote to its log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The last `lines` lines of every log in the fleet's folder, for a failure's message: a
    /// fault seen only on a loaded CI machine is explained by what the processes said.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| {
                let log = self.log(name);
                let all: Vec<&str> = log.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!("--- the last {lines} lines of {name}.log:\n{tail}\n")
            })
            .collect()
    }

    /// A fleet around a SQLite central in its temporary folder.
    pub async fn new(sale: &Sale) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let central_url = format!("sqlite:{}", dir.path().join("central.db").display());
        Self::with_dir(dir, central_url, sale).await
    }

    /// A fleet around the central database at `central_url` (PostgreSQL, say).
    pub async fn on(central_url: String, sale: &Sale) -> Self {
        Self::with_dir(tempfile::tempdir().expect("tempdir"), central_url, sale).await
    }

    /// A fleet folder around the central database at `central_url`, which is left as it is
    /// (not migrated, no sale loaded).
    pub fn on_unmigrated(central_url: String) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            central_url,
            fleet_ca: None,
        }
    }

    async fn with_dir(dir: TempDir, central_url: String, sale: &Sale) -> Self {
        let central = Central::connect(&central_url).await.expect("central");
        central.load_sale(sale).await.expect("load sale");
        Self {
            dir,
            central_url,
            fleet_ca: None,
        }
    }

    pub fn config(&self, edge_id: &str) -> EdgeConfig {
        EdgeConfig {
            edge_id: edge_id.into(),
            data_dir: self.dir.path().join(edge_id),
            central_url: self.central_url.clone(),
            module: module(guest_wasm()),
            admin_token: Some(ADMIN_TOKEN.into()),
            // The suite runs many edges at once on two cores: central may be slow to answer,
            // and "exactly N sold" must not depend on it answering within 150 ms.
            shortage_wait: Duration::from_secs(5),
            // Tests make hundreds of carts a second from one address.
            create_rate: cart_edge::config::CreateRate::UNLIMITED,
            ..EdgeConfig::default()
        }
    }

    /// An edge served in-process on 127.0.0.1:0.
    pub async fn edge(&self, edge_id: &str) -> TestEdge {
        self.edge_with(self.config(edge_id)).await
    }

    pub async fn edge_with(&self, config: EdgeConfig) -> TestEdge {
        let clock = config.clock.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = server::start(listener, config).await.expect("edge starts");
        let client = Client::trusting(&running.url, self.fleet_ca.as_deref());
        TestEdge {
            client,
            clock,
            running,
        }
    }

    pub async fn central(&self) -> Central {
        Central::connect(&self.central_url).await.expect("central")
    }
}

/// An in-process edge and a client for it.
pub struct TestEdge {
    pub client: Client,
    pub clock: Clock,
    /// Dropping it shuts the edge down.
    running: RunningEdge,
}

impl TestEdge {
    /// The running edge's parts, for tests that reach past HTTP.
    pub fn edge(&self) -> &std::sync::Arc<cart_edge::edge::Edge> {
        &self.running.edge
    }

    /// Resolves once the edge was told to stop (after a drain).
    pub async fn stopped(&self) {
        self.running.until_stopped().await;
    }

    /// Stops serving and waits for the edge to wind down.
    pub async fn stop(self) {
        self.running.stop().await.expect("the edge stops");
    }
}

impl std::ops::Deref for TestEdge {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A storefront's view of one edge.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    http: HttpClient,
}

/// A cart a test created: its id and token.
#[derive(Clone, Debug)]
pub struct CartRef {
    pub id: String,
    pub token: String,
}

impl CartRef {
    /// The cart a `201` to `POST /v1/carts` made.
    pub fn from_created(body: &Value) -> Self {
        Self {
            id: body["cart_id"].as_str().expect("cart_id").to_owned(),
            token: body["cart_token"].as_str().expect("cart_token").to_owned(),
        }
    }
}

impl Client {
    pub fn new(url: &str) -> Self {
        Self::trusting(url, None)
    }

    /// A client that checks an `https://` edge's certificate against `ca` (a PEM file).
    pub fn trusting(url: &str, ca: Option<&std::path::Path>) -> Self {
        Self {
            url: url.to_owned(),
            http: HttpClient::trusting(Duration::from_secs(30), ca).expect("the fleet CA"),
        }
    }

    /// Sends a request; `token` goes in `Authorization: Bearer`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpResponse {
        self.try_send(method, path, token, extra, body)
            .await
            .expect("the edge answers")
    }

    /// Like [`Self::send`], for edges that may be gone.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<HttpResponse> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        headers.extend_from_slice(extra);
        self.http
            .send(method, &format!("{}{path}", self.url), &headers, body)
            .await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let r = self.send(method, path, token, &[], bytes).await;
        let json = if r.body.is_empty() {
            Value::Null
        } else {
            r.json().expect("JSON")
        };
        (r.status, json)
    }

    pub async fn create_cart(&self, customer: &str) -> CartRef {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/carts",
                None,
                json!({"customer_id": customer}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        CartRef::from_created(&body)
    }

    pub async fn set(&self, cart: &CartRef, sku: &str, quantity: i64) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            &format!("/v1/carts/{}/items/{sku}", cart.id),
            Some(&cart.token),
            json!({ "quantity": quantity }),
        )
        .await
    }

    /// `GET /v1/carts/{id}` with the cart's token: the whole answer, headers too.
    pub async fn cart_response(&self, cart: &CartRef) -> HttpResponse {
        self.send(
            Method::GET,
            &format!("/v1/carts/{}", cart.id),
            Some(&cart.token),
            &[],
            "",
        )
        .await
    }

    pub async fn get_cart(&self, cart: &CartRef) -> (StatusCode, Value) {
        self.call(
            Method::GET,
            &format!("/v1/carts/{}", cart.id),
            Some(&cart.token),
            Value::Null,
        )
        .await
    }

    pub async fn checkout(&self, cart: &CartRef, key: &str) -> (StatusCode, Value) {
        let r = self
            .send(
                Method::POST,
                &format!("/v1/carts/{}/checkout", cart.id),
                Some(&cart.token),
                &[("idempotency-key", key)],
                "{}",
            )
            .await;
        (r.status, r.json().expect("JSON"))
    }

    pub async fn available(&self, sku: &str) -> u64 {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/skus/{sku}"), None, Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["available_here"].as_u64().expect("available_here")
    }

    pub async fn status(&self) -> Value {
        let (status, body) = self
            .call(Method::GET, "/admin/status", Some(ADMIN_TOKEN), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A figure from the edge's `/metrics` (counters by their `_total` name).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let r = self.send(Method::GET, "/metrics", None, &[], "").await;
        metric_in(&r.body, name)
    }

    pub async fn healthy(&self) -> bool {
        self.http
            .get(&format!("{}/healthz", self.url), None)
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    }
}

/// Runs the audit against the fleet's central and these edges; fails with its report unless it
/// passes.
pub async fn audit_passes(fleet: &Fleet, edges: impl IntoIterator<Item = String>) {
    let report = audit_report(fleet, edges, Duration::from_secs(60)).await;
    assert!(report.passed(), "{report}\n{}", fleet.logs_tail(40));
}

/// Runs the audit, waiting at most `wait` for the edges to settle; its report.
pub async fn audit_report(
    fleet: &Fleet,
    edges: impl IntoIterator<Item = String>,
    wait: Duration,
) -> cart_host::commands::audit::AuditReport {
    cart_host::commands::audit::run(&cart_host::commands::audit::AuditConfig {
        central: fleet.central_url.clone(),
        edges: edges.into_iter().collect(),
        admin_token: Some(ADMIN_TOKEN.into()),
        wait,
        fleet_ca: fleet.fleet_ca.clone(),
    })
    .await
    .expect("audit runs")
}

/// The sum of a figure of `/admin/status` over the edges.
pub async fn sum_of(clients: &[Client], field: &str) -> i64 {
    let mut sum = 0;
    for c in clients {
        sum += c.status().await[field].as_i64().unwrap_or(0);
    }
    sum
}

/// Polls `check` until it returns true, failing after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_or(what, within, check, String::new).await;
}

/// [`eventually`], failing with what `explain` says then (a log, say), so that a failure seen
/// once in CI can be read afterwards.
pub async fn eventually_or<F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
    explain: impl Fn() -> String,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            explain()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real `cart-host serve` process.
pub struct EdgeProcess {
    pub child: tokio::process::Child,
    pub client: Client,
}

impl EdgeProcess {
    /// Starts `cart-host serve` on a free port and waits until it answers `/healthz`.
    pub async fn start(fleet: &Fleet, edge_id: &str) -> Self {
        Self::start_with(fleet, edge_id, edge_id, &[]).await
    }

    /// Starts `cart-host serve` for `edge_id` on the data folder `folder` (in the fleet's
    /// folder), with `extra` flags; waits until it serves.
    pub async fn start_with(fleet: &Fleet, edge_id: &str, folder: &str, extra: &[&str]) -> Self {
        Self::start_env(fleet, edge_id, folder, extra, &[]).await
    }

    /// [`Self::start_with`], with these environment variables set too.
    pub async fn start_env(
        fleet: &Fleet,
        edge_id: &str,
        folder: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let mut child = serve(fleet, edge_id, folder, port, extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file(fleet, edge_id))
            .kill_on_drop(true)
            .spawn()
            .expect("cart-host starts");
        let scheme = if extra.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        let client = Client::trusting(
            &format!("{scheme}://127.0.0.1:{port}"),
            fleet.fleet_ca.as_deref(),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client.healthy().await {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(fleet.dir.path().join(format!("{edge_id}.log")));
                panic!(
                    "cart-host serve exited with {status}: {}",
                    log.unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the edge process did not serve");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, client }
    }

    /// Runs `cart-host serve` expecting it to refuse to start: its exit status and what it said.
    pub async fn refused(
        fleet: &Fleet,
        edge_id: &str,
        folder: &str,
        extra: &[&str],
    ) -> (std::process::ExitStatus, String) {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            serve(fleet, edge_id, folder, free_port(), extra)
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("cart-host serve gave up within a minute")
        .expect("cart-host runs");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("a running process")
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }
}

/// `cart-host serve` for an edge of the fleet.
fn serve(
    fleet: &Fleet,
    edge_id: &str,
    folder: &str,
    port: u16,
    extra: &[&str],
) -> tokio::process::Command {
    let token_file = fleet.dir.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).expect("token file");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"));
    // The fleet's central and operator token, unless the test names others.
    if !extra.contains(&"--central") {
        command.env("CART_CENTRAL", &fleet.central_url);
    }
    command.env("CART_ADMIN_TOKEN_FILE", &token_file);
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--data",
            &fleet.dir.path().join(folder).display().to_string(),
        ])
        .args(["--edge-id", edge_id])
        .args(extra)
        // Tests make hundreds of carts a second from one address; `--create-rate` overrides.
        .env("CART_CREATE_RATE", "0")
        // As `Fleet::config`'s: on two busy cores central may take longer than 150 ms.
        .env("CART_SHORTAGE_WAIT_MS", "5000")
        .env("CART_LOG", "warn");
    command
}

/// The edge process's log, appended across restarts, kept in the fleet's folder.
fn log_file(fleet: &Fleet, edge_id: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(fleet.dir.path().join(format!("{edge_id}.log")))
        .map_or_else(|_| Stdio::inherit(), Stdio::from)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A port for `cart-host demo --port`: free, and the next one too (its second edge's).
pub fn demo_port() -> u16 {
    free_run(1)
}

/// A free port whose next `n` ports are free too: `cart-host scale --base-port`, whose edge N
/// listens on the base port + N.
pub fn free_run(n: u16) -> u16 {
    loop {
        let port = free_port();
        let next_free = |k: u16| {
            port.checked_add(k)
                .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        };
        if (1..=n).all(next_free) {
            return port;
        }
    }
}

/// The repository's top folder.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A real `cart-host relay` process, with its `/metrics` on a free port.
pub struct RelayProcess {
    child: tokio::process::Child,
    metrics: String,
}

impl RelayProcess {
    /// Starts `cart-host relay` between `queue` and the fleet's central; waits until it serves
    /// its metrics.
    pub async fn start(fleet: &Fleet, queue: &str, name: &str) -> Self {
        Self::start_with(fleet, queue, name, &[]).await
    }

    /// [`Self::start`] with more flags.
    pub async fn start_with(fleet: &Fleet, queue: &str, name: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
            .arg("relay")
            .args(["--queue", queue, "--central", &fleet.central_url])
            .args(extra)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--report-secs",
                "1",
            ])
            .env("CART_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file(fleet, name))
            .kill_on_drop(true)
            .spawn()
            .expect("cart-host relay starts");
        let relay = Self {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.metric("cart_relay_lag_messages").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "the relay {name} did not serve its metrics; its log:\n{}",
                std::fs::read_to_string(fleet.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay
    }

    /// A figure from `/metrics` (counters by their `_total` name), if the relay answers.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let r = HttpClient::default().get(&self.metrics, None).await.ok()?;
        metric_in(&r.body, name)
    }

    /// `kill -9`: whatever it took from the stream and did not acknowledge is delivered again.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }
}

/// A figure of a Prometheus text exposition, by its full name.
fn metric_in(body: &[u8], name: &str) -> Option<f64> {
    String::from_utf8_lossy(body).lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Claims `edge` at `central` (history `h-EDGE`, process `i-EDGE`) with `key` for its events,
/// and grants it each `(sku, units)` of the test sale: central refuses holds and orders an
/// edge was never allotted.
pub async fn claimed_with_units(
    central: &cart_central::Central,
    edge: &str,
    key: &cart_central::events::EventKey,
    units: &[(&str, u32)],
) {
    central
        .claim_edge(&cart_central::Claim {
            edge_id: edge.into(),
            url: format!("http://{edge}"),
            history_id: format!("h-{edge}"),
            incarnation: format!("i-{edge}"),
            previous_incarnation: None,
            local_seq: 0,
            lease_ms: 60_000,
            take_over: false,
            taking_over: false,
            folder: format!("folder-{edge}"),
            public_key: key.public_key(),
        })
        .await
        .expect("claim");
    for &(sku, requested) in units {
        central
            .grant(&cart_central::GrantRequest {
                grant_id: format!("g-{edge}-{sku}"),
                edge_id: edge.into(),
                incarnation: format!("i-{edge}"),
                sale_id: "test-sale".into(),
                sku: sku.into(),
                requested,
                again: false,
                known: Default::default(),
            })
            .await
            .expect("grant");
    }
}

/// The event of an order of `quantity` BAG-1 of the test sale, at 100 cents each, placed now.
pub fn bag_order(
    order_id: &str,
    cart_id: &str,
    customer_id: &str,
    quantity: u32,
) -> cart_central::events::OutboxEvent {
    cart_central::events::OutboxEvent::OrderPlaced(cart_central::events::Order {
        order_id: order_id.into(),
        cart_id: cart_id.into(),
        customer_id: customer_id.into(),
        lines: vec![cart_central::events::EventLine {
            sale_id: "test-sale".into(),
            sku: "BAG-1".into(),
            quantity,
            unit_price_cents: 100,
        }],
        total_cents: 100 * i64::from(quantity),
        placed_at: wall_ms(),
    })
}
