//! Outbox delivery: the edge's events reach central in order, in batches, each applied once;
//! and the grants and returns a crash or an outage left unfinished are finished.

use std::time::Instant;

use anyhow::Context as _;
use cart_central::events::{Delivery, OutboxEvent, Sender, digest};
use cart_central::{CentralError, GrantRequest, Known};

use crate::clock::Millis;
use crate::edge::Edge;
use crate::escrow::GrantError;
use crate::identity::Standing;
use crate::locks;
use crate::store::db;
use crate::wire::SyncStatus;

/// A grant request unanswered this long was interrupted, not slow.
const STALE_GRANT_MS: Millis = 5_000;

/// Whether central refused this process: retrying changes nothing until an operator acts. (A
/// take-over waiting for the old process's lease to lapse is not refused: it waits.)
pub fn is_refusal(edge: &Edge, e: &anyhow::Error) -> bool {
    e.downcast_ref::<CentralError>().is_some_and(|e| {
        e.is_refusal() && !(edge.config.take_over && matches!(e, CentralError::EdgeRunning { .. }))
    })
}

/// What the edge owes central besides its outbox and its lease: its claim on the edge id, and
/// the grant requests and returns a crash or an outage interrupted (not the ones in flight
/// now). A process that lost its id still finishes its returns.
pub async fn tend_central(edge: &Edge) -> anyhow::Result<()> {
    let lease = edge.config.lease;
    match edge.standing() {
        Standing::Refused(_) | Standing::Superseded(_) | Standing::Claimed => {}
        Standing::Unclaimed { .. } => {
            let claimed = edge
                .identity
                .claim(
                    &edge.central,
                    &edge.writer,
                    &edge.url,
                    lease,
                    edge.config.take_over,
                )
                .await?;
            // The calendar, and what customers bought in histories this claim may just have
            // retired, before it sells.
            // And, when central was restored from a backup while this process was away, the
            // grants it holds sent again, since central may have granted their units to
            // others: it sells on the lease of the renewal that tells it so, not the claim's.
            edge.identity.lose_lease();
            let ready = match edge.follow_calendar(Some(claimed.catalog_version)).await {
                Ok(()) => renew_lease(edge).await,
                Err(e) => Err(e),
            };
            if let Err(e) = ready {
                // It sells on no lease with an old calendar: it waits for the next try.
                edge.identity.lose_lease();
                return Err(e);
            }
            edge.set_standing(Standing::Claimed);
        }
    }
    let before = edge.clock.now() - STALE_GRANT_MS;
    let refused = edge.standing().lost_id();
    let (grants, returns) = edge
        .read(move |c| {
            let grants = db::pending_grants(c, before)?;
            Ok((grants, db::pending_returns(c, before)?))
        })
        .await?;
    // One unfinished grant or return that central will not take yet (a return waits for the
    // outbox to settle central's count) keeps nothing else, the outbox least of all, waiting.
    let mut unfinished = Vec::new();
    if !refused && let Err(e) = edge.allotments.resume(grants).await {
        unfinished.push(e);
    }
    if !edge.allotments.returns_paused()
        && let Err(e) = edge.allotments.resume_returns(returns).await
    {
        unfinished.push(e);
    }
    for e in unfinished {
        match &e {
            GrantError::Central(c) if c.is_refusal() => return Err(e.into()),
            // Through a queue, central applies the outbox some time after the edge delivered it.
            GrantError::Central(CentralError::ReturnEarly { .. }) => {
                tracing::debug!("a return waits for central to apply the outbox: {e}");
            }
            _ => tracing::warn!("finishing an interrupted grant or return: {e}"),
        }
    }
    Ok(())
}

/// The next batch's size after one of `size` events took `took`: halved while a batch takes
/// more than a quarter of the lease, doubled (up to the configured batch) while a full one
/// takes under half of that (a batch twice the size takes at most twice as long; far from
/// central, where a batch costs central four round trips whatever its size, barely longer).
/// Central applies a batch in one transaction holding the edge's row, which the lease's renewal
/// (every fifth of the lease) also writes: a batch that took longer than the rest of the lease
/// would keep the lease from being renewed until it lapsed.
pub fn next_batch(edge: &Edge, size: usize, full: bool, took: std::time::Duration) -> usize {
    let budget = edge.config.lease / 4;
    if took > budget {
        (size / 2).max(1)
    } else if full && took < budget / 2 {
        (size * 2).min(edge.config.sync_batch)
    } else {
        size
    }
}

/// Renews the lease of a process that holds the edge id, and records until when it may sell.
pub async fn renew_lease(edge: &Edge) -> anyhow::Result<()> {
    // Read before central answers: central has at least this much then, unless it lost it.
    // Through the queue, central is rightly behind what the edge delivered.
    let direct = edge.queue.is_none();
    let known = edge
        .read(move |c| {
            Ok(Known {
                delivered: direct.then(|| db::delivered_seq(c)).transpose()?,
                newest_grant: db::newest_grant(c)?,
            })
        })
        .await?;
    let asked = Instant::now();
    let renewed = edge
        .central
        .renew_lease(
            &edge.config.edge_id,
            &edge.identity.incarnation,
            edge.config.lease_ms(),
            &known,
        )
        .await?;
    current_calendar(edge, renewed.catalog_version).await?;
    // What a restore of central lost, before this process sells on: the grants, then the events.
    if let Some(restored_at) = renewed.reconcile {
        reconcile(edge, restored_at).await?;
    }
    if let Some(delivered) = known.delivered
        && renewed.high_water < delivered
    {
        let grants_sent = renewed.reconcile.is_some();
        redeliver(edge, renewed.high_water, delivered, grants_sent).await?;
    }
    let until = edge.identity.renewed(asked, edge.config.lease);
    edge.writer
        .host(move |c| db::set_meta(c, "lease_until", &until.to_string()))
        .await?;
    Ok(())
}

/// Selling on under a lease needs the calendar it was granted with: a sale ended early ends at
/// a time every lease granted since knows of (see `cart_central`'s `end_sale`).
async fn current_calendar(edge: &Edge, version: i64) -> anyhow::Result<()> {
    if version != edge.calendar_version() {
        edge.follow_calendar(Some(version)).await?;
    }
    Ok(())
}

/// Delivers one batch; returns how many events central applied.
pub async fn deliver_once(edge: &Edge, limit: usize) -> anyhow::Result<usize> {
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
    let history = edge.identity.history_id();
    let batch = rows
        .iter()
        .map(|r| {
            let event: OutboxEvent = serde_json::from_str(&r.event)
                .with_context(|| format!("outbox event {} is not readable", r.seq))?;
            Ok(Delivery::unsigned(r.seq, event))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = batch.first().map_or(last, |d| d.seq);
    let key = &edge.identity.key;
    let (high_water, failure) = match &edge.queue {
        // Delivered once the stream has stored it; the relay applies it to central. Each
        // event is signed: the relay and central know it by its signature alone.
        Some(queue) => {
            let (stored, failure) = queue.publish(&history, key, &batch).await;
            (stored.unwrap_or(first - 1), failure)
        }
        None => {
            let marks = edge
                .central
                .deliver(&edge.config.edge_id, &history, Sender::Process(key), &batch)
                .await?;
            if marks.before < first - 1 {
                // Central lost events it had applied: they go again, then this batch.
                redeliver(edge, marks.before, first - 1, false).await?;
                return Ok(0);
            }
            if marks.before >= first {
                // Central had events of ours from this batch on, applied before a crash kept
                // us from marking them: they must be these very events. It may have more than
                // this batch (the one before the crash was bigger): those are marked once a
                // later batch has been checked against them.
                same_as_applied(edge, &history, &batch, marks.before.min(last)).await?;
                (marks.after.min(last), None)
            } else {
                (marks.after, None)
            }
        }
    };
    // Central applied at most what it was sent; after a crash between its commit and ours it
    // is ahead of our mark, but never past what this outbox holds, nor short of the event
    // before this batch. Anything else means central and this edge disagree on the history.
    anyhow::ensure!(
        (first - 1..=last).contains(&high_water),
        Diverged(format!(
            "central has applied this edge's events up to {high_water}, but its outbox holds \
             {first}..={last} undelivered: the histories differ"
        ))
    );
    if high_water >= first {
        let keep = !edge.config.outbox_keep.is_zero();
        edge.writer
            .host(move |c| {
                db::mark_delivered(c, high_water)?;
                if !keep {
                    db::prune_delivered(c, Millis::MAX, high_water - first + 1)?;
                }
                Ok(())
            })
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

/// Central has applied this edge's events only up to `central`, though it had applied them up to
/// `delivered`: it was restored from a backup. What it lost is given to it again, in the order
/// that keeps its books whole: first the grants (sent again under their ids, each taken once,
/// unless `grants_sent` already), so that the units the events hold and sell are the edge's at
/// central; then the events after its mark, as the outbox keeps them; then the returns, once
/// those events have settled central's count (see [`tend_central`]).
async fn redeliver(
    edge: &Edge,
    central: i64,
    delivered: i64,
    grants_sent: bool,
) -> anyhow::Result<()> {
    tracing::warn!(
        "central has applied this edge's events only up to {central}, not up to {delivered}: it \
         was restored from a backup; granting again and delivering again what it lost"
    );
    if !grants_sent {
        grant_again(edge).await?;
    }
    let kept = edge
        .writer
        .host(move |c| db::redeliver_after(c, central))
        .await?;
    if !kept {
        return Err(Diverged(format!(
            "central, restored from a backup, has this edge's events only up to {central}; \
             this edge delivered them up to {delivered} and no longer keeps all of those \
             (--outbox-keep-hours): the holds and orders among them are missing at central"
        ))
        .into());
    }
    Ok(())
}

/// Grants sent again in one transaction.
const GRANT_AGAIN_BATCH: usize = 500;

/// Central was found restored from a backup at `restored_at` (by this edge or another, or by an
/// operator), and grants nothing new until every edge has sent its grants again: this edge's
/// are sent, and central is told. The units it had returned go again too (each taken once), at
/// the next [`tend_central`].
async fn reconcile(edge: &Edge, restored_at: Millis) -> anyhow::Result<()> {
    tracing::warn!(
        "central was found restored from a backup: sending every grant this edge holds again"
    );
    grant_again(edge).await?;
    edge.writer.host(db::unconfirm_returns).await?;
    edge.central
        .reconciled(
            &edge.config.edge_id,
            &edge.identity.incarnation,
            restored_at,
        )
        .await?;
    edge.metrics.central_restores.inc();
    tracing::info!("central has every grant this edge holds again");
    Ok(())
}

/// Sends every grant this edge holds to central again, under their ids: central takes the
/// units of each it lost again, from what is unallocated. One it can no longer grant in full
/// (another edge was granted those units before the restore was noticed) gives the difference
/// up from the free units here, so that they are not sold twice.
async fn grant_again(edge: &Edge) -> anyhow::Result<()> {
    let mut granted = edge.read(db::granted).await?;
    let by_age: Vec<String> = granted.iter().map(|g| g.0.clone()).collect();
    // In the order central locks SKUs in, so that two edges sending theirs cannot deadlock.
    granted.sort_by(|a, b| (&a.1, &a.2, &a.0).cmp(&(&b.1, &b.2, &b.0)));
    let mut kept = std::collections::HashSet::new();
    for grants in granted.chunks(GRANT_AGAIN_BATCH) {
        let again: Vec<_> = grants
            .iter()
            .map(|(grant_id, sale_id, sku, units)| GrantRequest {
                grant_id: grant_id.clone(),
                edge_id: edge.config.edge_id.clone(),
                incarnation: edge.identity.incarnation.clone(),
                sale_id: sale_id.clone(),
                sku: sku.clone(),
                requested: *units,
                again: true,
                known: Known::default(),
            })
            .collect();
        let got = edge.central.grant_again(&again).await?;
        for (req, got) in again.into_iter().zip(got) {
            if got > 0 {
                kept.insert(req.grant_id.clone());
            }
            if got >= req.requested {
                continue;
            }
            let id = req.grant_id.clone();
            let short = edge
                .writer
                .host(move |c| db::shrink_grant(c, &id, got))
                .await?;
            let sku = format!("{}/{}", req.sale_id, req.sku);
            if short > 0 {
                // Held or sold here already: the audit will name the SKU.
                tracing::error!(
                    "central, restored, grants {got} of the {} units of {sku} it had granted \
                     this edge (grant {}); {short} of them are held or sold here and may be \
                     sold twice",
                    req.requested,
                    req.grant_id
                );
            } else {
                tracing::warn!(
                    "central, restored, grants {got} of the {} units of {sku} it had granted \
                     this edge (grant {}): the rest are no longer this edge's to sell",
                    req.requested,
                    req.grant_id
                );
            }
        }
    }
    // The newest one central granted again is what this edge tells it of from now on (see
    // `cart_central::Known`): none, if it granted none.
    let newest = by_age.into_iter().rev().find(|id| kept.contains(id));
    edge.writer
        .host(move |c| db::set_newest_grant(c, newest.as_deref()))
        .await?;
    Ok(())
}

/// Deletes delivered outbox events older than `--outbox-keep-hours`, a batch at a time.
pub async fn prune_outbox(edge: &Edge) -> anyhow::Result<()> {
    const BATCH: i64 = 1_000;
    let keep = Millis::try_from(edge.config.outbox_keep.as_millis()).unwrap_or(Millis::MAX);
    let before = edge.clock.now().saturating_sub(keep);
    while edge
        .writer
        .host(move |c| db::prune_delivered(c, before, BATCH))
        .await?
        == BATCH as usize
    {}
    Ok(())
}

/// Deletes central's receipts of this edge's events that it has marked delivered and central
/// applied longer than `retain` ago (and those of edges gone that long), a batch at a time; how
/// many went.
pub async fn forget_at_central(edge: &Edge, retain: Millis) -> anyhow::Result<u64> {
    let delivered = edge.read(db::delivered_seq).await?;
    let before = edge.clock.now().saturating_sub(retain);
    let mut total = 0;
    loop {
        let forgotten = edge
            .central
            .forget(
                &edge.config.edge_id,
                &edge.identity.incarnation,
                delivered,
                before,
            )
            .await?;
        let receipts = forgotten.receipts + forgotten.gone_receipts;
        total += receipts;
        if receipts < cart_central::FORGET_BATCH {
            return Ok(total);
        }
    }
}

/// This edge's outbox and central's record of its history disagree: delivery stops, loudly,
/// for an operator to look at; it is never read as delivered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Diverged(pub String);

/// Checks that the events central applied of this history up to `to` are `batch`'s.
async fn same_as_applied(
    edge: &Edge,
    history: &str,
    batch: &[Delivery],
    to: i64,
) -> anyhow::Result<()> {
    let from = batch.first().map_or(to, |d| d.seq);
    let applied = edge.central.applied_digests(history, from, to).await?;
    for d in batch.iter().take_while(|d| d.seq <= to) {
        let ours = digest(&d.event);
        let theirs = applied
            .iter()
            .find(|(seq, _)| *seq == d.seq)
            .map(|(_, h)| h);
        if theirs != Some(&ours) {
            return Err(Diverged(format!(
                "central applied another event as seq {} of this edge's history than the one \
                 in its outbox: another process has delivered under this history",
                d.seq
            ))
            .into());
        }
    }
    Ok(())
}
