//! `cart-host demo` (what `make run` runs): a SQLite central under the data folder, a demo sale
//! starting now, and two edges on localhost, with their URLs and a ready `curl` line.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use cart_edge::config::CreateRate;
use tokio::net::TcpListener;

use std::process::ExitCode;

use cart_central::Central;
use cart_central::sale::Sale;
use cart_central::time::{rfc3339, wall_ms};
use cart_edge::edge::{EdgeConfig, ModuleBytes};
use cart_edge::server;
use cart_queue::relay::{RelayConfig, RelayStats};
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the demo's databases; emptied of an earlier demo first.
    #[arg(long, env = "CART_DATA", default_value = "data")]
    data: PathBuf,
    /// The cart component (default: the one built in).
    #[arg(long, env = "CART_MODULE")]
    module: Option<PathBuf>,
    /// Port of the first edge; the second listens on the next one.
    #[arg(long, env = "CART_DEMO_PORT", default_value_t = 8081)]
    port: u16,
    /// Deliver the edges' outboxes through this NATS server (nats://HOST:PORT, started with
    /// `nats-server -js`), with a relay running in the demo, instead of straight to central.
    #[arg(long, env = "CART_QUEUE", hide_env_values = true)]
    queue: Option<String>,
    #[command(flatten)]
    door: super::DoorArgs,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run_command(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let shutdown = super::shutdown_signal();
    let config = DemoConfig {
        data_dir: args.data,
        module: crate::module_or_built_in(args.module.as_deref())?,
        port: args.port,
        queue_url: args.queue,
        create_rate: args.door.create_rate(),
        failed_logins_per_minute: args.door.failed_logins_per_minute,
    };
    run(&config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

pub struct DemoConfig {
    pub data_dir: PathBuf,
    pub module: ModuleBytes,
    /// The first edge's port; the second edge takes the next.
    pub port: u16,
    /// The NATS server the outboxes go through, with a relay in the demo; none: straight.
    pub queue_url: Option<String>,
    /// New carts one client address may make at each edge.
    pub create_rate: CreateRate,
    /// Failed operator logins one client address may make a minute (0: no limit).
    pub failed_logins_per_minute: u32,
}

/// Shell lines that make a cart, put an item in it and check it out, each answer printed: the
/// cart's id and token are taken from the first answer with `sed`, so they paste as they are.
fn try_lines(url: &str, token: &str) -> [String; 6] {
    let field = |name: &str| format!(r#"sed -E 's/.*"{name}":"([^"]+)".*/\1/'"#);
    [
        format!("curl -s {url}/v1/skus; echo"),
        format!(
            r#"CART=$(curl -s -X POST {url}/v1/carts -H 'content-type: application/json' -d '{{"customer_id":"c-42"}}'); echo "$CART""#
        ),
        format!(
            r#"ID=$(echo "$CART" | {}); TOKEN=$(echo "$CART" | {})"#,
            field("cart_id"),
            field("cart_token")
        ),
        format!(
            r#"curl -s -X PUT {url}/v1/carts/$ID/items/BAG-1 -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{{"quantity":1}}'; echo"#
        ),
        format!(
            r#"curl -s -X POST {url}/v1/carts/$ID/checkout -H "authorization: Bearer $TOKEN" -H 'idempotency-key: order-1' -d '{{}}'; echo"#
        ),
        format!(r#"curl -s {url}/admin/status -H "authorization: Bearer {token}"; echo"#),
    ]
}

/// The demo sale: three SKUs, on sale from now, holds of ten minutes.
pub fn demo_sale(now_ms: i64) -> Sale {
    let text = serde_json::json!({
        "sale_id": "demo-noon-drop",
        "starts_at": rfc3339(now_ms - now_ms % 1000),
        "hold_ttl_seconds": 600,
        "skus": [
            {"sku": "BAG-1", "name": "Leather tote", "price_cents": 129_900, "stock": 100, "limit_per_customer": 2},
            {"sku": "SNEAKER-42", "name": "Limited sneaker, size 42", "price_cents": 24_900, "stock": 300, "limit_per_customer": 1},
            {"sku": "WATCH-7", "name": "Diver watch", "price_cents": 499_000, "stock": 20, "limit_per_customer": 1}
        ]
    });
    Sale::parse(&text.to_string()).expect("the demo sale is valid")
}

pub async fn run(config: &DemoConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    // A demo starts from nothing: drop an earlier demo's databases (only those).
    for stale in [
        "central.db",
        "central.db-wal",
        "central.db-shm",
        "edge-1",
        "edge-2",
        "admin-token",
        "fleet-secret",
    ] {
        let path = dir.join(stale);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let central_url = format!("sqlite:{}", dir.join("central.db").display());
    let central = Central::connect(&central_url).await?;
    let sale = demo_sale(wall_ms());
    central.load_sale(&sale).await?;
    let token = cart_edge::ids::new_token();
    let token_file = dir.join("admin-token");
    write_secret(&token_file, &token)?;
    // The two edges answer for each other's carts.
    let fleet_secret = cart_edge::ids::new_token();
    write_secret(&dir.join("fleet-secret"), &fleet_secret)?;

    let (stop_relay, relay_stopped) = tokio::sync::watch::channel(false);
    let relay = config.queue_url.clone().map(|queue_url| {
        let relay = RelayConfig {
            queue_url,
            central_url: central_url.clone(),
            ..RelayConfig::default()
        };
        tokio::spawn(cart_queue::relay::run(
            relay,
            Arc::new(RelayStats::default()),
            relay_stopped,
        ))
    });
    let mut edges = Vec::new();
    for (i, edge_id) in ["edge-1", "edge-2"].into_iter().enumerate() {
        let port = config.port.saturating_add(u16::try_from(i).unwrap_or(0));
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(_) => TcpListener::bind(("127.0.0.1", 0)).await?,
        };
        let edge_config = EdgeConfig {
            edge_id: edge_id.into(),
            data_dir: dir.join(edge_id),
            central_url: central_url.clone(),
            module: config.module.clone(),
            admin_token: Some(token.clone()),
            fleet_secret: Some(fleet_secret.clone()),
            queue_url: config.queue_url.clone(),
            create_rate: config.create_rate,
            failed_logins_per_minute: config.failed_logins_per_minute,
            ..EdgeConfig::default()
        };
        edges.push(server::start(listener, edge_config).await?);
    }

    println!(
        "demo sale {} is on: {} SKUs, started {}",
        sale.sale_id,
        sale.skus.len(),
        rfc3339(sale.starts_at)
    );
    println!("central database: {central_url}");
    if let Some(queue) = &config.queue_url {
        println!("outboxes go through NATS JetStream at {queue}; a relay applies them");
    }
    for e in &edges {
        println!("edge {}: {}", e.edge.config.edge_id, e.url);
    }
    let url = &edges[0].url;
    println!("operator token: {} (in {})", token, token_file.display());
    println!();
    println!("open in a browser:");
    println!("  the storefront      {url}/");
    println!("  the dashboard       {url}/admin/  (it asks for the operator token)");
    println!();
    println!("or try, from another shell (a cart, an item in it, its checkout):");
    for line in try_lines(url, &token) {
        println!("  {line}");
    }
    println!();
    println!("Ctrl-C stops the demo.");
    shutdown.await;
    for e in edges {
        e.stop().await?;
    }
    let _ = stop_relay.send(true);
    if let Some(relay) = relay {
        relay.await??;
    }
    Ok(())
}

/// Writes a secret only its owner may read (mode 600), replacing any file there.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}
