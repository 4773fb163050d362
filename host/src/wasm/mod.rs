//! The WebAssembly side of the host: one engine and linker, the loaded cart modules, and the
//! per-request store in which a guest runs under an epoch deadline and a memory cap.
//!
//! One submodule per imported WIT interface: [`store`], [`stock`], [`outbox`], [`clock`] and
//! [`catalog`], each a thin trait impl over plain functions elsewhere.

mod catalog;
mod clock;
mod outbox;
mod stock;
pub(crate) mod store;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{Cart, CartPre};
use crate::clock::Millis;
use crate::edge_db::GuestFence;
use crate::sale::Catalog;

/// Instances alive at once: the writer runs one at a time; deploys' smoke calls and compiles
/// need a few more.
const POOL_SLOTS: u32 = 16;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What one guest call may use.
#[derive(Clone, Copy, Debug)]
pub struct SandboxLimits {
    /// Wall time one guest call may run before it is interrupted.
    pub deadline: Duration,
    /// Linear memory one guest instance may grow to.
    pub memory_bytes: usize,
    /// Calls one instance may serve, all within one group commit, before a fresh one takes
    /// over. 1 (the default): a fresh instance per call, so no call can see another's memory.
    /// More trades that isolation for speed: instantiating and resetting memory is most of a
    /// call's cost. A fault always retires the instance.
    pub reuse: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory_bytes: 16 << 20,
            reuse: 1,
        }
    }
}

/// Why a module was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly component: {0:#}")]
    NotAComponent(anyhow::Error),
    #[error("the component does not implement the flashsale:cart world: {0:#}")]
    WrongWorld(anyhow::Error),
    #[error("the component failed the smoke call: {0}")]
    SmokeFailed(String),
}

/// A compiled, linked cart component, ready to instantiate once per request.
pub struct LoadedModule {
    pub version: String,
    pre: CartPre<HostState>,
}

/// The guest failed: trapped, ran past its deadline, or outgrew its memory.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuestFault(pub String);

/// Everything a guest instance reaches during one call.
pub struct HostState {
    pub conn: Connection,
    pub fence: GuestFence,
    pub now: Millis,
    pub catalog: Arc<Catalog>,
    limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// The `types` interface has no functions, only types.
impl crate::bindings::flashsale::cart::types::Host for HostState {}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The engine, the linker and the active module. Shared by the writer and the operator API.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: SandboxLimits,
    active: RwLock<Arc<LoadedModule>>,
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker; `initial` (bytes and version) becomes the
    /// active module.
    pub fn new(limits: SandboxLimits, initial: &[u8], version: &str) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // A fresh instance per request costs a fresh mmap and munmap of its memory, unless
        // instances come from a pool: slots are reused, memory is reset from its copy-on-write
        // image, and the first pages stay resident (zeroed in place, not faulted in again).
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 8)
            .total_memories(POOL_SLOTS * 2)
            .total_tables(POOL_SLOTS * 4)
            .max_memory_size(limits.memory_bytes)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        config.memory_init_cow(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Cart::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        spawn_epoch_ticker(&engine);
        let first = load(&engine, &linker, initial, version)?;
        Ok(Self {
            engine,
            linker,
            limits,
            active: RwLock::new(Arc::new(first)),
        })
    }

    /// Compiles and links a module without activating it. Compiling takes a while: call this
    /// off the async workers.
    pub fn load(&self, bytes: &[u8], version: &str) -> Result<LoadedModule, ModuleError> {
        load(&self.engine, &self.linker, bytes, version)
    }

    /// The module new requests run on.
    pub fn active(&self) -> Arc<LoadedModule> {
        Arc::clone(&self.active.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Switches new requests to `module`; calls already running finish on the old one.
    pub fn activate(&self, module: Arc<LoadedModule>) {
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = module;
    }

    /// Instantiates `module` on `conn`; the instance serves calls until it is retired, and
    /// gives the connection back then (or at once if it cannot start).
    pub fn instantiate(
        &self,
        module: &Arc<LoadedModule>,
        conn: Connection,
        fence: GuestFence,
        catalog: Arc<Catalog>,
    ) -> Result<Live, Box<(Connection, GuestFault)>> {
        let stderr = MemoryOutputPipe::new(4096);
        let state = HostState {
            conn,
            fence,
            now: 0,
            catalog,
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(deadline_ticks(self.limits.deadline));
        match module.pre.instantiate(&mut store) {
            Ok(cart) => Ok(Live {
                module: Arc::clone(module),
                store,
                cart,
                stderr,
                calls: 0,
                deadline: deadline_ticks(self.limits.deadline),
            }),
            Err(e) => {
                let fault = fault(&e, &stderr);
                Err(Box::new((store.into_data().conn, fault)))
            }
        }
    }

    /// Calls one instance may serve before it is retired (1: a fresh instance per call).
    pub fn reuse(&self) -> u32 {
        self.limits.reuse.max(1)
    }
}

/// A live instance of a module, holding the writer's connection while it lives.
pub struct Live {
    module: Arc<LoadedModule>,
    store: Store<HostState>,
    cart: Cart,
    stderr: MemoryOutputPipe,
    calls: u32,
    deadline: u64,
}

impl Live {
    /// Runs `f` on this instance at `now`, under a fresh epoch deadline. After a fault the
    /// instance must be retired: its state is whatever the trap left.
    pub fn call<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&Cart, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestFault> {
        self.calls += 1;
        self.store.data_mut().now = now;
        self.store.set_epoch_deadline(self.deadline);
        f(&self.cart, &mut self.store).map_err(|e| fault(&e, &self.stderr))
    }

    pub fn module(&self) -> &Arc<LoadedModule> {
        &self.module
    }

    pub fn calls(&self) -> u32 {
        self.calls
    }

    pub fn conn(&self) -> &Connection {
        &self.store.data().conn
    }

    /// Drops the instance, giving its connection back.
    pub fn retire(self) -> Connection {
        self.store.into_data().conn
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

fn load(
    engine: &Engine,
    linker: &Linker<HostState>,
    bytes: &[u8],
    version: &str,
) -> Result<LoadedModule, ModuleError> {
    let component =
        Component::new(engine, bytes).map_err(|e| ModuleError::NotAComponent(e.into()))?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(CartPre::new)
        .map_err(|e| ModuleError::WrongWorld(e.into()))?;
    Ok(LoadedModule {
        version: version.to_owned(),
        pre,
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
