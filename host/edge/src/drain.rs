//! Draining: an edge leaving the fleet mid-sale without a shopper losing a hold.
//!
//! Asked by `POST /admin/drain` or `SIGTERM`, the edge stops taking new carts (`/readyz`
//! answers `503`), hands its carts to ready peers in batches ([`crate::handoff`], exactly once),
//! returns its free units to central, waits for its outbox to drain, leaves central's registry
//! and exits. Everything is bounded by the drain timeout: what is not done by then stays safe on
//! the edge's disk, said in the log, and a restart of the same edge resumes it. With no ready
//! peer (the whole fleet is stopping) the carts stay here and the edge exits at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_central::{CentralError, SkuKey};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use crate::edge::Edge;
use crate::fleet::Peer;
use crate::handoff::{self, Batch, CUSTOMERS_PER_HANDOFF, Outgoing, Refusal};
use crate::http_client::join;
use crate::store::db;
use crate::store::writer::WriteError;
use crate::wire::HANDOFF_PATH;

/// How long an edge that keeps its carts spends returning units and delivering its outbox.
const KEEPING_GRACE: Duration = Duration::from_secs(2);
/// How long a peer has to say whether it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Between attempts at a step that did not go through.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// What a drain did, for the log.
#[derive(Debug, Default)]
pub struct DrainReport {
    pub carts_handed_off: usize,
    /// Carts still on this edge's disk.
    pub carts_kept: i64,
    /// Hand-offs started and not finished: resumed when the edge runs again.
    pub handoffs_unfinished: usize,
    pub units_returned: u32,
    /// Returns central has not taken yet (it takes each once it has the outbox written before
    /// it): finished when the edge runs again.
    pub returns_unconfirmed: usize,
    pub outbox_left: i64,
    pub deregistered: bool,
    /// No other edge was ready to take the carts (the whole fleet stopping, say).
    pub no_ready_peer: bool,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cart(s) handed off, {} kept on disk, {} hand-off(s) unfinished, {} unit(s) \
             returned to central ({} return(s) unconfirmed), {} outbox event(s) undelivered, {}",
            self.carts_handed_off,
            self.carts_kept,
            self.handoffs_unfinished,
            self.units_returned,
            self.returns_unconfirmed,
            self.outbox_left,
            if self.deregistered {
                "left the registry"
            } else {
                "still in the registry (a restart resumes)"
            }
        )
    }
}

impl DrainReport {
    /// Nothing of this edge is left anywhere but at central and its peers.
    pub fn complete(&self) -> bool {
        self.deregistered
    }

    /// A stop as the whole fleet stops, not a failed drain: no peer could take the carts, so
    /// they stay on this edge's disk for its restart, and nothing was left half done.
    pub fn kept_for_restart(&self) -> bool {
        self.no_ready_peer && self.handoffs_unfinished == 0
    }
}

/// What the receiving edge did with a batch a draining peer offered.
#[derive(Debug)]
pub enum Intake {
    /// The carts are in this edge's books (now, or from an earlier offer of the same batch).
    Taken(usize),
    /// Refused for good, and why: central recorded no such hand-off to this edge, or the batch
    /// is not the one it recorded.
    Refused(String),
    /// Not now, and why: this edge cannot take it yet; the sender offers it again.
    NotYet(String),
}

/// Takes a batch a draining peer hands this edge, once, as central recorded it (see
/// [`handoff::take`]). A draining edge takes it too: the carts are its own at central already,
/// and it hands them on in turn.
pub async fn receive(edge: &Edge, batch: Batch) -> Result<Intake, WriteError> {
    if let Some(why) = edge
        .standing()
        .lost_id()
        .then(|| edge.standing().refusal())
        .flatten()
    {
        return Ok(Intake::NotYet(why));
    }
    let record = match edge
        .central
        .handoff_record(&batch.handoff_id, &edge.config.edge_id)
        .await
    {
        Ok(Some(record)) => record,
        Ok(None) => {
            tracing::warn!(
                "hand-off {} from {}: central recorded no such hand-off to this edge; refused",
                batch.handoff_id,
                batch.from_edge
            );
            return Ok(Intake::Refused(
                "central recorded no such hand-off to this edge".into(),
            ));
        }
        Err(e) => {
            tracing::warn!(
                "hand-off {}: reading central's record: {e}",
                batch.handoff_id
            );
            return Ok(Intake::NotYet(
                "central does not answer for the hand-off's record".into(),
            ));
        }
    };
    let (catalog, now, id) = (edge.catalog(), edge.clock.now(), batch.handoff_id.clone());
    let carts: Vec<String> = batch.carts.iter().map(|c| c.cart_id.clone()).collect();
    let taken = edge
        .writer
        .host(move |c| handoff::take(c, &batch, &record, &catalog, now))
        .await?;
    Ok(match taken {
        Ok(()) => {
            let n = carts.len();
            edge.fleet.note_adopted(carts);
            tell_taken(edge, &id).await;
            Intake::Taken(n)
        }
        Err(Refusal::ForGood(why)) => Intake::Refused(why),
        Err(Refusal::NotYet(why)) => Intake::NotYet(why),
    })
}

/// Tells central a hand-off is in this edge's books; what central does not hear now, the next
/// drain tells it (see [`received_recorded`]).
async fn tell_taken(edge: &Edge, handoff_id: &str) {
    let told = edge
        .central
        .handoff_taken(handoff_id, &edge.config.edge_id, &edge.identity.incarnation)
        .await;
    match told {
        Ok(()) => {
            let id = handoff_id.to_owned();
            if let Err(e) = edge.writer.host(move |c| handoff::recorded(c, &id)).await {
                tracing::warn!("hand-off {handoff_id}: marking it known at central: {e}");
            }
        }
        Err(e) => tracing::warn!("hand-off {handoff_id}: telling central it was taken: {e}"),
    }
}

/// Drains the edge within `timeout`.
pub async fn run(edge: &Arc<Edge>, timeout: Duration) -> DrainReport {
    edge.drain.ask();
    let deadline = Instant::now() + timeout;
    // Every hand-off taken before the switch has committed once this job has: the ones after it
    // are refused inside their job (see `take_handoff`).
    let _ = edge.writer.host(|_| Ok(())).await;
    let mut report = DrainReport::default();
    let all_moved = edge.fleet.in_fleet() && hand_off(edge, deadline, &mut report).await;
    // With carts kept here (no ready peer), the edge exits at once: it returns what central
    // takes within a moment and leaves the outbox for its restart.
    let deadline = if all_moved {
        deadline
    } else {
        deadline.min(Instant::now() + KEEPING_GRACE)
    };
    report.units_returned = return_free_units(edge, deadline).await;
    report.outbox_left = outbox_drained(edge, deadline).await;
    report.returns_unconfirmed = returns_confirmed(edge, deadline).await;
    let (kept, unfinished) = edge
        .read(|c| {
            Ok((
                c.query_row("SELECT COUNT(*) FROM carts", [], |r| r.get::<_, i64>(0))?,
                handoff::unfinished(c)?.len(),
            ))
        })
        .await
        .unwrap_or((-1, usize::MAX));
    report.carts_kept = kept;
    report.handoffs_unfinished = unfinished;
    // A return central has not taken keeps its units allotted to this edge: a drained edge's
    // folder may never run again to finish it.
    if kept == 0 && unfinished == 0 && report.outbox_left == 0 && report.returns_unconfirmed == 0 {
        match edge
            .central
            .drained(&edge.config.edge_id, &edge.identity.incarnation)
            .await
        {
            Ok(()) => report.deregistered = true,
            Err(e) => tracing::warn!("leaving central's registry: {e}"),
        }
    }
    report
}

/// Hands every cart to ready peers, batch by batch, resuming unfinished hand-offs first;
/// whether every cart left.
async fn hand_off(edge: &Arc<Edge>, deadline: Instant, report: &mut DrainReport) -> bool {
    // Carts taken from another edge move on only once central has recorded that they are here:
    // a later record of the first move must not undo the second.
    while !received_recorded(edge).await {
        if Instant::now() >= deadline {
            tracing::warn!("drain: hand-offs this edge took are not recorded at central yet");
            return false;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    let pending = match edge.read(handoff::unfinished).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!("drain: reading unfinished hand-offs: {e:#}");
            return false;
        }
    };
    for out in pending {
        match complete(edge, &out, deadline).await {
            Some(true) => report.carts_handed_off += out.batch.carts.len(),
            Some(false) => {}
            None => return false,
        }
    }
    let mut refused: Vec<String> = Vec::new();
    let mut turn = 0usize;
    // The receiver of a customer whose carts did not all fit in the last batch.
    let mut sticky: Option<Peer> = None;
    while Instant::now() < deadline {
        let peers: Vec<Peer> = ready_peers(edge)
            .await
            .into_iter()
            .filter(|p| !refused.contains(&p.edge_id))
            .collect();
        let peer = match &sticky {
            // A customer's carts all end up on one edge, where their limit is counted.
            Some(sticky) if !peers.iter().any(|p| p.edge_id == sticky.edge_id) => {
                tracing::warn!(
                    "drain: {} is not ready, and it has part of a customer's carts: the rest \
                     wait for it",
                    sticky.edge_id
                );
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
            Some(sticky) => sticky.clone(),
            None => {
                let Some(peer) = peers.get(turn % peers.len().max(1)).cloned() else {
                    tracing::info!(
                        "drain: no other edge is ready: the carts left stay on this edge"
                    );
                    report.no_ready_peer = true;
                    return false;
                };
                turn += 1;
                peer
            }
        };
        let (from, to, url, now) = (
            edge.config.edge_id.clone(),
            peer.edge_id.clone(),
            peer.url.clone(),
            edge.clock.now(),
        );
        let frozen = edge
            .writer
            .host(move |c| handoff::freeze(c, &from, &to, &url, CUSTOMERS_PER_HANDOFF, now))
            .await;
        let out = match frozen {
            Ok(Some(out)) => out,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!("drain: taking carts out of the books: {e}");
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
        };
        edge.fleet
            .note_moved(out.batch.carts.iter().map(|c| (c.cart_id.clone(), None)));
        match complete(edge, &out, deadline).await {
            Some(true) => {
                report.carts_handed_off += out.batch.carts.len();
                sticky = out.split.then_some(peer);
            }
            Some(false) => {
                refused.push(peer.edge_id);
                sticky = None;
            }
            None => return false,
        }
    }
    false
}

/// Finishes the hand-offs a drain left unfinished (its timeout came, or the process was killed):
/// a restart resumes them at once, whether or not it drains again. Whether any is left.
pub async fn resume_unfinished(edge: &Arc<Edge>) -> bool {
    let pending = edge.read(handoff::unfinished).await.unwrap_or_default();
    if pending.is_empty() {
        return false;
    }
    for out in pending {
        let deadline = Instant::now() + RESUME_FOR;
        if complete(edge, &out, deadline).await == Some(true) {
            tracing::info!(
                "hand-off {} to {} resumed and finished",
                out.batch.handoff_id,
                out.to_edge
            );
        }
    }
    true
}

/// How long a resumed hand-off is tried before the next round.
pub const RESUME_FOR: Duration = Duration::from_secs(2);

/// Takes one hand-off to its end: `Some(true)` done, `Some(false)` not recorded because the
/// receiver left the fleet meanwhile (the carts are back in the books), `None` not finished by
/// the deadline (resumed on restart). The steps, each safe to repeat: central applies this
/// edge's outbox up to the freeze (so that no older event of this edge about the carts can
/// land after the receiver's newer ones), central records the move, the receiver takes the
/// batch as recorded, the batch is marked done here.
async fn complete(edge: &Arc<Edge>, out: &Outgoing, deadline: Instant) -> Option<bool> {
    let id = &out.batch.handoff_id;
    let recorded = matches!(edge.central.handoff_recorded(id).await, Ok(true));
    if !recorded {
        until(deadline, || outbox_applied(edge, out.frozen_seq)).await?;
        let record =
            out.batch
                .for_central(&edge.identity.incarnation, &out.to_edge, out.frozen_seq);
        let receiver_left = until(deadline, || async {
            match edge.central.record_handoff(&record).await {
                Ok(()) => Ok(false),
                // Nothing moved at central: the carts stay here.
                Err(CentralError::UnknownEdge(gone)) if gone == out.to_edge => Ok(true),
                Err(e) => Err(format!("hand-off {id}: recording it at central: {e}")),
            }
        })
        .await?;
        if receiver_left {
            tracing::warn!(
                "hand-off {id}: {} left the fleet before central recorded it; the carts stay",
                out.to_edge
            );
            put_back(edge, out).await?;
            return Some(false);
        }
    }
    test_pause("before_push", id).await;
    until(deadline, || offer(edge, out)).await?;
    test_pause("after_push", id).await;
    until(deadline, || async {
        let done = id.clone();
        edge.writer
            .host(move |c| handoff::finish(c, &done))
            .await
            .map_err(|e| format!("hand-off {id}: marking it done: {e}"))
    })
    .await?;
    edge.fleet.note_moved(
        out.batch
            .carts
            .iter()
            .map(|c| (c.cart_id.clone(), Some(out.to_edge.clone()))),
    );
    Some(true)
}

/// A hand-off central did not record goes back into the books.
async fn put_back(edge: &Edge, out: &Outgoing) -> Option<()> {
    let aborted = out.clone();
    match edge.writer.host(move |c| handoff::abort(c, &aborted)).await {
        Ok(()) => {
            edge.fleet
                .note_kept(out.batch.carts.iter().map(|c| c.cart_id.clone()));
            Some(())
        }
        Err(e) => {
            tracing::error!(
                "hand-off {}: putting the carts back: {e}",
                out.batch.handoff_id
            );
            None
        }
    }
}

/// Repeats `step` until it succeeds (`Some`) or the deadline passes (`None`), saying why each
/// attempt failed.
async fn until<T, F, Fut>(deadline: Instant, mut step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match step().await {
            Ok(v) => return Some(v),
            // Waiting a moment is usual (the outbox on its way): said once a second.
            Err(why) if attempt.is_multiple_of(10) => tracing::warn!("{why}"),
            Err(why) => tracing::debug!("{why}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Whether central has applied this edge's outbox up to `seq`.
async fn outbox_applied(edge: &Edge, seq: i64) -> Result<(), String> {
    match edge.central.applied_up_to(&edge.config.edge_id).await {
        Ok(applied) if applied >= seq => Ok(()),
        Ok(applied) => Err(format!(
            "hand-off waits for central to apply the outbox up to {seq} (now {applied})"
        )),
        Err(e) => Err(format!(
            "hand-off: asking central how far the outbox is: {e}"
        )),
    }
}

/// Offers a recorded batch until the receiver has taken it.
async fn offer(edge: &Arc<Edge>, out: &Outgoing) -> Result<(), String> {
    let id = &out.batch.handoff_id;
    match push(edge, out).await {
        Ok(Pushed::Taken) => Ok(()),
        // Recorded at central, so the receiver's: it cannot be put back here. Said loudly, and
        // offered again until the drain's time is up (a restart resumes it).
        Ok(Pushed::Refused(why)) => {
            tracing::error!(
                "hand-off {id}: {} refused a recorded hand-off: {why}",
                out.to_edge
            );
            Err(format!("hand-off {id} refused by {}: {why}", out.to_edge))
        }
        Err(e) => {
            // It may be back on another address.
            let _ = edge.fleet.refresh().await;
            Err(format!("hand-off {id} to {}: {e:#}", out.to_edge))
        }
    }
}

/// What the receiver said of a batch.
enum Pushed {
    Taken,
    Refused(String),
}

/// For the crash tests, in a build with the `test-hooks` feature only:
/// `CART_TEST_HANDOFF_PAUSE=STEP:MS` stops every hand-off at `STEP` (`before_push`,
/// `after_push`) for `MS` milliseconds, so that a test can kill an edge there.
#[cfg(feature = "test-hooks")]
async fn test_pause(step: &str, handoff_id: &str) {
    let Ok(setting) = std::env::var("CART_TEST_HANDOFF_PAUSE") else {
        return;
    };
    let Some((at, ms)) = setting.split_once(':') else {
        return;
    };
    if at == step
        && let Ok(ms) = ms.parse::<u64>()
    {
        tracing::warn!("hand-off {handoff_id} paused {step} for {ms} ms (CART_TEST_HANDOFF_PAUSE)");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[cfg(not(feature = "test-hooks"))]
async fn test_pause(_step: &str, _handoff_id: &str) {}

/// Offers the batch to its receiver: taken (now or before), refused for good, or (`Err`) no
/// answer either way.
async fn push(edge: &Edge, out: &Outgoing) -> anyhow::Result<Pushed> {
    let body = Bytes::from(serde_json::to_vec(&out.batch)?);
    // The receiver may have restarted on another address since the batch was frozen.
    let at = match edge.fleet.peer_named(&out.to_edge).await {
        Ok(Some(peer)) => peer.url,
        _ => out.to_url.clone(),
    };
    let url = join(&at, HANDOFF_PATH);
    let [by, secret] = edge.fleet.peer_headers();
    let headers = [("content-type", "application/json"), by, secret];
    let answer = edge
        .fleet
        .client()
        .send(Method::POST, &url, &headers, body)
        .await?;
    match answer.status {
        StatusCode::OK => Ok(Pushed::Taken),
        StatusCode::CONFLICT => Ok(Pushed::Refused(
            String::from_utf8_lossy(&answer.body).into_owned(),
        )),
        status => anyhow::bail!("{status}: {}", String::from_utf8_lossy(&answer.body)),
    }
}

/// Peers of the fleet that answer `/readyz` with `200` now.
async fn ready_peers(edge: &Edge) -> Vec<Peer> {
    if let Err(e) = edge.fleet.refresh().await {
        tracing::warn!("drain: reading the registry: {e}");
    }
    let mut ready = Vec::new();
    for peer in edge.fleet.others() {
        let url = join(&peer.url, "/readyz");
        let answer = tokio::time::timeout(READY_TIMEOUT, edge.fleet.client().get(&url, None)).await;
        if matches!(answer, Ok(Ok(r)) if r.status == StatusCode::OK) {
            ready.push(peer);
        }
    }
    ready.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
    ready
}

/// Whether central knows of every hand-off this edge took that it has them; tells it of the
/// ones it does not.
async fn received_recorded(edge: &Edge) -> bool {
    let unrecorded = match edge.read(handoff::unrecorded).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("drain: reading the hand-offs taken: {e:#}");
            return false;
        }
    };
    for id in &unrecorded {
        tell_taken(edge, id).await;
    }
    edge.read(handoff::unrecorded)
        .await
        .is_ok_and(|left| left.is_empty())
}

/// Gives every free unit back to central; how many went.
async fn return_free_units(edge: &Edge, deadline: Instant) -> u32 {
    let stock = match edge.stock().await {
        Ok(stock) => stock,
        Err(e) => {
            tracing::warn!("drain: reading the stock: {e:#}");
            return 0;
        }
    };
    let mut returned = 0;
    for line in stock.into_iter().filter(|l| l.units.free > 0) {
        let key = SkuKey::new(&line.sale_id, &line.sku);
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, edge.allotments.give_back(&key, line.units.free)).await {
            Ok(Ok(n)) => returned += n,
            Ok(Err(e)) => tracing::warn!("drain: returning {key}: {e}"),
            Err(_) => {
                tracing::warn!("drain: the timeout came while units were being returned");
                break;
            }
        }
    }
    returned
}

/// Tells central of the returns that waited for the outbox, until it has taken them all or the
/// deadline; how many are left.
async fn returns_confirmed(edge: &Edge, deadline: Instant) -> usize {
    loop {
        let why = match edge.read(|c| db::pending_returns(c, i64::MAX)).await {
            Ok(pending) if pending.is_empty() => return 0,
            Ok(pending) => match edge.allotments.resume_returns(pending).await {
                Ok(()) => continue,
                Err(e) => e.to_string(),
            },
            Err(e) => format!("reading them: {e:#}"),
        };
        if Instant::now() >= deadline {
            let left = edge
                .read(|c| Ok(db::in_flight(c)?.1))
                .await
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
            tracing::warn!("drain: {left} return(s) unconfirmed at the deadline: {why}");
            return left;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Waits until central has the whole outbox, or the deadline; how many events are left.
async fn outbox_drained(edge: &Edge, deadline: Instant) -> i64 {
    loop {
        let left = edge.read(db::outbox_backlog).await.unwrap_or(i64::MAX);
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
