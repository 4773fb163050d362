//! Outbox delivery: the edge's events reach central in order, in batches, each applied once;
//! and the grants and returns a crash or an outage left unfinished are finished.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::clock::Millis;
use crate::edge::{Edge, pause};
use crate::edge_db;
use cart_central::events::{Delivery, OutboxEvent};

/// How the outbox delivery is doing, for `/admin/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncStatus {
    pub last_sync_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// A grant request unanswered this long was interrupted, not slow.
const STALE_GRANT_MS: Millis = 5_000;

/// Delivers the outbox to central in order, in batches, each applied in one central
/// transaction; retries with backoff while central is away.
pub(crate) async fn deliver_outbox(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let mut registered = false;
    let mut backoff = edge.config.sync_every;
    let max_backoff = Duration::from_secs(5);
    loop {
        let result = async {
            if !registered {
                edge.central
                    .register_edge(&edge.config.edge_id, &edge.url)
                    .await?;
                registered = true;
            }
            // Grant requests a crash or an outage interrupted (not the ones in flight now).
            let before = edge.clock.now() - STALE_GRANT_MS;
            let (grants, returns) = edge
                .read(move |c| {
                    let grants = edge_db::pending_grants(c, before)?;
                    Ok((grants, edge_db::pending_returns(c, before)?))
                })
                .await?;
            edge.allotments.resume(grants).await?;
            edge.allotments.resume_returns(returns).await?;
            deliver_once(&edge).await
        }
        .await;
        let period = match result {
            Ok(delivered) => {
                backoff = edge.config.sync_every;
                if delivered > 0 {
                    Duration::ZERO
                } else {
                    edge.config.sync_every
                }
            }
            Err(e) => {
                tracing::warn!("outbox delivery failed, retrying in {backoff:?}: {e:#}");
                edge.sync
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some(format!("{e:#}"));
                backoff = (backoff * 2).min(max_backoff);
                backoff
            }
        };
        if !pause(period, &mut shutdown).await {
            return;
        }
    }
}

/// Delivers one batch; returns how many events central applied.
async fn deliver_once(edge: &Edge) -> anyhow::Result<usize> {
    let limit = edge.config.sync_batch;
    let (rows, backlog) = edge
        .read(move |c| {
            let after = edge_db::delivered_seq(c)?;
            Ok((
                edge_db::outbox_after(c, after, limit)?,
                edge_db::outbox_backlog(c)?,
            ))
        })
        .await?;
    edge.metrics.outbox_backlog.set(backlog);
    let Some(last) = rows.last().map(|r| r.seq) else {
        return Ok(0);
    };
    let batch = rows
        .iter()
        .map(|r| {
            let event: OutboxEvent = serde_json::from_str(&r.event)
                .with_context(|| format!("outbox event {} is not readable", r.seq))?;
            Ok(Delivery { seq: r.seq, event })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let high_water = edge.central.apply(&edge.config.edge_id, &batch).await?;
    // Central may be ahead of us (a crash after its commit, before ours): skip to its mark.
    let mark = high_water.max(last);
    edge.writer
        .host(move |c| edge_db::mark_delivered(c, mark))
        .await?;
    edge.metrics.events_delivered.inc_by(batch.len() as u64);
    let mut status = edge.sync.lock().unwrap_or_else(|p| p.into_inner());
    *status = SyncStatus {
        last_sync_at: Some(edge.clock.now()),
        last_error: None,
    };
    Ok(batch.len())
}
