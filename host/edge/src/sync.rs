//! Outbox delivery: the edge's events reach central in order, in batches, each applied once;
//! and the grants and returns a crash or an outage left unfinished are finished.

use anyhow::Context as _;
use cart_central::CentralError;
use cart_central::events::{Delivery, OutboxEvent};

use crate::clock::Millis;
use crate::edge::Edge;
use crate::identity::Standing;
use crate::locks;
use crate::store::db;
use crate::wire::SyncStatus;

/// A grant request unanswered this long was interrupted, not slow.
const STALE_GRANT_MS: Millis = 5_000;

/// Whether central refused this process: retrying changes nothing until an operator acts.
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CentralError>()
        .is_some_and(CentralError::is_refusal)
}

/// What the edge owes central besides its outbox: its claim on the edge id (made, or renewed
/// at a fifth of the lease so a slow central does not let it lapse), and the grant requests
/// and returns a crash or an outage interrupted (not the ones in flight now).
pub async fn tend_central(edge: &Edge, renewed_at: &mut Millis) -> anyhow::Result<()> {
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
            let grants = db::pending_grants(c, before)?;
            Ok((grants, db::pending_returns(c, before)?))
        })
        .await?;
    edge.allotments.resume(grants).await?;
    edge.allotments.resume_returns(returns).await?;
    Ok(())
}

/// Delivers one batch; returns how many events central applied.
pub async fn deliver_once(edge: &Edge) -> anyhow::Result<usize> {
    let limit = edge.config.sync_batch;
    let (rows, backlog) = edge
        .read(move |c| {
            let after = db::delivered_seq(c)?;
            Ok((db::outbox_after(c, after, limit)?, db::outbox_backlog(c)?))
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
            .host(move |c| db::mark_delivered(c, high_water))
            .await?;
    }
    let applied = u64::try_from(high_water - (first - 1)).unwrap_or(0);
    edge.metrics.events_delivered.inc_by(applied);
    if let Some(e) = failure {
        // Kept in the outbox, sent again: a full stream or an absent server loses nothing.
        return Err(e.into());
    }
    *locks::lock(&edge.sync) = SyncStatus {
        last_sync_at: Some(edge.clock.now()),
        last_error: None,
    };
    Ok(usize::try_from(applied).unwrap_or(0))
}
