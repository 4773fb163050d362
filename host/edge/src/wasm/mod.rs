//! The WebAssembly side of the host: one engine and linker, compiled cart modules, and the
//! fresh instance in which each rules call runs under an epoch deadline and a memory cap.
//!
//! Each call has an instance of its own, used once. With [`SandboxLimits::instances_ahead`], the
//! serving module's instances are made ahead on a thread of its own ([`ahead`]) and spent ones
//! are reset on another, so that the writer, which runs every call, pays for the call alone.
//!
//! - [`convert`]: the rules' types to the WIT's and back.
//! - [`ahead`]: instances made ahead of their calls, and spent ones reset off the writer.

mod ahead;
mod convert;

use std::sync::Arc;
use std::time::Duration;

use cart_rules::{CartError, CheckoutOutcome, CheckoutRequest, Line, SetRequest};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{Cart, CartPre};
use crate::rules::{CartRules, GuestFault};

/// Instances of calls running at once: on the writer and in deploys' smoke checks.
const CALL_SLOTS: u32 = 16;

/// Instances alive at once: the calls', and with instances made ahead, those made for the
/// serving module (and for the one it replaces, until it lets go) and spent ones waiting to be
/// reset.
fn pool_slots(limits: &SandboxLimits) -> u32 {
    if limits.instances_ahead == 0 {
        return CALL_SLOTS;
    }
    let ahead = limits.instances_ahead.min(ahead::MOST_READY) as u32;
    CALL_SLOTS + 2 * ahead + ahead::SPENT as u32
}

/// How often the engine's epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What one guest call may use, and how its instances are made.
#[derive(Clone, Copy, Debug)]
pub struct SandboxLimits {
    /// Wall time one guest call may run before it is interrupted.
    pub deadline: Duration,
    /// Linear memory one guest instance may grow to.
    pub memory_bytes: usize,
    /// Instances of the serving module made ahead of their calls, on a thread of their own (at
    /// most [`ahead::MOST_READY`]); 0: each call makes its own, and resets it after.
    pub instances_ahead: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory_bytes: 16 << 20,
            instances_ahead: 0,
        }
    }
}

/// Why a module was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly component: {0:#}")]
    NotAComponent(anyhow::Error),
    #[error("the component does not implement the flashsale:cart@0.2.0 world: {0:#}")]
    WrongWorld(anyhow::Error),
    #[error("the component failed the smoke check: {0}")]
    SmokeFailed(String),
}

/// Everything a guest instance reaches: the WASI context Rust's standard library links against
/// (no files, no network, no environment; stderr kept for fault messages), and its limits.
pub struct HostState {
    limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// How the instances of rules calls were made, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct InstanceCounters {
    /// Made ahead of the call, off the writer.
    pub ahead: Counter,
    /// Made by the call itself, none being ready.
    pub by_call: Counter,
}

/// The engine and linker every module is compiled and linked with.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    limits: SandboxLimits,
    reaper: ahead::Reaper,
    counters: InstanceCounters,
}

impl Runtime {
    /// Builds the engine (pooled instances, copy-on-write memory images) and starts its epoch
    /// ticker.
    pub fn new(limits: SandboxLimits) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // A fresh instance per call costs a fresh mmap and munmap of its memory, unless
        // instances come from a pool: slots are reused, memory is reset from its copy-on-write
        // image, and the first pages stay resident (zeroed in place, not faulted in again).
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let slots = pool_slots(&limits);
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .max_memory_size(limits.memory_bytes)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            // Reset only the pages an instance dirtied (Linux 6.7+), not all it keeps resident.
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        config.memory_init_cow(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
            reaper: ahead::Reaper::spawn(limits.instances_ahead > 0),
            counters: InstanceCounters::default(),
        })
    }

    /// How the instances of every module's calls were made.
    pub fn counters(&self) -> &InstanceCounters {
        &self.counters
    }

    /// Compiles and links a module. Compiling takes a while: call this off the async workers.
    pub fn load(&self, bytes: &[u8], version: &str) -> Result<LoadedModule, ModuleError> {
        // Said plainly: the parser's own message for this dumps both headers as byte arrays.
        if !bytes.starts_with(b"\0asm") {
            let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(ModuleError::NotAComponent(anyhow::anyhow!(
                "WebAssembly starts with 00 61 73 6d (\\0asm); these {} bytes start with {}",
                bytes.len(),
                if head.is_empty() {
                    "nothing".to_owned()
                } else {
                    head.join(" ")
                }
            )));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ModuleError::NotAComponent(e.into()))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(CartPre::new)
            .map_err(|e| ModuleError::WrongWorld(e.into()))?;
        Ok(LoadedModule {
            version: version.to_owned(),
            pre,
            limits: self.limits,
            ahead: ahead::Ahead::default(),
            reaper: self.reaper.clone(),
            counters: self.counters.clone(),
        })
    }
}

/// A compiled, linked cart component: the rules, run in a fresh instance per call.
pub struct LoadedModule {
    version: String,
    pre: CartPre<HostState>,
    limits: SandboxLimits,
    /// Instances made ahead while this module serves.
    ahead: ahead::Ahead,
    /// Where spent instances go to be reset.
    reaper: ahead::Reaper,
    counters: InstanceCounters,
}

/// A fresh instance of a module, and what its guest says on stderr.
struct Fresh {
    store: Store<HostState>,
    cart: Cart,
    stderr: MemoryOutputPipe,
}

impl Fresh {
    /// A new instance of `pre`, instantiated under `limits` (its start runs under the deadline).
    fn new(pre: &CartPre<HostState>, limits: SandboxLimits) -> Result<Self, GuestFault> {
        let stderr = MemoryOutputPipe::new(4096);
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let cart = pre
            .instantiate(&mut store)
            .map_err(|e| fault(&e, &stderr))?;
        Ok(Self {
            store,
            cart,
            stderr,
        })
    }
}

impl LoadedModule {
    /// Runs `f` in a fresh instance (one made ahead if there is one), under the deadline and
    /// the memory cap; the instance is reset off this thread afterwards.
    fn call<R>(
        &self,
        f: impl FnOnce(&Cart, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestFault> {
        let mut fresh = match self.ahead.take() {
            Some(fresh) => {
                self.counters.ahead.inc();
                fresh
            }
            None => {
                self.counters.by_call.inc();
                Fresh::new(&self.pre, self.limits)?
            }
        };
        // The deadline counts from the call, not from when the instance was made.
        fresh
            .store
            .set_epoch_deadline(deadline_ticks(self.limits.deadline));
        let result = f(&fresh.cart, &mut fresh.store).map_err(|e| fault(&e, &fresh.stderr));
        self.reaper.reset(fresh);
        result
    }
}

impl CartRules for LoadedModule {
    fn version(&self) -> &str {
        &self.version
    }

    fn set_serving(&self, serving: bool) {
        if serving && self.limits.instances_ahead > 0 {
            self.ahead.start(&self.pre, self.limits);
        } else if !serving {
            self.ahead.stop();
        }
    }

    fn set_quantity(
        &self,
        req: &SetRequest<'_>,
    ) -> Result<Result<Option<Line>, CartError>, GuestFault> {
        let req = convert::set_request(req);
        let decided =
            self.call(|cart, store| cart.flashsale_cart_rules().call_set_quantity(store, &req))?;
        Ok(decided
            .map(|line| line.map(convert::line))
            .map_err(convert::error))
    }

    fn checkout(
        &self,
        req: &CheckoutRequest<'_>,
    ) -> Result<Result<CheckoutOutcome, CartError>, GuestFault> {
        let req = convert::checkout_request(req);
        let decided =
            self.call(|cart, store| cart.flashsale_cart_rules().call_checkout(store, &req))?;
        Ok(decided.map(convert::outcome).map_err(convert::error))
    }
}

/// A trap as a fault, with what the guest said on stderr before it.
fn fault(e: &wasmtime::Error, stderr: &MemoryOutputPipe) -> GuestFault {
    let said = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_owned();
    GuestFault(if said.is_empty() {
        format!("{e:#}")
    } else {
        format!("{e:#}: {said}")
    })
}

/// The module's SHA-256, hex: what operators compare against what they built.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

/// Advances the engine's epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!("no epoch ticker, guests run unbounded: {e}"));
}
