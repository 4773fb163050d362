//! `cart-host serve`: run one edge host until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cart_edge::customer::CustomerKey;
use cart_edge::edge::EdgeConfig;
use cart_edge::server::Ending;
use cart_edge::wasm::SandboxLimits;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CART_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Folder for this edge's SQLite database.
    #[arg(long, env = "CART_DATA")]
    data: PathBuf,
    /// This edge's id, unique in the fleet.
    #[arg(long, env = "CART_EDGE_ID")]
    edge_id: String,
    #[command(flatten)]
    central: super::CentralArgs,
    #[command(flatten)]
    schema: super::SchemaArgs,
    /// The cart component to run while the edge has none stored (default: the one built in).
    #[arg(long, env = "CART_MODULE")]
    module: Option<PathBuf>,
    /// File holding the operator token; without it the operator API answers 403.
    #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// A browser origin (`https://shop.example`) allowed to call this edge's API: CORS
    /// preflights are answered and headers set for it. Repeat for each; none: no CORS headers.
    #[arg(long = "cors-origin", env = "CART_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    cors_origins: Vec<hyper::http::HeaderValue>,
    /// File holding the fleet secret, the same on every edge: with it, a request for another
    /// edge's cart is forwarded to that edge (which must have it too) and its answer returned;
    /// without it, this edge answers only for its own carts.
    #[arg(long, env = "CART_FLEET_SECRET_FILE")]
    fleet_secret_file: Option<PathBuf>,
    /// The URL central records for this edge (default: http:// and the listen address); the
    /// other edges forward requests for this edge's carts to it.
    #[arg(long, env = "CART_PUBLIC_URL")]
    public_url: Option<String>,
    /// The storefront's ed25519 public key (SPKI PEM): with it, `POST /v1/carts` takes the
    /// customer only from `customer_token`, a JWT the storefront signed (EdDSA, with `sub` the
    /// customer and `exp`); without it, `customer_id` is taken on trust.
    #[arg(long, env = "CART_CUSTOMER_KEY")]
    customer_key: Option<PathBuf>,
    #[command(flatten)]
    door: super::DoorArgs,
    /// A proxy (the load balancer) whose `X-Forwarded-For` names the client, for the rate
    /// above: repeat for each. Other peers are taken as the client themselves.
    #[arg(
        long = "trusted-proxy",
        env = "CART_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Deliver the outbox through NATS JetStream (nats://HOST:PORT, or tls://HOST:PORT, a
    /// server with JetStream enabled) instead of straight to central; `cart-host relay` applies
    /// it there. Grants, returns and the lease still go to central, over one connection.
    #[arg(long, env = "CART_QUEUE", hide_env_values = true)]
    queue: Option<String>,
    #[command(flatten)]
    queue_auth: super::QueueAuthArgs,
    #[command(flatten)]
    guest: super::GuestArgs,
    /// Fresh guest instances to make ahead of their calls on a thread beside the writer, with
    /// spent ones reset on another (each instance still serves one call). It takes work off the
    /// writer, not off the machine: worth trying only with cores to spare beside the writer and
    /// the HTTP workers (on two cores it costs). 0: each call makes and resets its own.
    #[arg(long, env = "CART_INSTANCES_AHEAD", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=32))]
    instances_ahead: u16,
    /// An ed25519 public key (SPKI PEM); with any, only modules signed by one are deployed.
    #[arg(long = "trusted-key", env = "CART_TRUSTED_KEYS", value_delimiter = ',')]
    trusted_keys: Vec<PathBuf>,
    /// How long this process's claim on its edge id outlives it, in seconds: another process
    /// may take the id over that long after this one stops renewing it.
    #[arg(long, env = "CART_LEASE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_secs: u64,
    /// How long a drain may take (on `SIGTERM` or `POST /admin/drain`), in seconds: the edge
    /// hands its carts to ready peers, returns its free units and delivers its outbox, then
    /// exits `0`; what is not done by then stays on its disk and a restart resumes it.
    #[arg(long, env = "CART_DRAIN_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    drain_timeout: u64,
    /// How long delivered outbox events are kept, in hours: a central restored from a backup
    /// taken within that time gets them again (README, "Backups and restores"). 0: deleted
    /// once delivered.
    #[arg(long, env = "CART_OUTBOX_KEEP_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(0..=24 * 90))]
    outbox_keep_hours: u64,
    /// How long an edge keeps a finished sale's carts, lines and orders, in days after it
    /// dropped the sale (a day after its end, once every unit is sold or back at central, and
    /// once central has all the edge told it): then they are deleted and its carts answer
    /// `404`. Central keeps the orders; its receipts of this edge's events go after as many
    /// days. 0: kept for ever.
    #[arg(long, env = "CART_RETAIN_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(0..=3650))]
    retain_days: u64,
    /// How long a shopper who found too few units here waits while the edge asks central for
    /// more, in milliseconds, before being told `sold_out`. Keep it above a round trip to
    /// central (and its answer under load), or shoppers are refused while units are spare.
    #[arg(long, env = "CART_SHORTAGE_WAIT_MS", default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    shortage_wait_ms: u64,
    /// When central keeps another history for this edge id (the data folder is new, or a
    /// restored backup), write that history off and start this folder over: its holds are
    /// released, its unsold units return to the sale, its orders stay sold under a retired
    /// name, and whatever this folder held is discarded. Without it such an edge refuses to
    /// start.
    #[arg(long, env = "CART_TAKE_OVER")]
    take_over: bool,
    /// `--take-over` for the edges named here only (comma-separated ids): for fleets whose
    /// edges all get one environment (a StatefulSet's pods, from a ConfigMap), so that the one
    /// edge whose volume was lost starts over and no other takes the flag.
    #[arg(long, env = "CART_TAKE_OVER_EDGES", value_delimiter = ',')]
    take_over_edges: Vec<String>,
    /// What `SIGTERM` does: `drain` hands the carts to the other edges and leaves the fleet
    /// (what an orchestrator's scale-in wants); `stop` stops in place, keeping the carts, units
    /// and lease for the next process on this folder (a restart, an upgrade). `SIGINT` (Ctrl-C)
    /// always stops in place; `POST /admin/drain` always drains.
    #[arg(long, env = "CART_ON_SIGTERM", value_enum, default_value = "drain")]
    on_sigterm: OnSigterm,
    #[command(flatten)]
    tls: super::ServeTlsArgs,
}

/// What `serve --on-sigterm` takes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OnSigterm {
    Drain,
    Stop,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let stop = super::stop_signal();
    let on_sigterm = args.on_sigterm;
    let ending = async move {
        match stop.await {
            super::Stop::Interrupt => Ending::InPlace,
            super::Stop::Terminate => match on_sigterm {
                OnSigterm::Drain => Ending::Drain,
                OnSigterm::Stop => Ending::InPlace,
            },
        }
    };
    let trusted_keys = args
        .trusted_keys
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            cart_edge::modules::read_public_key(&pem)
                .with_context(|| format!("trusted key {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let take_over = args.take_over || args.take_over_edges.contains(&args.edge_id);
    let config = EdgeConfig {
        trusted_keys,
        edge_id: args.edge_id,
        data_dir: args.data,
        central_url: args.central.url()?,
        central_schema: args.schema.policy(),
        module: crate::module_or_built_in(args.module.as_deref())?,
        admin_token: super::admin_token(args.admin_token_file.as_deref())?,
        public_url: args.public_url,
        tls: args.tls.files(),
        sandbox: SandboxLimits {
            instances_ahead: usize::from(args.instances_ahead),
            ..args.guest.limits()
        },
        lease: Duration::from_secs(args.lease_secs),
        take_over,
        cors_origins: args.cors_origins,
        fleet_secret: args
            .fleet_secret_file
            .as_deref()
            .map(|f| super::read_secret(f, "fleet secret"))
            .transpose()?,
        customer_key: args
            .customer_key
            .as_deref()
            .map(|path| {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                CustomerKey::from_pem(&pem)
                    .map(Arc::new)
                    .with_context(|| format!("customer key {}", path.display()))
            })
            .transpose()?,
        create_rate: args.door.create_rate(),
        trusted_proxies: args.trusted_proxies,
        queue_url: args.queue,
        queue_auth: args.queue_auth.auth()?,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        outbox_keep: Duration::from_secs(args.outbox_keep_hours * 3600),
        retain: Duration::from_secs(args.retain_days * 24 * 3600),
        shortage_wait: Duration::from_millis(args.shortage_wait_ms),
        failed_logins_per_minute: args.door.failed_logins_per_minute,
        ..EdgeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    cart_edge::server::run(listener, config, ending).await?;
    Ok(ExitCode::SUCCESS)
}

/// An origin as browsers send it: scheme, host and optional port, no path.
fn parse_origin(s: &str) -> Result<hyper::http::HeaderValue, String> {
    let uri: hyper::Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let plain = uri.scheme().is_some()
        && uri.authority().is_some()
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && !s.ends_with('/');
    if !plain {
        return Err(format!(
            "{s:?} is not an origin: scheme://host[:port], as in https://shop.example"
        ));
    }
    hyper::http::HeaderValue::from_str(s).map_err(|e| format!("{s:?}: {e}"))
}
