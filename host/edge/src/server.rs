//! Serving one edge: the caller hands in a bound listener; the edge starts, serves HTTP/1.1
//! (over TLS when it has a certificate, see [`crate::tls`]) until told to stop, then stops
//! accepting, gives connections a bounded grace to finish, and waits for its background tasks
//! to end.
//!
//! Every connection is bounded in time: a TLS handshake and then a request head must each
//! arrive within the header timeout, which also closes a keep-alive connection left idle that
//! long (hyper starts it again after each response), and a body within the body timeout (see
//! [`crate::http::input`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use crate::config::{EdgeConfig, HttpLimits};
use crate::drain;
use crate::edge::Edge;
use crate::http::App;
use crate::tasks;
use crate::tls::EdgeTls;

/// An edge serving on its listener.
pub struct RunningEdge {
    pub url: String,
    pub edge: Arc<Edge>,
    stop: Arc<watch::Sender<bool>>,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    /// Drains the edge and stops it, once a drain is asked for (see [`drain`]).
    drainer: JoinHandle<()>,
    /// The span every line the edge logs is in: `edge`, with its id.
    span: tracing::Span,
}

impl RunningEdge {
    /// Drains the edge within its drain timeout (see [`drain`]), then stops it.
    pub async fn drain(self) -> anyhow::Result<()> {
        self.edge.drain.ask();
        self.until_stopped().await;
        self.stop().await
    }

    /// Resolves once the edge was told to stop: after a drain an operator asked for.
    pub async fn until_stopped(&self) {
        let _ = self.stop.subscribe().wait_for(|s| *s).await;
    }

    /// Stops accepting, lets requests in flight finish (within the grace), and waits for the
    /// background tasks to end. The edge's data folder is free again when this returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        // A drain under way is cut short: what it left is safe on the disk.
        self.drainer.abort();
        self.server.await?;
        for task in self.tasks {
            task.await?;
        }
        Ok(())
    }
}

/// Starts an edge on `listener` and returns once it is serving.
pub async fn start(listener: TcpListener, config: EdgeConfig) -> anyhow::Result<RunningEdge> {
    let addr = listener.local_addr()?;
    anyhow::ensure!(
        config.public_url.is_some() || config.fleet_secret.is_none() || !addr.ip().is_unspecified(),
        "listening on {addr}, the other edges need to be told where to reach this one: \
         pass --public-url"
    );
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let limits = config.http;
    // Every line the edge logs, from its start, its tasks and its requests, names it: a process
    // may run more than one (`cart-host demo`).
    let span = tracing::info_span!("edge", edge_id = %config.edge_id);
    let edge = Edge::start(config, url.clone())
        .instrument(span.clone())
        .await?;
    let (stop, stopped) = watch::channel(false);
    let stop = Arc::new(stop);
    let tasks = tasks::spawn(&edge, &stopped, &span);
    let app = App::new(Arc::clone(&edge));
    let tls = edge.tls.as_ref().map(EdgeTls::acceptor);
    let server = tokio::spawn(serve(listener, app, tls, stopped, limits).instrument(span.clone()));
    let drainer = tokio::spawn(
        drain_when_asked(Arc::clone(&edge), Arc::clone(&stop)).instrument(span.clone()),
    );
    span.in_scope(|| tracing::info!(%url, "edge serving"));
    Ok(RunningEdge {
        url,
        edge,
        stop,
        server,
        tasks,
        drainer,
        span,
    })
}

/// Waits for a drain to be asked for, drains, says what was done, and tells the edge to stop.
async fn drain_when_asked(edge: Arc<Edge>, stop: Arc<watch::Sender<bool>>) {
    edge.drain.asked().await;
    let timeout = edge.config.drain_timeout;
    tracing::info!("draining, within {timeout:?}");
    let report = drain::run(&edge, timeout).await;
    if report.complete() {
        tracing::info!("drained: {report}");
    } else if report.kept_for_restart() {
        tracing::info!("stopped with no other edge ready to take its carts: {report}");
    } else {
        tracing::warn!("drain ended with work left: {report}");
    }
    let _ = stop.send(true);
}

/// How an edge is to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Leave the fleet: hand the carts to the other edges, return the free units, deliver the
    /// outbox, leave central's registry (see [`drain`]). What an orchestrator's scale-in wants.
    Drain,
    /// Stop in place, to start again on the same folder (an upgrade, a restart): finish the
    /// requests in flight and keep the carts, the units and the lease; a process started on
    /// the folder takes them up at once.
    InPlace,
}

/// Runs an edge on `listener` until `shutdown` resolves, and ends it as that says; or until an
/// operator asks it to drain, and drains it.
pub async fn run(
    listener: TcpListener,
    config: EdgeConfig,
    shutdown: impl Future<Output = Ending>,
) -> anyhow::Result<()> {
    let running = start(listener, config).await?;
    let ending = tokio::select! {
        ending = shutdown => ending,
        () = running.until_stopped() => Ending::Drain,
    };
    match ending {
        Ending::Drain => running.drain().await,
        Ending::InPlace => {
            let span = running.span.clone();
            span.in_scope(|| {
                tracing::info!(
                    "stopping in place: carts, units and lease kept for the next process on this \
                     folder"
                );
            });
            running.stop().await?;
            span.in_scope(|| tracing::info!("stopped in place"));
            Ok(())
        }
    }
}

/// Accepts connections until `stopped`, then drains them within the grace. Every connection
/// is bounded in time (see the module's documentation): for the edge's application, and for
/// any other front an edge's binary serves (`cart-host scale`'s front door). With `tls`, each
/// connection's handshake is done on its own task, so a slow one holds up no other.
pub async fn serve(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
    limits: HttpLimits,
) {
    let mut http = Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (http, watcher, app, tls) =
            (http.clone(), graceful.watcher(), app.clone(), tls.clone());
        // In the caller's span: an edge's connections log as that edge.
        connections.spawn(
            async move {
                let served = match tls {
                    None => {
                        serve_connection(&http, watcher, stream, app.for_connection(peer, false))
                            .await
                    }
                    Some(tls) => {
                        let stream = match timeout(limits.header_timeout, tls.accept(stream)).await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer}: {e}"),
                            Err(_) => {
                                return tracing::debug!("TLS handshake with {peer}: timed out");
                            }
                        };
                        // A certificate it presented was checked against the fleet CA in the handshake.
                        let certified = stream.get_ref().1.peer_certificates().is_some();
                        serve_connection(
                            &http,
                            watcher,
                            stream,
                            app.for_connection(peer, certified),
                        )
                        .await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!("connection from {peer}: {e}");
                }
            }
            .in_current_span(),
        );
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                "{} connection(s) still open after {:?}: closing them",
                connections.len(),
                limits.shutdown_grace
            );
        }
    }
    connections.shutdown().await;
}

/// One connection, served until it closes or the shutdown's grace ends.
async fn serve_connection<I, S>(
    http: &Builder,
    watcher: Watcher,
    io: I,
    service: S,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(hyper::Request<Incoming>) -> RouteFuture<Infallible> + Send + 'static,
{
    let service = hyper::service::service_fn(service);
    watcher
        .watch(http.serve_connection(TokioIo::new(io), service))
        .await
}
