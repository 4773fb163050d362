//! The single writer: one thread owns the edge's write connection and runs every mutation.
//!
//! It takes every job that is waiting, opens one transaction, runs each job in its own savepoint
//! (a failing job rolls back only itself), commits once (group commit), and only then answers
//! the jobs. Nothing is acknowledged before its commit is on disk.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::bindings::{CartError, CartView, CheckoutResult};
use crate::clock::Millis;
use crate::edge_db::GuestFence;
use crate::metrics::Metrics;
use crate::sale::Catalog;
use crate::wasm::{GuestFault, Live, LoadedModule, Runtime};

/// A cart operation for the guest.
#[derive(Clone, Debug)]
pub enum GuestCall {
    Create {
        cart_id: String,
        customer_id: String,
        token_hash: String,
    },
    Get {
        cart_id: String,
        token_hash: String,
    },
    SetQuantity {
        cart_id: String,
        token_hash: String,
        sku: String,
        quantity: u32,
    },
    Remove {
        cart_id: String,
        token_hash: String,
        sku: String,
    },
    Checkout {
        cart_id: String,
        token_hash: String,
        idempotency_key: String,
    },
    Sweep,
}

/// What the guest answered.
#[derive(Debug)]
pub enum GuestOutcome {
    Cart(Result<CartView, CartError>),
    Checkout(Result<CheckoutResult, CartError>),
    Swept(u32),
}

impl GuestOutcome {
    fn is_ok(&self) -> bool {
        match self {
            Self::Cart(r) => r.is_ok(),
            Self::Checkout(r) => r.is_ok(),
            Self::Swept(_) => true,
        }
    }
}

/// A committed guest call, with the module version it ran on.
#[derive(Debug)]
pub struct Answer {
    pub outcome: GuestOutcome,
    pub module_version: String,
}

/// Why a job got no committed answer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the cart component failed: {0}")]
    Guest(#[from] GuestFault),
    #[error("edge database: {0}")]
    Storage(String),
    #[error("the writer's queue is full")]
    Overloaded,
    #[error("the writer has stopped")]
    Stopped,
}

/// Sends a job's answer once its batch has committed (or failed to).
type Completion = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;
type Job = Box<dyn FnOnce(&mut WriterState) -> Completion + Send>;

/// The cloneable way in to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Job>,
}

/// The writer's queue and batch sizes, and what it runs.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Jobs waiting beyond this are refused (`503 overloaded`) rather than queued without bound.
    pub queue: usize,
    /// Most jobs in one transaction.
    pub batch: usize,
    /// Run the rules compiled into the host instead of the module: the benchmarks' baseline.
    pub native_baseline: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue: 8192,
            batch: 512,
            native_baseline: false,
        }
    }
}

/// What the writer thread owns.
pub struct WriterState {
    /// The write connection when no instance holds it.
    conn: Option<Connection>,
    /// The instance serving calls, holding the connection, when one is live.
    live: Option<Live>,
    /// Run the rules compiled into the host instead of the module (the benchmark baseline).
    native: bool,
    metrics: Arc<Metrics>,
    fence: GuestFence,
    runtime: Arc<Runtime>,
    catalog: Arc<Catalog>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`.
    pub fn spawn(
        conn: Connection,
        fence: GuestFence,
        runtime: Arc<Runtime>,
        catalog: Arc<Catalog>,
        limits: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(limits.queue);
        let state = WriterState {
            conn: Some(conn),
            live: None,
            native: limits.native_baseline,
            metrics: Arc::clone(&metrics),
            fence,
            runtime,
            catalog,
        };
        std::thread::Builder::new()
            .name("edge-writer".into())
            .spawn(move || run(state, rx, limits.batch, &metrics))?;
        Ok(Self { tx })
    }

    /// Runs a cart operation on the active module, at `now`, in the next batch.
    pub async fn guest(&self, call: GuestCall, now: Millis) -> Result<Answer, WriteError> {
        self.job(move |w| w.run_guest(call, now)).await
    }

    /// Runs host SQL in its own savepoint of the next batch; answers after the commit.
    pub async fn host<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, WriteError> {
        self.job(move |w| w.in_savepoint(|w| f(w.conn()).map_err(WriteError::from), |_| true))
            .await
    }

    /// Tries a module that is not active yet on real data, in a savepoint that is always rolled
    /// back; see [`crate::modules::smoke`] for what it checks.
    pub async fn smoke(
        &self,
        module: Arc<LoadedModule>,
        now: Millis,
    ) -> Result<Result<(), String>, WriteError> {
        self.job(move |w| w.smoke(&module, now)).await
    }

    /// Runs `f` on the writer thread in the next batch; answers once the batch has committed.
    async fn job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriterState) -> Result<R, WriteError> + Send + 'static,
    ) -> Result<R, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(move |w: &mut WriterState| {
            let result = f(w);
            Box::new(move |committed: Result<(), &rusqlite::Error>| {
                let sent = match committed {
                    Ok(()) => result,
                    Err(e) => Err(WriteError::Storage(e.to_string())),
                };
                // The request may have gone away; its update stands all the same.
                let _ = reply.send(sent);
            })
        }))?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    fn submit(&self, job: Job) -> Result<(), WriteError> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => WriteError::Overloaded,
            TrySendError::Disconnected(_) => WriteError::Stopped,
        })
    }
}

impl WriterState {
    /// The write connection: at home, or lent to the live instance.
    fn conn(&self) -> &Connection {
        match (&self.conn, &self.live) {
            (Some(conn), _) => conn,
            (None, Some(live)) => live.conn(),
            (None, None) => unreachable!("the connection is home or with the live instance"),
        }
    }

    /// Drops the live instance, if any, and brings the connection home.
    fn retire(&mut self) {
        if let Some(live) = self.live.take() {
            self.conn = Some(live.retire());
        }
    }

    /// Runs `f` inside `SAVEPOINT job`; keeps its writes if `keep` says so, else rolls them back.
    fn in_savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WriteError>,
        keep: impl FnOnce(&T) -> bool,
    ) -> Result<T, WriteError> {
        self.conn().prepare_cached("SAVEPOINT job")?.execute([])?;
        let result = f(self);
        let kept = matches!(&result, Ok(v) if keep(v));
        if !kept {
            self.conn().prepare_cached("ROLLBACK TO job")?.execute([])?;
        }
        self.conn().prepare_cached("RELEASE job")?.execute([])?;
        result
    }

    fn run_guest(&mut self, call: GuestCall, now: Millis) -> Result<Answer, WriteError> {
        let module = self.runtime.active();
        let outcome = self.in_savepoint(
            |w| Ok(w.call_on(&module, call, now)?),
            // A business error changes nothing, even if the guest wrote before deciding.
            GuestOutcome::is_ok,
        )?;
        let module_version = if self.native {
            crate::native::VERSION.to_owned()
        } else {
            module.version.clone()
        };
        Ok(Answer {
            outcome,
            module_version,
        })
    }

    /// Calls `module` on this transaction, as it stands.
    ///
    /// The live instance serves the call if it is of `module` and has calls left; otherwise a
    /// fresh one does. A fault retires the instance.
    fn call_on(
        &mut self,
        module: &Arc<LoadedModule>,
        call: GuestCall,
        now: Millis,
    ) -> Result<GuestOutcome, GuestFault> {
        let (fence, catalog) = (self.fence.clone(), Arc::clone(&self.catalog));
        if self.native {
            self.retire();
            let conn = self.conn.take().expect("the connection is home");
            let (conn, result) = crate::native::call(conn, fence, now, catalog, call);
            self.conn = Some(conn);
            return result;
        }
        let reuse = self.runtime.reuse();
        if self
            .live
            .as_ref()
            .is_some_and(|l| !Arc::ptr_eq(l.module(), module) || l.calls() >= reuse)
        {
            self.retire();
        }
        let live = match self.live.take() {
            Some(live) => live,
            None => {
                let conn = self.conn.take().expect("the connection is home");
                match self.runtime.instantiate(module, conn, fence, catalog) {
                    Ok(live) => live,
                    Err(refused) => {
                        let (conn, fault) = *refused;
                        self.conn = Some(conn);
                        return Err(fault);
                    }
                }
            }
        };
        let live = self.live.insert(live);
        let result = live.call(now, |cart, store| dispatch(cart, store, call));
        if result.is_err() {
            self.metrics.guest_faults.inc();
        }
        if result.is_err() || live.calls() >= reuse {
            self.retire();
        }
        result
    }

    fn smoke(
        &mut self,
        module: &Arc<LoadedModule>,
        now: Millis,
    ) -> Result<Result<(), String>, WriteError> {
        let catalog = Arc::clone(&self.catalog);
        self.in_savepoint(
            |w| {
                // One unit of the first SKU, for the candidate to hold and sell; rolled back.
                let sku = catalog.skus.keys().next().cloned().unwrap_or_default();
                w.conn()
                    .prepare_cached("UPDATE stock SET free = free + 1 WHERE sku = ?1")?
                    .execute([&sku])?;
                let mut call = |c: GuestCall| w.call_on(module, c, now);
                Ok(crate::modules::smoke(&mut call, &sku))
            },
            |_| false,
        )
    }
}

fn dispatch(
    cart: &crate::bindings::Cart,
    store: &mut wasmtime::Store<crate::wasm::HostState>,
    call: GuestCall,
) -> wasmtime::Result<GuestOutcome> {
    let api = cart.flashsale_cart_cart_api();
    Ok(match call {
        GuestCall::Create {
            cart_id,
            customer_id,
            token_hash,
        } => {
            GuestOutcome::Cart(api.call_create_cart(store, &cart_id, &customer_id, &token_hash)?)
        }
        GuestCall::Get {
            cart_id,
            token_hash,
        } => GuestOutcome::Cart(api.call_get_cart(store, &cart_id, &token_hash)?),
        GuestCall::SetQuantity {
            cart_id,
            token_hash,
            sku,
            quantity,
        } => GuestOutcome::Cart(api.call_set_quantity(
            store,
            &cart_id,
            &token_hash,
            &sku,
            quantity,
        )?),
        GuestCall::Remove {
            cart_id,
            token_hash,
            sku,
        } => GuestOutcome::Cart(api.call_remove_line(store, &cart_id, &token_hash, &sku)?),
        GuestCall::Checkout {
            cart_id,
            token_hash,
            idempotency_key,
        } => GuestOutcome::Checkout(api.call_checkout(
            store,
            &cart_id,
            &token_hash,
            &idempotency_key,
        )?),
        GuestCall::Sweep => {
            let now = store.data().now;
            GuestOutcome::Swept(api.call_sweep(store, now)?)
        }
    })
}

/// The writer thread's loop: batch, run, commit, answer; until every handle is dropped.
fn run(mut state: WriterState, rx: Receiver<Job>, max_batch: usize, metrics: &Metrics) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut completions: Vec<Completion> = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics.writer_batch.observe(batch.len() as f64);
        let begun = state.conn().execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = begun {
            tracing::error!("cannot begin a transaction: {e}");
            for job in batch.drain(..) {
                drop(job);
            }
            continue;
        }
        for job in batch.drain(..) {
            completions.push(job(&mut state));
        }
        // No instance outlives its batch, however many calls it had left.
        state.retire();
        let committed = state.conn().execute_batch("COMMIT");
        if let Err(e) = &committed {
            tracing::error!("commit failed, the batch is lost: {e}");
            let _ = state.conn().execute_batch("ROLLBACK");
        }
        for done in completions.drain(..) {
            done(committed.as_ref().map(|_| ()));
        }
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
