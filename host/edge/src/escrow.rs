//! The edge's side of escrow: asking central for units, before the shelf runs empty and when a
//! shopper finds it empty, with grant ids stored before asking so a retry never leaks units;
//! and how each SKU's free units are kept near its demand (the loop is [`crate::tasks`]'s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cart_central::sale::SkuEntry;
use cart_central::{Central, CentralError, GrantRequest, Known, SkuKey, UnitReturn};

use crate::clock::{Clock, Millis};
use crate::locks;
use crate::metrics::Metrics;
use crate::store::db::{self, StockRow};
use crate::store::writer::{WriteError, WriterHandle};

/// After central answered 0 for a SKU, how long before asking again.
const EXHAUSTED_BACKOFF_MS: Millis = 500;
/// Demand is counted over windows of this length.
const DEMAND_WINDOW_MS: Millis = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    Central(#[from] CentralError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Per-SKU bookkeeping for grants.
#[derive(Default)]
struct SkuState {
    /// One grant request in flight per SKU; waiters reuse its result.
    lock: tokio::sync::Mutex<()>,
    /// Bumped whenever units arrive, so a waiter can tell it need not ask again.
    generation: AtomicU64,
    /// When central last had nothing left for us.
    exhausted_at: Mutex<Option<Millis>>,
    /// Units shoppers asked for: (window start, units this window, units last window).
    demand: Mutex<(Millis, u64, u64)>,
    /// Whether this edge has had its first grant of the SKU since it started.
    stocked: AtomicBool,
}

pub struct Allotments {
    edge_id: String,
    /// This process, as central fences it.
    incarnation: String,
    central: Arc<Central>,
    writer: WriterHandle,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Every SKU this edge has been asked about, added as sales appear.
    skus: Mutex<HashMap<SkuKey, Arc<SkuState>>>,
    /// What central last said is left to sell of each SKU across the fleet (empty while
    /// central does not answer).
    left_in_sales: Mutex<HashMap<SkuKey, u32>>,
    /// Until when returns central called early are not asked again (see
    /// [`Self::returns_paused`]).
    early_until: Mutex<Millis>,
}

/// How long returns central called early wait before they are asked again: through a queue,
/// central applies the outbox a while after the edge delivered it, and each ask takes central's
/// lock on the edge's row, which the relay's apply of its events needs too.
const EARLY_RETURN_PAUSE_MS: Millis = 1_000;

/// What a shopper's request should do after finding too few units.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterShortage {
    /// More units arrived: try again.
    Retry,
    /// None to be had now: the shopper is told `sold_out`.
    SoldOut,
}

impl Allotments {
    pub fn new(
        edge_id: String,
        incarnation: String,
        central: Arc<Central>,
        writer: WriterHandle,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            edge_id,
            incarnation,
            central,
            writer,
            clock,
            metrics,
            skus: Mutex::default(),
            left_in_sales: Mutex::default(),
            early_until: Mutex::default(),
        }
    }

    /// Asks central what is left to sell of each SKU, fleet-wide; forgets it when central does
    /// not answer, rather than show a stale count.
    pub async fn count_left_in_sales(&self) -> Result<(), CentralError> {
        let counted = self.central.left_in_sales().await;
        let mut left = locks::lock(&self.left_in_sales);
        left.clear();
        for (key, units) in counted? {
            left.insert(key, u32::try_from(units.max(0)).unwrap_or(u32::MAX));
        }
        Ok(())
    }

    /// What central last said is left to sell of each SKU, fleet-wide.
    pub fn left_in_sales(&self) -> HashMap<SkuKey, u32> {
        locks::lock(&self.left_in_sales).clone()
    }

    /// The bookkeeping of a SKU, made on first use.
    fn state(&self, key: &SkuKey) -> Arc<SkuState> {
        let mut skus = locks::lock(&self.skus);
        Arc::clone(skus.entry(key.clone()).or_default())
    }

    /// The grant generation of a SKU; read before a request, passed to [`Self::after_shortage`].
    pub fn generation(&self, key: &SkuKey) -> u64 {
        self.state(key).generation.load(Ordering::Acquire)
    }

    /// Counts units a shopper asked for, to size top-ups to demand.
    pub fn note_demand(&self, key: &SkuKey, units: u32) {
        if units == 0 {
            return;
        }
        let state = self.state(key);
        let now = self.clock.now();
        let mut d = locks::lock(&state.demand);
        if now - d.0 >= DEMAND_WINDOW_MS {
            *d = (
                now,
                0,
                if now - d.0 < 2 * DEMAND_WINDOW_MS {
                    d.1
                } else {
                    0
                },
            );
        }
        d.1 += u64::from(units);
    }

    /// Units asked for in about the last second: none once two windows have passed without a
    /// shopper asking (the windows move only when one does).
    pub fn recent_demand(&self, key: &SkuKey) -> u32 {
        let state = self.state(key);
        let d = locks::lock(&state.demand);
        let age = self.clock.now() - d.0;
        let units = if age >= 2 * DEMAND_WINDOW_MS {
            0
        } else if age >= DEMAND_WINDOW_MS {
            d.1
        } else {
            d.1.max(d.2)
        };
        u32::try_from(units).unwrap_or(u32::MAX)
    }

    /// A shopper found too few units of a SKU: get more from central unless someone just did.
    ///
    /// The work runs in its own task, so a shopper who stops waiting never leaves a grant
    /// half-done: it finishes, and the units arrive for the next shopper.
    pub async fn after_shortage(
        self: &Arc<Self>,
        key: &SkuKey,
        wanted: u32,
        seen_generation: u64,
    ) -> Result<AfterShortage, GrantError> {
        let (this, key) = (Arc::clone(self), key.clone());
        tokio::spawn(async move { this.refill(&key, wanted, seen_generation).await })
            .await
            .unwrap_or(Ok(AfterShortage::SoldOut))
    }

    async fn refill(
        &self,
        key: &SkuKey,
        wanted: u32,
        seen_generation: u64,
    ) -> Result<AfterShortage, GrantError> {
        let state = self.state(key);
        let _one_at_a_time = state.lock.lock().await;
        if state.generation.load(Ordering::Acquire) != seen_generation {
            return Ok(AfterShortage::Retry);
        }
        if self.recently_exhausted(&state) {
            return Ok(AfterShortage::SoldOut);
        }
        let want = wanted.max(self.recent_demand(key)).max(1);
        Ok(if self.request(key, &state, want).await? > 0 {
            AfterShortage::Retry
        } else {
            AfterShortage::SoldOut
        })
    }

    /// Keeps one SKU's free units near its demand: a first grant (ahead of the sale's start,
    /// so its first shoppers are served here), top-ups when free units fall below about a
    /// second of demand, and units given back when this edge is not selling them, when another
    /// edge is out (`wanted`) and central has none left, and all of them once the sale ends.
    pub async fn balance(
        &self,
        entry: &SkuEntry,
        row: StockRow,
        wanted: bool,
        returning: bool,
        now: Millis,
    ) -> Result<(), GrantError> {
        let key = SkuKey::new(&entry.sale_id, &entry.sku);
        if now >= entry.ends_at {
            if row.free > 0 {
                self.give_back(&key, row.free).await?;
            }
            return Ok(());
        }
        let state = self.state(&key);
        let demand = self.recent_demand(&key);
        let reserve = initial_grant(entry.stock_total);
        if !state.stocked.load(Ordering::Acquire) && row.free + row.held + row.sold == 0 {
            if self.top_up(&key, reserve).await? > 0 {
                state.stocked.store(true, Ordering::Release);
            }
        } else if row.free < demand {
            self.top_up(&key, demand.saturating_mul(2)).await?;
        } else if returning {
            // A return of the SKU waits for central to apply the outbox (through a queue,
            // central may lag far behind): units given back now would wait with it, sold
            // nowhere. They stay here, where shoppers can buy them, until it is taken.
        } else if wanted && row.free > demand {
            // Another edge's shoppers are refused while these units sit here.
            self.give_back(&key, row.free - demand).await?;
        } else if demand == 0 && row.free > reserve {
            self.give_back(&key, row.free - reserve).await?;
        }
        state
            .stocked
            .fetch_or(row.free + row.held + row.sold > 0, Ordering::AcqRel);
        Ok(())
    }

    /// Asks for `want` units of a SKU unless a request is already in flight or central is dry.
    pub async fn top_up(&self, key: &SkuKey, want: u32) -> Result<u32, GrantError> {
        if want == 0 {
            return Ok(0);
        }
        let state = self.state(key);
        let Ok(_one_at_a_time) = state.lock.try_lock() else {
            return Ok(0);
        };
        if self.recently_exhausted(&state) {
            return Ok(0);
        }
        self.request(key, &state, want).await
    }

    /// Finishes grant requests a crash or an outage left unanswered (`pending`, as read from
    /// the edge's database), with their own ids.
    pub async fn resume(&self, pending: Vec<db::PendingGrant>) -> Result<(), GrantError> {
        if pending.is_empty() {
            return Ok(());
        }
        let known = self.known().await?;
        for db::PendingGrant {
            grant_id,
            sale_id,
            sku,
            requested,
        } in pending
        {
            let req = GrantRequest {
                grant_id,
                edge_id: self.edge_id.clone(),
                incarnation: self.incarnation.clone(),
                sale_id,
                sku,
                requested,
                again: false,
                known: known.clone(),
            };
            self.finish(&req).await?;
        }
        Ok(())
    }

    /// Gives up to `quantity` free units of a SKU back to central; returns how many left the
    /// free count. Central is told at once when it has every outbox event written before the
    /// return; otherwise the outbox's delivery tells it, once it has (see [`db::RecordedReturn`]).
    pub async fn give_back(&self, key: &SkuKey, quantity: u32) -> Result<u32, GrantError> {
        let mut ret = UnitReturn {
            return_id: crate::ids::new_id("r"),
            edge_id: self.edge_id.clone(),
            incarnation: self.incarnation.clone(),
            sale_id: key.sale_id.clone(),
            sku: key.sku.clone(),
            quantity,
            after_seq: 0,
        };
        let (id, sale_id, s, now) = (
            ret.return_id.clone(),
            ret.sale_id.clone(),
            ret.sku.clone(),
            self.clock.now(),
        );
        let recorded = self
            .writer
            .host(move |conn| db::record_return(conn, &id, &sale_id, &s, quantity, now))
            .await?;
        (ret.quantity, ret.after_seq) = (recorded.quantity, recorded.after_seq);
        if recorded.quantity > 0 && recorded.delivered {
            match self.confirm(&ret).await {
                // Through a queue, central applies what was delivered some time later.
                Ok(()) | Err(GrantError::Central(CentralError::ReturnEarly { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(recorded.quantity)
    }

    /// Whether central called a return early a moment ago: the delivery loop, which would ask
    /// on every pass, waits.
    pub fn returns_paused(&self) -> bool {
        self.clock.now() < *locks::lock(&self.early_until)
    }

    /// Finishes returns a crash or an outage left unconfirmed, and those that waited for the
    /// outbox.
    pub async fn resume_returns(&self, pending: Vec<db::PendingReturn>) -> Result<(), GrantError> {
        for db::PendingReturn {
            return_id,
            sale_id,
            sku,
            quantity,
            after_seq,
        } in pending
        {
            let ret = UnitReturn {
                return_id,
                edge_id: self.edge_id.clone(),
                incarnation: self.incarnation.clone(),
                sale_id,
                sku,
                quantity,
                after_seq,
            };
            let confirmed = self.confirm(&ret).await;
            if let Err(GrantError::Central(CentralError::ReturnEarly { .. })) = &confirmed {
                *locks::lock(&self.early_until) = self.clock.now() + EARLY_RETURN_PAUSE_MS;
            }
            confirmed?;
        }
        Ok(())
    }

    async fn confirm(&self, ret: &UnitReturn) -> Result<(), GrantError> {
        self.central.return_units(ret).await?;
        let (id, now) = (ret.return_id.clone(), self.clock.now());
        self.writer
            .host(move |conn| db::confirm_return(conn, &id, now))
            .await?;
        Ok(())
    }

    fn recently_exhausted(&self, state: &SkuState) -> bool {
        let at = *locks::lock(&state.exhausted_at);
        at.is_some_and(|t| self.clock.now() - t < EXHAUSTED_BACKOFF_MS)
    }

    async fn request(&self, key: &SkuKey, state: &SkuState, want: u32) -> Result<u32, GrantError> {
        let mut req = GrantRequest {
            grant_id: crate::ids::new_id("g"),
            edge_id: self.edge_id.clone(),
            incarnation: self.incarnation.clone(),
            sale_id: key.sale_id.clone(),
            sku: key.sku.clone(),
            requested: want,
            again: false,
            known: Known::default(),
        };
        let (id, sale_id, s, now) = (
            req.grant_id.clone(),
            req.sale_id.clone(),
            req.sku.clone(),
            self.clock.now(),
        );
        req.known.newest_grant = self
            .writer
            .host(move |conn| {
                db::record_grant_request(conn, &id, &sale_id, &s, want, now)?;
                db::newest_grant(conn)
            })
            .await?;
        let granted = self.finish(&req).await;
        // None now: asking again at once would only ask again.
        let none = matches!(
            granted,
            Ok(0) | Err(GrantError::Central(CentralError::Reconciling { .. }))
        );
        *locks::lock(&state.exhausted_at) = none.then(|| self.clock.now());
        granted
    }

    /// What central should have of this edge's grants, read before asking.
    async fn known(&self) -> Result<Known, GrantError> {
        Ok(Known {
            delivered: None,
            newest_grant: self.writer.host(db::newest_grant).await?,
        })
    }

    /// Asks central for a recorded grant and adds the answer to the free units.
    async fn finish(&self, req: &GrantRequest) -> Result<u32, GrantError> {
        let granted = match self.central.grant(req).await {
            Err(e @ CentralError::Reconciling { .. }) => {
                // Central recorded nothing: the request goes, or it would be granted later,
                // when no shopper is waiting for it.
                let id = req.grant_id.clone();
                self.writer
                    .host(move |conn| db::forget_grant_request(conn, &id))
                    .await?;
                return Err(e.into());
            }
            answer => answer?,
        };
        let (id, now) = (req.grant_id.clone(), self.clock.now());
        let applied = self
            .writer
            .host(move |conn| db::apply_grant(conn, &id, granted, now))
            .await?;
        if applied && granted > 0 {
            self.metrics.grants_received.inc_by(u64::from(granted));
            self.state(&SkuKey::new(&req.sale_id, &req.sku))
                .generation
                .fetch_add(1, Ordering::AcqRel);
        }
        Ok(granted)
    }
}

/// An edge's first grant of a SKU: a tenth of the stock, at least one unit (none of none).
fn initial_grant(stock_total: u32) -> u32 {
    (stock_total / 10).max(1).min(stock_total)
}
