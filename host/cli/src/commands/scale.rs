//! `cart-host scale`: a reference scaler on one machine, a stand-in for the orchestrator a real
//! fleet uses (a Kubernetes StatefulSet with a HorizontalPodAutoscaler and a Service). It starts
//! `cart-host serve` processes between `--min-edges` and `--max-edges`, puts one address in front
//! of them that sends each request to an edge whose `/readyz` answers `200`, reads every edge's
//! `/metrics` each second, and grows or drains the fleet by the policy below. It uses only the
//! public mechanics: start a process, `SIGTERM` it (the edge drains and exits), `/readyz`,
//! `/metrics`.
//!
//! With `--tls-cert` and `--tls-key`, the front door serves HTTPS with that certificate, every
//! edge is started with it (and with `--fleet-ca`, for mutual TLS among them), and the door
//! reaches the edges at `https://127.0.0.1:PORT`: the certificate must name `127.0.0.1`, and be
//! signed by `--fleet-ca` or by a CA the system trusts.
//!
//! The policy, each second, over the edges that are ready:
//! - `wanted = ceil(Σ recent cart updates per second / --target-updates-per-edge)`, within the
//!   bounds; one more than now when any edge's recent p99 is over `--max-p99-ms`, unless the
//!   size changed within that window (a drain's hand-offs slow a few requests: the fleet must
//!   not grow on its own changes);
//! - grow by one edge when `wanted` is above the size and the last change is `--cool-down-secs`
//!   old;
//! - drain the newest edge when `wanted` has stayed below the size for `--scale-in-after-secs`
//!   and the last change is `--cool-down-secs` old.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use cart_edge::http_client::HttpClient;
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    central: super::CentralArgs,
    /// The one address shoppers use: each request goes on to a ready edge.
    #[arg(long, env = "CART_SCALE_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
    /// Folder that holds each edge's data folder (`edge-1`, `edge-2`, ...); made if missing.
    #[arg(long, env = "CART_SCALE_DATA")]
    data: PathBuf,
    /// The edges' ids are this, a dash and a number (`edge-1`, ...): give each scaler on one
    /// central its own, since an edge id is one history.
    #[arg(long, env = "CART_SCALE_EDGE_PREFIX", default_value = "edge")]
    edge_prefix: String,
    /// Edge N listens on 127.0.0.1 at this port + N.
    #[arg(long, env = "CART_SCALE_BASE_PORT", default_value_t = 9100)]
    base_port: u16,
    /// The fewest edges: started at once, and never drained below.
    #[arg(long, env = "CART_SCALE_MIN_EDGES", default_value_t = 1)]
    min_edges: usize,
    /// The most edges, however high the load.
    #[arg(long, env = "CART_SCALE_MAX_EDGES", default_value_t = 4)]
    max_edges: usize,
    /// Cart updates a second one edge is meant to take. (On a two-core machine extra edges add
    /// no capacity; a low target shows the mechanics.)
    #[arg(
        long,
        env = "CART_SCALE_TARGET_UPDATES_PER_EDGE",
        default_value_t = 1_000.0
    )]
    target_updates_per_edge: f64,
    /// Grow when an edge's recent p99 of cart updates is over this.
    #[arg(long, env = "CART_SCALE_MAX_P99_MS", default_value_t = 250)]
    max_p99_ms: u64,
    /// Least time between two changes of the fleet's size, in seconds.
    #[arg(long, env = "CART_SCALE_COOL_DOWN_SECS", default_value_t = 5)]
    cool_down_secs: u64,
    /// How long the fleet must have been larger than wanted before an edge is drained.
    #[arg(long, env = "CART_SCALE_IN_AFTER_SECS", default_value_t = 15)]
    scale_in_after_secs: u64,
    /// Write the fleet's size and signal, a JSON line a second, to this file (its folder is
    /// made if missing).
    #[arg(long, env = "CART_SCALE_RECORD")]
    record: Option<PathBuf>,
    #[command(flatten)]
    tls: super::ServeTlsArgs,
    /// Arguments for every `cart-host serve` (after `--`): `--fleet-secret-file` at least.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

/// The window the edges' recent figures cover (`cart_recent_*` in `/metrics`).
const SIGNAL_WINDOW: Duration = Duration::from_secs(10);

/// One edge process the scaler started.
struct Edge {
    number: usize,
    id: String,
    url: String,
    child: tokio::process::Child,
    /// Its writer's busy seconds at the last reading, and when.
    busy: Option<(f64, Instant)>,
    started: Instant,
    /// Exits in a row, each soon after its start: the next start waits longer.
    quick_exits: u32,
    /// When an edge that exited is to be started again.
    restart_at: Option<Instant>,
}

/// An edge that ran this long before it exited starts again at once.
const RAN_WELL: Duration = Duration::from_secs(30);

/// How long to wait before starting an edge that exited again: nothing after a good run, then
/// 1 s, 2 s, 4 s ... up to a minute while it keeps exiting at once (a reused edge id, a port
/// taken, central refusing it), so that a fault is said once a while, not every second.
fn backoff(quick_exits: u32) -> Duration {
    if quick_exits == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs(1 << quick_exits.min(6).saturating_sub(1)).min(Duration::from_secs(60))
    }
}

/// What the scaler read of the fleet in one second.
#[derive(Default, Serialize)]
struct Reading {
    at_ms: i64,
    edges: usize,
    ready: usize,
    updates_per_second: f64,
    worst_p99_ms: f64,
    mean_writer_utilisation: f64,
    wanted: usize,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} wanted for {:.0} updates/s, {} of {} ready, worst p99 {:.1} ms, writers {:.0}% busy",
            self.wanted,
            self.updates_per_second,
            self.ready,
            self.edges,
            self.worst_p99_ms,
            self.mean_writer_utilisation * 100.0
        )
    }
}

/// The front door's view: the ready edges' URLs.
#[derive(Clone, Default)]
struct Door {
    ready: Arc<RwLock<Vec<String>>>,
    next: Arc<AtomicUsize>,
    client: Arc<HttpClient>,
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let stop = super::shutdown_signal();
    anyhow::ensure!(
        args.min_edges >= 1 && args.min_edges <= args.max_edges,
        "--min-edges must be at least 1 and at most --max-edges"
    );
    anyhow::ensure!(
        args.target_updates_per_edge > 0.0,
        "--target-updates-per-edge must be above 0"
    );
    let tls = args
        .tls
        .files()
        .map(|files| cart_edge::tls::EdgeTls::load(&files))
        .transpose()?
        .map(Arc::new);
    let fleet_ca = args.tls.files().and_then(|files| files.fleet_ca);
    let door = Door {
        client: Arc::new(super::edge_client(
            fleet_ca.as_deref(),
            Duration::from_secs(10),
        )?),
        ..Door::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let app = axum::Router::new()
        .fallback(pass_on)
        .with_state(door.clone());
    // Served as an edge is: a request's head and body each get a deadline, idle keep-alive
    // connections close.
    let (_never, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(cart_edge::server::serve(
        listener,
        cart_edge::http::App::from_router(app),
        tls.as_deref().map(cart_edge::tls::EdgeTls::acceptor),
        stopped,
        cart_edge::config::HttpLimits::default(),
    ));
    if let Some(tls) = &tls {
        tokio::spawn(reload_certificate(Arc::clone(tls)));
    }
    println!("the fleet's address: {}://{}", scheme(&args), args.listen);
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("making {}", args.data.display()))?;
    let mut record = match &args.record {
        Some(path) => {
            if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(folder)
                    .with_context(|| format!("making {}", folder.display()))?;
            }
            Some(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )
        }
        None => None,
    };
    let mut edges: Vec<Edge> = Vec::new();
    let mut draining: Vec<Edge> = Vec::new();
    let mut numbers = 0usize;
    let mut last_change = Instant::now() - Duration::from_secs(args.cool_down_secs);
    let mut oversized_since: Option<Instant> = None;
    let client = super::edge_client(fleet_ca.as_deref(), Duration::from_secs(1))?;
    tokio::pin!(stop);
    loop {
        while edges.len() < args.min_edges {
            numbers += 1;
            edges.push(start_edge(&args, numbers)?);
            last_change = Instant::now();
        }
        let mut reading = Reading {
            at_ms: cart_central::time::wall_ms(),
            edges: edges.len(),
            ..Reading::default()
        };
        let mut ready = Vec::new();
        let mut busy = Vec::new();
        for edge in &mut edges {
            // An edge that died is started again on its folder, as an orchestrator would.
            if edge.restart_at.is_none()
                && let Ok(Some(status)) = edge.child.try_wait()
            {
                if edge.started.elapsed() >= RAN_WELL {
                    edge.quick_exits = 0;
                }
                let wait = backoff(edge.quick_exits);
                println!(
                    "{} exited ({status}): starting it again in {wait:?}",
                    edge.id
                );
                edge.restart_at = Some(Instant::now() + wait);
            }
            if let Some(at) = edge.restart_at {
                if Instant::now() < at {
                    continue;
                }
                let quick_exits = edge.quick_exits + 1;
                *edge = start_edge(&args, edge.number)?;
                edge.quick_exits = quick_exits;
                continue;
            }
            let up = client
                .get(&format!("{}/readyz", edge.url), None)
                .await
                .is_ok_and(|r| r.status == StatusCode::OK);
            let Ok(metrics) = client.get(&format!("{}/metrics", edge.url), None).await else {
                continue;
            };
            let text = String::from_utf8_lossy(&metrics.body);
            let figure = |name: &str| -> f64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                    .unwrap_or(0.0)
            };
            reading.updates_per_second += figure("cart_recent_cart_updates_per_second");
            reading.worst_p99_ms = reading
                .worst_p99_ms
                .max(figure("cart_recent_cart_update_p99_seconds") * 1_000.0);
            let now = (figure("cart_writer_busy_seconds_total"), Instant::now());
            if let Some((before, at)) = edge.busy {
                busy.push((now.0 - before) / now.1.duration_since(at).as_secs_f64().max(0.001));
            }
            edge.busy = Some(now);
            if up {
                ready.push(edge.url.clone());
            }
        }
        reading.ready = ready.len();
        reading.mean_writer_utilisation = if busy.is_empty() {
            0.0
        } else {
            busy.iter().sum::<f64>() / busy.len() as f64
        };
        *door.ready.write().unwrap_or_else(|p| p.into_inner()) = ready;

        let mut wanted =
            (reading.updates_per_second / args.target_updates_per_edge).ceil() as usize;
        let settled = last_change.elapsed() >= SIGNAL_WINDOW;
        if reading.worst_p99_ms > args.max_p99_ms as f64 && settled {
            wanted = wanted.max(edges.len() + 1);
        }
        wanted = wanted.clamp(args.min_edges, args.max_edges);
        reading.wanted = wanted;
        let cooled = last_change.elapsed() >= Duration::from_secs(args.cool_down_secs);
        oversized_since = if wanted < edges.len() {
            oversized_since.or(Some(Instant::now()))
        } else {
            None
        };
        if wanted > edges.len() && cooled {
            numbers += 1;
            edges.push(start_edge(&args, numbers)?);
            println!("growing to {} edge(s): {reading}", edges.len());
            last_change = Instant::now();
        } else if cooled
            && oversized_since
                .is_some_and(|s| s.elapsed() >= Duration::from_secs(args.scale_in_after_secs))
            && let Some(edge) = edges.pop()
        {
            println!("draining {}: {reading}", edge.id);
            terminate(&edge);
            draining.push(edge);
            last_change = Instant::now();
            oversized_since = None;
        }
        reap(&mut draining);
        if let Some(file) = &mut record {
            use std::io::Write as _;
            writeln!(file, "{}", serde_json::to_string(&reading)?)?;
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // Ctrl-C: every edge drains (with no ready peer left at the end, the last ones keep their
    // carts on their disks, for a restart).
    for edge in &edges {
        terminate(edge);
    }
    draining.extend(edges);
    for mut edge in draining {
        let _ = edge.child.wait().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `cart-host serve` as edge `number`.
fn start_edge(args: &ScaleArgs, number: usize) -> anyhow::Result<Edge> {
    let port = args.base_port + u16::try_from(number).unwrap_or(u16::MAX);
    let id = format!("{}-{number}", args.edge_prefix);
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--edge-id", &id])
        .arg("--data")
        .arg(args.data.join(&id))
        .args(args.central.to_args())
        .args(args.tls.to_args())
        .args(&args.serve_args)
        .stdin(Stdio::null())
        .kill_on_drop(false);
    // The edge drains when the scaler goes, however it goes (SIGKILL included): what a scaler
    // starts, it stops. (The signal follows the thread that forked, and the scaler's loop runs
    // on the main thread, in `block_on`, for the life of the process.)
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().context("starting cart-host serve")?;
    println!("started {id} on port {port}");
    Ok(Edge {
        number,
        id,
        url: format!("{}://127.0.0.1:{port}", scheme(args)),
        child,
        busy: None,
        started: Instant::now(),
        quick_exits: 0,
        restart_at: None,
    })
}

/// `https` when the fleet serves TLS, else `http`.
fn scheme(args: &ScaleArgs) -> &'static str {
    if args.tls.files().is_some() {
        "https"
    } else {
        "http"
    }
}

/// Reads the front door's certificate again when its files change, as an edge does (the edges
/// read theirs themselves).
async fn reload_certificate(tls: Arc<cart_edge::tls::EdgeTls>) {
    loop {
        tokio::time::sleep(cart_edge::tls::RELOAD_EVERY).await;
        if let Err(e) = tls.identity().reload(false) {
            tracing::warn!("keeping the front door's certificate in use: {e:#}");
        }
    }
}

/// `SIGTERM`: the edge drains and exits.
fn terminate(edge: &Edge) {
    if let Some(pid) = edge.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// Forgets the draining edges that have exited, saying how.
fn reap(draining: &mut Vec<Edge>) {
    draining.retain_mut(|edge| match edge.child.try_wait() {
        Ok(Some(status)) => {
            println!("{} exited: {status}", edge.id);
            false
        }
        _ => true,
    });
}

/// The front door: the request goes to the next ready edge (another one if that one does not
/// answer), and its answer comes back as it is. It names the client in `X-Forwarded-For`, for
/// edges started with `--trusted-proxy` the door's address.
async fn pass_on(
    State(door): State<Door>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let client = client.ip().to_string();
    // A body that does not arrive in time holds nothing up: the door is bounded like an edge.
    let limits = cart_edge::config::HttpLimits::default();
    let body = match tokio::time::timeout(limits.body_timeout, to_bytes(body, 1 << 20)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let ready = door.ready.read().unwrap_or_else(|p| p.into_inner()).clone();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "host" | "connection" | "content-length" | "x-forwarded-for"
            )
        })
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .chain([("x-forwarded-for", client.as_str())])
        .collect();
    for _ in 0..ready.len().min(2) {
        let i = door.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        let url = format!("{}{path}", ready[i]);
        let Ok(answer) = door
            .client
            .send(parts.method.clone(), &url, &headers, body.clone())
            .await
        else {
            continue;
        };
        let mut response = Response::new(Body::from(answer.body));
        *response.status_mut() = answer.status;
        for (name, value) in &answer.headers {
            if !matches!(
                name.as_str(),
                "connection" | "transfer-encoding" | "content-length"
            ) {
                response
                    .headers_mut()
                    .insert(HeaderName::from(name), value.clone());
            }
        }
        return response;
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "1")],
        "no edge is ready\n",
    )
        .into_response()
}
