//! `cart-host relay`: applies the edges' outbox stream (NATS JetStream) to central, exactly
//! once; `/metrics` for its lag and counts, and a status line in the log.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use cart_queue::relay::{RelayConfig, RelayStats};
use clap::Args;
use tokio::sync::watch;

#[derive(Args)]
pub struct RelayArgs {
    /// The NATS server (JetStream enabled) the edges publish to: nats://HOST:PORT, or
    /// tls://HOST:PORT for TLS.
    #[arg(long, env = "CART_QUEUE", hide_env_values = true)]
    queue: String,
    #[command(flatten)]
    queue_auth: super::QueueAuthArgs,
    #[command(flatten)]
    central: super::CentralArgs,
    #[command(flatten)]
    schema: super::SchemaArgs,
    /// Most events applied in one central transaction.
    #[arg(long, env = "CART_RELAY_BATCH", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Milliseconds a batch waits for more events after its first: fewer, larger central
    /// transactions for that much latency.
    #[arg(long, env = "CART_RELAY_LINGER_MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    linger_ms: u64,
    /// Address to serve `/metrics` (lag, events applied, duplicates, drops) on; none: no HTTP.
    #[arg(long, env = "CART_RELAY_LISTEN")]
    listen: Option<String>,
    /// Seconds between status lines in the log.
    #[arg(long, env = "CART_RELAY_REPORT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    report_secs: u64,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let shutdown = super::shutdown_signal();
    let config = RelayConfig {
        queue_url: args.queue,
        queue_auth: args.queue_auth.auth()?,
        central_url: args.central.url()?,
        central_schema: args.schema.policy(),
        batch: usize::try_from(args.batch)?,
        linger: Duration::from_millis(args.linger_ms),
        report_every: Duration::from_secs(args.report_secs),
    };
    let stats = Arc::new(RelayStats::default());
    let (stop, stopped) = watch::channel(false);
    if let Some(listen) = &args.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!("relay metrics on http://{}/metrics", listener.local_addr()?);
        let stats = Arc::clone(&stats);
        let app = axum::Router::new().route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let stats = Arc::clone(&stats);
                async move {
                    let accept = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let (media_type, text) = cart_edge::metrics::negotiate(accept, stats.render());
                    ([(axum::http::header::CONTENT_TYPE, media_type)], text)
                }
            }),
        );
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.changed().await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("relay metrics server: {e}");
            }
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    cart_queue::relay::run(config, stats, stopped).await?;
    Ok(ExitCode::SUCCESS)
}
