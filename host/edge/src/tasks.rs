//! Every background loop of a running edge: delivering the outbox and tending the edge's claim
//! at central, keeping each SKU stocked, following the calendar of sales, releasing lapsed
//! holds, finishing hand-offs a drain left unfinished, and reading a renewed certificate. Each
//! ends when the edge stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_central::CentralError;
use cart_central::SkuKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::carts;
use crate::clock::Millis;
use crate::drain;
use crate::edge::Edge;
use crate::identity::Standing;
use crate::locks;
use crate::shutdown::pause;
use crate::store::db::{self, StockLine};
use crate::store::retention;
use crate::sync;
use crate::tls;

/// How often an edge asks central whether the calendar changed, and what is left in its sales.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Lapsed holds released per transaction.
const SWEEP_BATCH: u32 = 500;
/// How often each SKU's stock is looked at.
const BALANCE_EVERY: Duration = Duration::from_millis(200);

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts the background tasks, each in `span` (the edge's); they end when `shutdown` turns
/// true.
pub fn spawn(
    edge: &Arc<Edge>,
    shutdown: &watch::Receiver<bool>,
    span: &tracing::Span,
) -> Vec<JoinHandle<()>> {
    let run = |task: BoxFuture| tokio::spawn(task.instrument(span.clone()));
    let mut tasks = vec![
        run(Box::pin(deliver(Arc::clone(edge), shutdown.clone()))),
        run(Box::pin(keep_lease(Arc::clone(edge), shutdown.clone()))),
        run(Box::pin(sweep_holds(Arc::clone(edge), shutdown.clone()))),
        run(Box::pin(follow_calendar(
            Arc::clone(edge),
            shutdown.clone(),
        ))),
        run(Box::pin(keep_stocked(Arc::clone(edge), shutdown.clone()))),
        run(Box::pin(tidy(Arc::clone(edge), shutdown.clone()))),
        run(Box::pin(resume_handoffs(
            Arc::clone(edge),
            shutdown.clone(),
        ))),
    ];
    if edge.tls.is_some() {
        // Installed here, before the edge serves: `SIGHUP`'s default action ends the process.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!("no reloading of the certificate on SIGHUP: {e}"))
            .ok();
        tasks.push(run(Box::pin(reload_certificate(
            Arc::clone(edge),
            hangups,
            shutdown.clone(),
        ))));
    }
    tasks
}

/// Reads the edge's certificate and key again when their files change, and at once on
/// `SIGHUP`; a pair that does not load is logged and the one in use kept.
async fn reload_certificate(
    edge: Arc<Edge>,
    mut hangups: Option<tokio::signal::unix::Signal>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(tls) = &edge.tls else { return };
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(signals) => signals.recv().await,
                None => std::future::pending().await,
            }
        };
        let force = tokio::select! {
            _ = hangup => true,
            waited = pause(tls::RELOAD_EVERY, &mut shutdown) => {
                if !waited {
                    return;
                }
                false
            }
        };
        match tls.identity().reload(force) {
            Ok(true) => tracing::info!("serving with the certificate read again"),
            Ok(false) => {}
            Err(e) => tracing::warn!("keeping the certificate in use: {e:#}"),
        }
    }
}

/// Renews the lease every fifth of it while this process holds the edge id, apart from the
/// outbox, so a delivery that takes long (a big batch across a far link) never lets it lapse;
/// after a failed renewal, tries again sooner. A refusal stops the process selling, as in
/// [`deliver`].
async fn keep_lease(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let every = edge.config.lease / 5;
    let mut period = every;
    while pause(period, &mut shutdown).await {
        if edge.standing() != Standing::Claimed {
            period = edge.config.sync_every;
            continue;
        }
        period = match sync::renew_lease(&edge).await {
            Ok(()) => every,
            Err(e) => {
                if let Some(stop) = stopped(&edge, &e) {
                    stand_down(&edge, stop, &e);
                } else {
                    tracing::warn!("renewing the lease: {e:#}");
                }
                every / 4
            }
        };
    }
}

/// Delivers the outbox to central (or to the queue) in order, in batches; keeps the edge's
/// claim and finishes interrupted grants and returns; retries with backoff while central is
/// away. Through the queue, the outbox keeps draining while central is away.
async fn deliver(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = edge.config.sync_every;
    let max_backoff = Duration::from_secs(5);
    // Grown to the configured batch while batches are quick (see `sync::next_batch`).
    let mut batch = 1;
    // Through the queue: when central may be tried again, and how long to wait after that.
    let mut central_due = Instant::now();
    let mut central_backoff = edge.config.sync_every;
    loop {
        let result = async {
            if let Standing::Refused(_) = edge.standing() {
                return Ok(Idle::Refused);
            }
            if edge.queue.is_none() || Instant::now() >= central_due {
                match sync::tend_central(&edge).await {
                    Ok(()) => central_backoff = edge.config.sync_every,
                    Err(e) if edge.queue.is_none() || sync::is_refusal(&edge, &e) => {
                        return Err(e);
                    }
                    Err(e) => {
                        let wait = until_lapse(&edge, &e)
                            .map_or(central_backoff, |lapse| lapse.min(central_backoff));
                        tracing::warn!(
                            "central: {e:#}; asking again in {wait:?} (the outbox still drains \
                             into the queue)"
                        );
                        central_due = Instant::now() + wait;
                        central_backoff = (central_backoff * 2).min(max_backoff);
                    }
                }
            }
            // A history central has not confirmed has nothing it may deliver yet.
            if let Standing::Unclaimed { own_history: false } = edge.standing() {
                return Ok(Idle::Caught);
            }
            let started = Instant::now();
            let delivered = match sync::deliver_once(&edge, batch).await {
                Ok(delivered) => delivered,
                Err(e) => {
                    // A batch too big for central's statement deadline would fail for ever
                    // at its size: the next try is smaller.
                    batch = (batch / 2).max(1);
                    return Err(e);
                }
            };
            batch = sync::next_batch(&edge, batch, delivered >= batch, started.elapsed());
            Ok(if delivered > 0 {
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
                if let Some(stop) = stopped(&edge, &e) {
                    stand_down(&edge, stop, &e);
                    continue;
                }
                let retry = until_lapse(&edge, &e).map_or(backoff, |lapse| lapse.min(backoff));
                tracing::warn!("outbox delivery failed, retrying in {retry:?}: {e:#}");
                locks::lock(&edge.sync).last_error = Some(format!("{e:#}"));
                backoff = (backoff * 2).min(max_backoff);
                retry
            }
        };
        if !pause(period, &mut shutdown).await {
            return;
        }
    }
}

/// For a take-over that central told to wait for the old process's lease: how long until that
/// lease lapses (as central counted when it answered), when it asks again. The old process
/// cannot renew a lapsed lease while the take-over keeps asking.
fn until_lapse(edge: &Edge, e: &anyhow::Error) -> Option<Duration> {
    match e.downcast_ref::<CentralError>() {
        Some(CentralError::EdgeRunning { left_ms, .. }) if edge.config.take_over => Some(
            Duration::from_millis(u64::try_from(left_ms + 20).unwrap_or(20)),
        ),
        _ => None,
    }
}

/// This process sells no more: it lost or was refused its edge id, for `why`.
fn stand_down(edge: &Edge, stop: Standing, why: &anyhow::Error) {
    edge.identity.lose_lease();
    locks::lock(&edge.sync).last_error = Some(format!("{why:#}"));
    edge.set_standing(stop);
}

/// The standing an error leaves this process in, if it is one retrying cannot mend: central
/// gave the id to another process (it still delivers what it has and gives its units back), or
/// refused it, or this edge's outbox and central's record of its history disagree.
fn stopped(edge: &Edge, e: &anyhow::Error) -> Option<Standing> {
    if let Some(diverged) = e.downcast_ref::<sync::Diverged>() {
        tracing::error!("outbox delivery stopped: {diverged}");
        return Some(Standing::Refused(diverged.to_string()));
    }
    if !sync::is_refusal(edge, e) {
        return None;
    }
    let refusal = e.downcast_ref::<CentralError>()?;
    tracing::error!("{refusal}");
    Some(match refusal {
        CentralError::Superseded(_) | CentralError::Retired { .. } => {
            Standing::Superseded(refusal.to_string())
        }
        _ => Standing::Refused(refusal.to_string()),
    })
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

/// Keeps each SKU's free units near its demand (see [`crate::escrow::Allotments::balance`]).
async fn keep_stocked(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = balance_once(&edge).await {
            tracing::warn!("keeping stock balanced: {e:#}");
        }
        if !pause(BALANCE_EVERY, &mut shutdown).await {
            return;
        }
    }
}

/// One pass over every SKU. One SKU's trouble (central refusing it, a failed grant) is logged
/// and never keeps the others from their units.
async fn balance_once(edge: &Edge) -> anyhow::Result<()> {
    // A process that lost its id sells no more: its free units go back.
    if let Standing::Superseded(_) = edge.standing() {
        for line in edge.stock().await?.into_iter().filter(|l| l.units.free > 0) {
            let key = SkuKey::new(&line.sale_id, &line.sku);
            if let Err(e) = edge.allotments.give_back(&key, line.units.free).await {
                tracing::warn!("giving {key} back after losing the edge id: {e}");
            }
        }
        return Ok(());
    }
    // A draining edge returns its units: it asks for none.
    if edge.standing().refusal().is_some() || edge.drain.draining() {
        return Ok(());
    }
    let stock = edge.stock().await?;
    let returning = edge.read(db::returning_skus).await?;
    let wanted = edge.central.wanted_skus().await?;
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    for StockLine {
        sale_id,
        sku,
        units: row,
    } in stock
    {
        let Some(entry) = catalog.entry(&sale_id, &sku) else {
            continue;
        };
        let key = SkuKey::new(&sale_id, &sku);
        let (wanted, returning) = (wanted.contains(&key), returning.contains(&key));
        if let Err(e) = edge
            .allotments
            .balance(entry, row, wanted, returning, now)
            .await
        {
            tracing::warn!("keeping {sale_id}/{sku} stocked: {e}");
        }
    }
    Ok(())
}

/// Follows central's calendar until shutdown.
async fn follow_calendar(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    while pause(FOLLOW_EVERY, &mut shutdown).await {
        if let Err(e) = edge.follow_calendar(None).await {
            tracing::warn!("following the calendar of sales: {e:#}");
        }
        // For the storefront: what is left of each SKU in its sale, not only here.
        if let Err(e) = edge.allotments.count_left_in_sales().await {
            tracing::debug!("counting what is left in the sales: {e}");
        }
    }
}

/// Deletes what this edge and central need no more, until shutdown: delivered outbox events
/// past `--outbox-keep-hours`; and, unless `--retain-days` is 0, the sales past it (a batch at
/// a time, giving the pages they took back to the file system) and central's receipts of this
/// edge's events as old.
async fn tidy(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let retain = (!edge.config.retain.is_zero()).then(|| {
        let retain = edge.config.retain.max(edge.config.outbox_keep);
        Millis::try_from(retain.as_millis()).unwrap_or(Millis::MAX)
    });
    let mut delivered_due = Instant::now();
    loop {
        if Instant::now() >= delivered_due {
            delivered_due = Instant::now() + FORGET_DELIVERED_EVERY;
            if let Err(e) = sync::prune_outbox(&edge).await {
                tracing::warn!("pruning the delivered outbox: {e:#}");
            }
            if let Some(retain) = retain
                && let Standing::Claimed | Standing::Superseded(_) = edge.standing()
            {
                match sync::forget_at_central(&edge, retain).await {
                    Ok(receipts) => {
                        edge.metrics.receipts_forgotten.inc_by(receipts);
                    }
                    Err(e) => tracing::warn!("deleting central's receipts past retention: {e:#}"),
                }
            }
        }
        if let Some(retain) = retain
            && let Err(e) = forget_once(&edge, retain).await
        {
            tracing::warn!("deleting sales past their retention: {e:#}");
        }
        if !pause(FOLLOW_EVERY, &mut shutdown).await {
            return;
        }
    }
}

/// How often delivered outbox events, and central's receipts of them, past their keeping are
/// deleted.
const FORGET_DELIVERED_EVERY: Duration = Duration::from_secs(10);

async fn forget_once(edge: &Edge, retain: Millis) -> anyhow::Result<()> {
    let now = edge.clock.now();
    let dropped_by = now.saturating_sub(retain);
    if !edge
        .read(move |c| retention::any_due(c, dropped_by))
        .await?
    {
        return Ok(());
    }
    let mut carts = 0;
    loop {
        let pruned = edge
            .writer
            .host(move |c| retention::prune_batch(c, dropped_by, now))
            .await?;
        carts += pruned.carts;
        for sale_id in &pruned.sales {
            tracing::info!(
                sale_id,
                "sale past its retention: its carts and orders deleted"
            );
        }
        if pruned.carts < retention::BATCH {
            break;
        }
    }
    let handoffs = edge
        .writer
        .host(move |c| retention::prune_handoffs(c, dropped_by))
        .await?;
    let mut free = u32::MAX;
    loop {
        let left = edge
            .writer
            .host(|c| retention::give_back_pages(c, PAGES_AT_ONCE))
            .await?;
        if left == 0 || left >= free {
            break;
        }
        free = left;
    }
    edge.metrics
        .carts_forgotten
        .inc_by(u64::try_from(carts).unwrap_or(0));
    tracing::debug!(carts, handoffs, "deleted what is past its retention");
    Ok(())
}

/// Free pages given back to the file system per writer job.
const PAGES_AT_ONCE: u32 = 256;

/// Releases lapsed holds, and the holds of sales that have ended, on a timer: a batch per
/// transaction, until none are left.
async fn sweep_holds(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    while pause(edge.config.sweep_every, &mut shutdown).await {
        let now = edge.clock.now();
        let ended: Vec<String> = edge
            .catalog()
            .sales()
            .filter(|s| s.ends_at <= now)
            .map(|s| s.sale_id.clone())
            .collect();
        loop {
            let ended = ended.clone();
            match edge
                .writer
                .host(move |c| carts::sweep(c, now, &ended, SWEEP_BATCH))
                .await
            {
                Ok(n) if n >= SWEEP_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("sweep failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Finishes the hand-offs a drain left unfinished, until none is left.
async fn resume_handoffs(edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    while drain::resume_unfinished(&edge).await {
        if !pause(drain::RESUME_FOR, &mut shutdown).await {
            return;
        }
    }
}
