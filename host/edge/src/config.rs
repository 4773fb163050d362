//! What `cart-host serve` tells an edge: its configuration, with defaults tests build on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::customer::CustomerKey;
use crate::rules::FixedRules;
use crate::store::writer::WriterConfig;
use crate::wasm::SandboxLimits;

/// Everything `cart-host serve` is told. Tests fill in what they need and default the rest.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub edge_id: String,
    pub data_dir: PathBuf,
    pub central_url: String,
    /// Whether this edge may migrate central's schema, or only checks it.
    pub central_schema: cart_central::SchemaPolicy,
    /// The module used when the edge has none stored yet.
    pub module: ModuleBytes,
    /// The operator token; without one the operator API answers `403`.
    pub admin_token: Option<String>,
    /// The URL central records for this edge; by default `http://` and the listener's address.
    pub public_url: Option<String>,
    pub sandbox: SandboxLimits,
    pub writer: WriterConfig,
    pub clock: Clock,
    pub sweep_every: Duration,
    pub sync_every: Duration,
    /// Outbox events per central transaction.
    pub sync_batch: usize,
    /// How long delivered outbox events are kept, to be sent again to a central restored from
    /// a backup taken within that time.
    pub outbox_keep: Duration,
    /// How long an ended sale this edge has settled stays in its calendar (its SKUs answer
    /// `sale_ended`, not `404`): a day; tests shorten it.
    pub keep_ended: Duration,
    /// How long after that its carts, lines and orders are kept (`--retain-days`; zero: for
    /// ever). Never less than `outbox_keep`, which may need them to make a restored central
    /// whole.
    pub retain: Duration,
    /// How long a shopper who found too few units may wait for a grant before `sold_out`.
    pub shortage_wait: Duration,
    /// With any, only modules signed by one of these keys are deployed.
    pub trusted_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Rules to start on instead of the stored module (the benchmarks' native baseline).
    pub fixed_rules: Option<FixedRules>,
    /// How long HTTP peers may take.
    pub http: HttpLimits,
    /// How long this process's claim on its edge id outlives it at central.
    pub lease: Duration,
    /// When central keeps another history for this edge id, write it off and start this
    /// folder over (`serve --take-over`).
    pub take_over: bool,
    /// Authenticates edge-to-edge calls; without it this edge neither forwards requests for
    /// other edges' carts nor accepts forwarded ones.
    pub fleet_secret: Option<String>,
    /// HTTPS, and the fleet CA peer requests need a certificate from (see [`crate::tls`]).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Browser origins allowed to call the API (CORS); none: no CORS headers at all.
    pub cors_origins: Vec<hyper::header::HeaderValue>,
    /// With it, a new cart's customer comes only from a token the storefront signed.
    pub customer_key: Option<Arc<CustomerKey>>,
    /// New carts a client address may make.
    pub create_rate: CreateRate,
    /// Proxies (a load balancer) whose `X-Forwarded-For` names the client's address.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// With it (`nats://HOST:PORT`), the outbox goes to JetStream instead of straight to
    /// central, and central is asked only for grants, returns and the edge's lease.
    pub queue_url: Option<String>,
    /// TLS roots and credentials for NATS.
    pub queue_auth: cart_queue::QueueAuth,
    /// Failed operator logins one client address may make a minute before it is refused for a
    /// minute (0: no limit; see `http::middleware::Logins`).
    pub failed_logins_per_minute: u32,
    /// How long a drain may take (`POST /admin/drain`, `SIGTERM`) before the edge exits with
    /// what is left on its disk.
    pub drain_timeout: Duration,
}

/// How long HTTP peers may take.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// For a request head to arrive, and for a keep-alive connection to sit idle.
    pub header_timeout: Duration,
    /// For a request body to arrive.
    pub body_timeout: Duration,
    /// For connections to finish once the edge stops; then they are closed.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// New carts one client address may make: `per_second` on average, `burst` at once; a rate of
/// 0 sets no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateRate {
    pub per_second: u32,
    pub burst: u32,
}

impl CreateRate {
    /// No limit: for load generators, which make every cart from one address.
    pub const UNLIMITED: Self = Self {
        per_second: 0,
        burst: 0,
    };
}

impl Default for CreateRate {
    fn default() -> Self {
        Self {
            per_second: 10,
            burst: 100,
        }
    }
}

impl EdgeConfig {
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            edge_id: "edge-1".into(),
            data_dir: "data/edge-1".into(),
            central_url: "sqlite:data/central.db".into(),
            central_schema: cart_central::SchemaPolicy::Migrate,
            module: ModuleBytes::default(),
            admin_token: None,
            public_url: None,
            sandbox: SandboxLimits::default(),
            writer: WriterConfig::default(),
            clock: Clock::default(),
            sweep_every: Duration::from_secs(1),
            sync_every: Duration::from_millis(50),
            sync_batch: 500,
            outbox_keep: Duration::from_secs(24 * 3600),
            keep_ended: Duration::from_secs(24 * 3600),
            retain: Duration::from_secs(7 * 24 * 3600),
            shortage_wait: Duration::from_millis(150),
            trusted_keys: Vec::new(),
            fixed_rules: None,
            take_over: false,
            fleet_secret: None,
            tls: None,
            cors_origins: Vec::new(),
            customer_key: None,
            create_rate: CreateRate::default(),
            trusted_proxies: Vec::new(),
            queue_url: None,
            queue_auth: cart_queue::QueueAuth::default(),
            drain_timeout: Duration::from_secs(30),
            failed_logins_per_minute: 10,
            http: HttpLimits::default(),
            lease: Duration::from_secs(10),
        }
    }
}

/// A cart component's bytes (shown by size, not printed).
#[derive(Clone, Default)]
pub struct ModuleBytes(pub Arc<[u8]>);

impl ModuleBytes {
    /// Reads a component from a file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the cart module {}", path.display()))?;
        Ok(Self(bytes.into()))
    }
}

impl From<&[u8]> for ModuleBytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }
}

impl std::fmt::Debug for ModuleBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModuleBytes({} bytes)", self.0.len())
    }
}
