//! Outbox delivery: the edge's events reach central in order, in batches, each applied once;
//! and the grants and returns a crash or an outage left unfinished are finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::clock::Millis;
use crate::edge::{Edge, pause};
use crate::edge_db;
use crate::identity::Standing;
use cart_central::CentralError;
use cart_central::events::{Delivery, OutboxEvent};

/// How the outbox delivery is doing, for `/admin/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncStatus {
    pub last_sync_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// A grant request unanswered this long was interrupted, not slow.
const STALE_GRANT_MS: Millis = 5_000;

/// Delivers the outbox to central (or to the queue) in order, in batches; keeps the edge's
/// claim and finishes interrupted grants and returns; retries with backoff while central is
/// away. Through the queue, the outbox keeps draining while central is away.
pub(crate) async fn deliver_outbox(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = edge.config.sync_every;
    let max_backoff = Duration::from_secs(5);
    let mut renewed_at = edge.clock.now();
    // Through the queue: when central may be tried again, and how long to wait after that.
    let mut central_due = Instant::now();
    let mut central_backoff = edge.config.sync_every;
    loop {
        let result = async {
            if let Standing::Refused(_) = edge.standing() {
                return Ok(Idle::Refused);
            }
            if edge.queue.is_none() || Instant::now() >= central_due {
                match tend_central(&edge, &mut renewed_at).await {
                    Ok(()) => central_backoff = edge.config.sync_every,
                    Err(e) if edge.queue.is_none() || is_refusal(&e) => return Err(e),
                    Err(e) => {
                        tracing::warn!(
                            "central did not answer, retrying in {central_backoff:?}; the outbox \
                             still drains into the queue: {e:#}"
                        );
                        central_due = Instant::now() + central_backoff;
                        central_backoff = (central_backoff * 2).min(max_backoff);
                    }
                }
            }
            // A history central has not confirmed has nothing it may deliver yet.
            if let Standing::Unclaimed { own_history: false } = edge.standing() {
                return Ok(Idle::Caught);
            }
            Ok(if deliver_once(&edge).await? > 0 {
                Idle::Busy
            } else {
                Idle::Caught
            })
        }
        .await;
        let period = match result {
            Ok(Idle::Busy) => Duration::ZERO,
            Ok(Idle::Caught) => {
                backoff = edge.config.sync_every;
                edge.config.sync_every
            }
            Ok(Idle::Refused) => Duration::from_secs(3600),
            Err(e) => {
                if let Some(refusal) = e.downcast_ref::<CentralError>().filter(|e| e.is_refusal()) {
                    tracing::error!("{refusal}");
                    edge.set_standing(Standing::Refused(refusal.to_string()));
                    continue;
                }
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

fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CentralError>()
        .is_some_and(CentralError::is_refusal)
}

/// What the edge owes central besides its outbox: its claim on the edge id (made, or renewed
/// at a fifth of the lease so a slow central does not let it lapse), and the grant requests
/// and returns a crash or an outage interrupted (not the ones in flight now).
async fn tend_central(edge: &Edge, renewed_at: &mut Millis) -> anyhow::Result<()> {
    match edge.standing() {
        Standing::Refused(_) => return Ok(()),
        Standing::Unclaimed { .. } => {
            edge.identity
                .claim(
                    &edge.central,
                    &edge.writer,
                    &edge.url,
                    edge.config.lease_ms(),
                    edge.config.take_over,
                )
                .await?;
            edge.set_standing(Standing::Claimed);
            *renewed_at = edge.clock.now();
        }
        Standing::Claimed if edge.clock.now() - *renewed_at >= edge.config.lease_ms() / 5 => {
            edge.central
                .renew_lease(
                    &edge.config.edge_id,
                    &edge.identity.incarnation,
                    edge.config.lease_ms(),
                )
                .await?;
            *renewed_at = edge.clock.now();
        }
        Standing::Claimed => {}
    }
    let before = edge.clock.now() - STALE_GRANT_MS;
    let (grants, returns) = edge
        .read(move |c| {
            let grants = edge_db::pending_grants(c, before)?;
            Ok((grants, edge_db::pending_returns(c, before)?))
        })
        .await?;
    edge.allotments.resume(grants).await?;
    edge.allotments.resume_returns(returns).await?;
    Ok(())
}

/// What a pass of the sync loop found.
enum Idle {
    /// It delivered events: more may be waiting.
    Busy,
    /// Nothing left to deliver.
    Caught,
    /// Central refused this process its edge id: there is nothing it may deliver.
    Refused,
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
    let first = batch.first().map_or(last, |d| d.seq);
    let history = edge.identity.history_id();
    let (high_water, failure) = match &edge.queue {
        // Delivered once the stream has stored it; the relay applies it to central.
        Some(queue) => {
            let (stored, failure) = queue.publish(&history, &batch).await;
            (stored.unwrap_or(first - 1), failure)
        }
        None => (
            edge.central
                .apply(&edge.config.edge_id, &history, &batch)
                .await?,
            None,
        ),
    };
    // Central applied at most what it was sent; after a crash between its commit and ours it
    // is ahead of our mark, but never past what this outbox holds, nor short of the event
    // before this batch. Anything else means central and this edge disagree on the history.
    anyhow::ensure!(
        (first - 1..=last).contains(&high_water),
        "central has applied this edge's events up to {high_water}, but its outbox holds \
         {first}..={last} undelivered: the histories differ"
    );
    if high_water >= first {
        edge.writer
            .host(move |c| edge_db::mark_delivered(c, high_water))
            .await?;
    }
    let applied = u64::try_from(high_water - (first - 1)).unwrap_or(0);
    edge.metrics.events_delivered.inc_by(applied);
    if let Some(e) = failure {
        // Kept in the outbox, sent again: a full stream or an absent server loses nothing.
        return Err(e.into());
    }
    let mut status = edge.sync.lock().unwrap_or_else(|p| p.into_inner());
    *status = SyncStatus {
        last_sync_at: Some(edge.clock.now()),
        last_error: None,
    };
    Ok(usize::try_from(applied).unwrap_or(0))
}
