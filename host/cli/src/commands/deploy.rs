//! `cart-host deploy`: a rolling deploy of a cart component, one edge after another, each
//! checked healthy on the new version before the next; stops at the first failure. `cart-host
//! activate`: the same roll-out of a version the edges already store (a rollback), to every edge
//! central has registered.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use hyper::{Method, StatusCode};

use std::process::ExitCode;

use cart_edge::asked::Asked;
use cart_edge::http_client::HttpClient;
use cart_edge::modules::default_version;
use cart_edge::wasm::sha256_hex;
use cart_edge::wire::{MODULE_SIGNATURE, MODULE_VERSION};
use clap::Args;

#[derive(Args)]
pub struct DeployArgs {
    /// The component to deploy.
    #[arg(long, env = "CART_MODULE")]
    module: PathBuf,
    /// An edge's URL; repeat for each, in the order to deploy.
    #[arg(
        long = "edge",
        env = "CART_EDGES",
        value_delimiter = ',',
        required = true
    )]
    edges: Vec<String>,
    /// File holding the operator token the edges accept.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// ed25519 private key (PKCS#8 PEM) to sign the module with.
    #[arg(long, env = "CART_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Version to deploy as (default: the first 12 hex digits of the module's sha256).
    #[arg(long, env = "CART_MODULE_VERSION")]
    version: Option<String>,
    /// First run the module and the fleet's (the one central records) on the same requests, as
    /// `rules diff --edge` does (generated ones, and those the edges were asked most recently),
    /// show where they decide differently, and ask whether to go on. Needs --central; on no
    /// terminal, needs --yes.
    #[arg(long, requires = "central")]
    diff: bool,
    /// With --diff: show the differences and go on without asking.
    #[arg(long, requires = "diff")]
    yes: bool,
    /// Central, for --diff (sqlite:PATH or postgres://...; as other commands take it).
    #[arg(long, env = "CART_CENTRAL", hide_env_values = true)]
    central: Option<String>,
    /// A file holding central's PostgreSQL password, for --diff.
    #[arg(long, env = "CART_CENTRAL_PASSWORD_FILE")]
    central_password_file: Option<PathBuf>,
    #[command(flatten)]
    tls: super::FleetCaArgs,
}

/// `deploy --diff`: the fleet's module against this one, and whether to go on.
async fn diff_first(args: &DeployArgs) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let central = super::CentralArgs {
        url: args.central.clone().unwrap_or_default(),
        central_password_file: args.central_password_file.clone(),
    };
    let fleet = central
        .connect()
        .await?
        .fleet_module()
        .await
        .with_context(|| format!("reading the fleet's module at central {}", central.shown()))?;
    match fleet {
        None => println!(
            "central {} records no module deployed to the fleet yet: nothing to compare with",
            central.shown()
        ),
        Some(fleet) => {
            let recorded = recorded_by(args, &fleet.version).await?;
            let (report, _) = super::rules::diff_with_fleet(
                (&fleet.version, &fleet.bytes),
                &args.module,
                recorded,
            )?;
            print!("{report}");
        }
    }
    if args.yes {
        return Ok(true);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "--diff asks before it deploys: answer on a terminal, or add --yes"
    );
    eprint!(
        "deploy {} to {} edge(s)? [y/N] ",
        args.module.display(),
        args.edges.len()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// For `deploy --diff`: the requests the edges to deploy to were asked most recently, and from
/// where, as the report says. An edge that cannot say, or runs another module than the fleet's
/// (`fleet`), is named, and the comparison goes on without it or with it as it is.
async fn recorded_by(
    args: &DeployArgs,
    fleet: &str,
) -> anyhow::Result<Option<(String, Vec<Asked>)>> {
    let client = super::edge_client(args.tls.fleet_ca.as_deref(), Duration::from_secs(30))?;
    let token = super::admin_token(args.admin_token_file.as_deref())?;
    let auth = token.as_ref().map(|t| format!("Bearer {t}"));
    let (mut from, mut asked) = (Vec::new(), Vec::new());
    for edge in &args.edges {
        match super::rules::recorded(&client, edge, token.as_deref()).await {
            Ok(recorded) => {
                from.push(edge.as_str());
                asked.extend(recorded);
            }
            Err(e) => println!("no recent requests from {edge}: {e:#}"),
        }
        let active = active_version(&client, edge, auth.as_deref()).await.ok();
        if let Some(active) = active.filter(|a| a != fleet) {
            println!(
                "{edge} runs {active}, not the fleet's module {fleet}: its requests are asked of \
                 the fleet's"
            );
        }
    }
    Ok((!from.is_empty()).then(|| (format!("recorded at {}", from.join(", ")), asked)))
}

/// Deploys, prints where each edge got to, and fails unless every edge took the module.
pub async fn run_command(args: DeployArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    if args.diff && !diff_first(&args).await? {
        println!("not deployed");
        return Ok(ExitCode::FAILURE);
    }
    let report = run(&DeployConfig {
        module: args.module,
        edges: args.edges,
        admin_token: super::admin_token(args.admin_token_file.as_deref())?,
        signing_key: args.signing_key,
        version: args.version,
        fleet_ca: args.tls.fleet_ca,
        progress: std::io::stderr().is_terminal(),
    })
    .await?;
    print!("{report}");
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub struct DeployConfig {
    pub module: PathBuf,
    pub edges: Vec<String>,
    pub admin_token: Option<String>,
    /// An ed25519 private key in PKCS#8 PEM; the module is sent with its signature.
    pub signing_key: Option<PathBuf>,
    /// The version to deploy as; by default the module's sha256's first twelve hex digits.
    pub version: Option<String>,
    /// The CA `https://` edges' certificates are checked against (default: the system's).
    pub fleet_ca: Option<PathBuf>,
    /// Say each step on standard error (on a terminal).
    pub progress: bool,
}

/// Where the deploy got to, and which version each edge runs now.
#[derive(Debug)]
pub struct DeployReport {
    pub version: String,
    /// The module's sha256, when its bytes were sent.
    pub sha256: Option<String>,
    /// The edges updated, in order.
    pub updated: Vec<String>,
    /// The edge where the deploy stopped, and why.
    pub failed: Option<(String, String)>,
    /// Every edge's active version afterwards (or why it could not be read).
    pub running: Vec<(String, String)>,
}

impl DeployReport {
    pub fn succeeded(&self) -> bool {
        self.failed.is_none()
    }
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sha256 {
            Some(sha256) => writeln!(f, "module {} (sha256 {sha256})", self.version)?,
            None => writeln!(f, "module {}", self.version)?,
        }
        for (edge, version) in &self.running {
            writeln!(f, "  {edge}: {version}")?;
        }
        match &self.failed {
            None => writeln!(f, "active on all {} edge(s)", self.updated.len()),
            Some((edge, why)) => writeln!(
                f,
                "stopped at {edge} after {} edge(s): {why}",
                self.updated.len()
            ),
        }
    }
}

/// Signs module bytes with a PKCS#8 PEM ed25519 key; the signature, base64.
pub fn sign(key_pem: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let key = SigningKey::from_pkcs8_pem(key_pem.trim())
        .map_err(|e| anyhow::anyhow!("not an ed25519 private key in PKCS#8 PEM: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key.sign(bytes).to_bytes()))
}

pub async fn run(config: &DeployConfig) -> anyhow::Result<DeployReport> {
    anyhow::ensure!(!config.edges.is_empty(), "name at least one --edge");
    let bytes = std::fs::read(&config.module)
        .with_context(|| format!("reading {}", config.module.display()))?;
    let sha256 = sha256_hex(&bytes);
    let version = config
        .version
        .clone()
        .unwrap_or_else(|| default_version(&sha256));
    let signature = match &config.signing_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(sign(&pem, &bytes).with_context(|| format!("signing with {}", path.display()))?)
        }
        None => None,
    };
    let client = super::edge_client(config.fleet_ca.as_deref(), Duration::from_secs(120))?;
    let auth = config.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut report = DeployReport {
        version,
        sha256: Some(sha256),
        updated: Vec::new(),
        failed: None,
        running: Vec::new(),
    };
    let version = report.version.clone();
    let upload = async |edge: &str| {
        let mut headers = vec![(MODULE_VERSION, version.as_str())];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        if let Some(s) = &signature {
            headers.push((MODULE_SIGNATURE, s));
        }
        let url = format!("{edge}/admin/modules");
        match client
            .send(Method::PUT, &url, &headers, bytes.clone())
            .await
        {
            // 201: stored now; 200: these bytes were stored under this version already.
            Ok(r) if r.status == StatusCode::CREATED || r.status == StatusCode::OK => Ok(()),
            Ok(r) => Err(refused(&r)),
            Err(e) => Err(format!("{e:#}")),
        }
    };
    let rollout = Rollout {
        client: &client,
        auth: auth.as_deref(),
        progress: config.progress,
    };
    rollout
        .run(&config.edges, "uploading", upload, &mut report)
        .await;
    Ok(report)
}

/// `cart-host activate`: a version every edge stores made active on each in turn.
#[derive(Args)]
pub struct ActivateArgs {
    /// The version to make active (as `GET /admin/modules` lists it).
    #[arg(long = "version", env = "CART_MODULE_VERSION")]
    version: String,
    #[command(flatten)]
    central: super::CentralArgs,
    /// An edge's URL; repeat for each, in the order to activate. Default: every edge registered
    /// with central, in the order of their ids.
    #[arg(long = "edge", env = "CART_EDGES", value_delimiter = ',')]
    edges: Vec<String>,
    /// File holding the operator token the edges accept.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: super::FleetCaArgs,
}

/// Activates, prints where each edge got to, and fails unless every edge took the version.
pub async fn activate_command(args: ActivateArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    let edges = if args.edges.is_empty() {
        let central = args.central.connect().await?;
        central
            .registry()
            .await?
            .into_iter()
            .map(|(_, url)| url)
            .collect()
    } else {
        args.edges
    };
    anyhow::ensure!(
        !edges.is_empty(),
        "central has no edges registered: name them with --edge"
    );
    let client = super::edge_client(args.tls.fleet_ca.as_deref(), Duration::from_secs(120))?;
    let token = super::admin_token(args.admin_token_file.as_deref())?;
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut report = DeployReport {
        version: args.version.clone(),
        sha256: None,
        updated: Vec::new(),
        failed: None,
        running: Vec::new(),
    };
    let activate = async |edge: &str| {
        let url = format!("{edge}/admin/modules/{}/activate", args.version);
        let headers: Vec<_> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        match client.send(Method::POST, &url, &headers, Vec::new()).await {
            Ok(r) if r.status == StatusCode::OK => Ok(()),
            Ok(r) => Err(refused(&r)),
            Err(e) => Err(format!("{e:#}")),
        }
    };
    let rollout = Rollout {
        client: &client,
        auth: auth.as_deref(),
        progress: std::io::stderr().is_terminal(),
    };
    rollout
        .run(&edges, "activating", activate, &mut report)
        .await;
    print!("{report}");
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An edge's refusal, as the report says it.
fn refused(r: &cart_edge::http_client::HttpResponse) -> String {
    format!("{}: {}", r.status, String::from_utf8_lossy(&r.body).trim())
}

/// A change made to one edge after another, each checked healthy on the version before the next.
struct Rollout<'a> {
    client: &'a HttpClient,
    auth: Option<&'a str>,
    /// Say each step on standard error (on a terminal).
    progress: bool,
}

impl Rollout<'_> {
    /// `change` (called `what` in the progress lines) on each edge, then a wait until it serves
    /// `report.version`; stops at the first failure. Then every edge's active version.
    async fn run(
        &self,
        edges: &[String],
        what: &str,
        change: impl AsyncFn(&str) -> Result<(), String>,
        report: &mut DeployReport,
    ) {
        let version = report.version.clone();
        for (n, edge) in (1..).zip(edges) {
            let step = |doing: &str| {
                if self.progress {
                    eprintln!("[{n}/{}] {edge}: {doing} {version}", edges.len());
                }
            };
            step(what);
            let mut outcome = change(edge).await;
            if outcome.is_ok() {
                step("checking health on");
                outcome = healthy_on(self.client, edge, self.auth, &version).await;
            }
            if let Err(why) = outcome {
                report.failed = Some((edge.clone(), why));
                break;
            }
            report.updated.push(edge.clone());
        }
        for edge in edges {
            let running = active_version(self.client, edge, self.auth)
                .await
                .unwrap_or_else(|e| format!("unknown ({e})"));
            report.running.push((edge.clone(), running));
        }
    }
}

/// Waits until the edge serves and reports `version` as active.
async fn healthy_on(
    client: &HttpClient,
    edge: &str,
    auth: Option<&str>,
    version: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = client.get(&format!("{edge}/healthz"), None).await;
        let active = active_version(client, edge, auth).await;
        match (health, active) {
            (Ok(h), Ok(v)) if h.status == StatusCode::OK && v == version => return Ok(()),
            (h, v) if Instant::now() >= deadline => {
                return Err(format!(
                    "not healthy on {version}: health {:?}, active {v:?}",
                    h.map(|r| r.status)
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn active_version(
    client: &HttpClient,
    edge: &str,
    auth: Option<&str>,
) -> anyhow::Result<String> {
    let token = auth.and_then(|a| a.strip_prefix("Bearer "));
    let r = client.get(&format!("{edge}/admin/modules"), token).await?;
    anyhow::ensure!(r.status == StatusCode::OK, "{}", r.status);
    r.json()?["active"]
        .as_str()
        .map(str::to_owned)
        .context("no active version in the answer")
}
