//! Serving one edge: bind nothing (the caller hands in a listener), start the edge, serve HTTP
//! until the shutdown future resolves, then stop the background tasks.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::edge::{Edge, EdgeConfig};

/// An edge serving on its listener.
pub struct RunningEdge {
    pub url: String,
    pub edge: Arc<Edge>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

impl RunningEdge {
    /// Stops accepting, lets requests in flight finish, and stops the background tasks.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.server.await??;
        Ok(())
    }
}

/// Starts an edge on `listener` and returns once it is serving.
pub async fn start(listener: TcpListener, config: EdgeConfig) -> anyhow::Result<RunningEdge> {
    let addr = listener.local_addr()?;
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let edge = Edge::start(config, url.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    edge.spawn_tasks(&stopped);
    let app = api::router(Arc::clone(&edge));
    let mut on_stop = stopped.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = on_stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(edge_id = %edge.config.edge_id, %url, "edge serving");
    Ok(RunningEdge {
        url,
        edge,
        stop,
        server,
    })
}

/// Runs an edge on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: EdgeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(listener, config).await?;
    shutdown.await;
    running.stop().await
}
