//! Deploying cart components to a running edge: signatures, validation (a component, the right
//! world, a smoke call on real data that is rolled back), storage by version with its sha256,
//! atomic activation, and rollback to any stored version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::bindings::{CartError, CartStatus};
use crate::clock::{Clock, Millis, rfc3339};
use crate::edge_db;
use crate::sale::Catalog;
use crate::wasm::{GuestFault, LoadedModule, ModuleError, Runtime, sha256_hex};
use crate::writer::{GuestCall, GuestOutcome, WriteError, WriterHandle};

/// The largest module an edge takes.
pub const MAX_MODULE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("this edge accepts only signed modules: send X-Module-Signature")]
    Unsigned,
    #[error("the module's signature does not verify against any trusted key")]
    BadSignature,
    #[error(transparent)]
    Invalid(#[from] ModuleError),
    #[error("bad module version {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadVersion(String),
    #[error("version {0} is already taken by a module with sha256 {1}")]
    VersionTaken(String, String),
    #[error("no module with version {0}")]
    UnknownVersion(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("compiling the module: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One stored module, as the operator API lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleInfo {
    pub version: String,
    pub sha256: String,
    pub deployed_at: String,
}

/// Reads an ed25519 public key in SPKI PEM (as `openssl pkey -pubout` writes it).
pub fn read_public_key(pem: &str) -> anyhow::Result<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| anyhow::anyhow!("not an ed25519 public key in SPKI PEM: {e}"))
}

/// The modules of one edge.
pub struct Modules {
    runtime: Arc<Runtime>,
    writer: WriterHandle,
    catalog: Arc<Catalog>,
    clock: Clock,
    trusted: Vec<VerifyingKey>,
    /// Compiled modules by version, so a rollback does not compile again.
    compiled: Mutex<HashMap<String, Arc<LoadedModule>>>,
}

impl Modules {
    pub fn new(
        runtime: Arc<Runtime>,
        writer: WriterHandle,
        catalog: Arc<Catalog>,
        clock: Clock,
        trusted: Vec<VerifyingKey>,
    ) -> Self {
        let active = runtime.active();
        let compiled = HashMap::from([(active.version.clone(), active)]);
        Self {
            runtime,
            writer,
            catalog,
            clock,
            trusted,
            compiled: Mutex::new(compiled),
        }
    }

    /// Validates, stores and activates a module. Nothing changes unless every check passes.
    pub async fn deploy(
        &self,
        bytes: Vec<u8>,
        version: Option<String>,
        signature: Option<&str>,
    ) -> Result<ModuleInfo, DeployError> {
        self.verify(&bytes, signature)?;
        let sha256 = sha256_hex(&bytes);
        let version = version.unwrap_or_else(|| default_version(&sha256));
        if !is_version(&version) {
            return Err(DeployError::BadVersion(version));
        }
        let v = version.clone();
        if let Some(stored) = self.writer.host(move |c| stored_sha(c, &v)).await? {
            if stored != sha256 {
                return Err(DeployError::VersionTaken(version, stored));
            }
            // The same module again: deploying it is activating it.
            return self.activate(&version).await;
        }
        let runtime = Arc::clone(&self.runtime);
        let v = version.clone();
        let bytes = Arc::new(bytes);
        let to_compile = Arc::clone(&bytes);
        let module =
            Arc::new(tokio::task::spawn_blocking(move || runtime.load(&to_compile, &v)).await??);
        self.writer
            .smoke(Arc::clone(&module), self.smoke_time())
            .await?
            .map_err(ModuleError::SmokeFailed)?;
        let (v, now) = (version.clone(), self.clock.now());
        let info = self
            .writer
            .host(move |c| {
                store(c, &v, &bytes, now)?;
                edge_db::set_meta(c, "active_module", &v)?;
                Ok(ModuleInfo {
                    version: v,
                    sha256,
                    deployed_at: rfc3339(now),
                })
            })
            .await?;
        self.remember(Arc::clone(&module));
        self.runtime.activate(module);
        tracing::info!(version = %info.version, sha256 = %info.sha256, "module deployed");
        Ok(info)
    }

    /// Makes a stored version the active one (rollback or roll forward).
    pub async fn activate(&self, version: &str) -> Result<ModuleInfo, DeployError> {
        let v = version.to_owned();
        let (bytes, info) = self
            .writer
            .host(move |c| load_stored(c, &v))
            .await?
            .ok_or_else(|| DeployError::UnknownVersion(version.to_owned()))?;
        let cached = self.cached(version);
        let module = match cached {
            Some(m) => m,
            None => {
                let (runtime, v) = (Arc::clone(&self.runtime), version.to_owned());
                let m =
                    Arc::new(tokio::task::spawn_blocking(move || runtime.load(&bytes, &v)).await??);
                self.remember(Arc::clone(&m));
                m
            }
        };
        let v = version.to_owned();
        self.writer
            .host(move |c| edge_db::set_meta(c, "active_module", &v))
            .await?;
        self.runtime.activate(module);
        tracing::info!(version, "module activated");
        Ok(info)
    }

    /// The active version and every stored module, oldest first.
    pub async fn list(&self) -> Result<(String, Vec<ModuleInfo>), DeployError> {
        let modules = self.writer.host(list_stored).await?;
        Ok((self.runtime.active().version.clone(), modules))
    }

    fn verify(&self, bytes: &[u8], signature: Option<&str>) -> Result<(), DeployError> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        let signature = signature.ok_or(DeployError::Unsigned)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| DeployError::BadSignature)?;
        let signature = Signature::from_slice(&raw).map_err(|_| DeployError::BadSignature)?;
        if self
            .trusted
            .iter()
            .any(|k| k.verify(bytes, &signature).is_ok())
        {
            Ok(())
        } else {
            Err(DeployError::BadSignature)
        }
    }

    /// The smoke call runs as if the sale had started, whenever the operator deploys.
    fn smoke_time(&self) -> Millis {
        let start = self
            .catalog
            .skus
            .values()
            .map(|s| s.sale_starts_at)
            .max()
            .unwrap_or(0);
        self.clock.now().max(start)
    }

    fn cached(&self, version: &str) -> Option<Arc<LoadedModule>> {
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(version)
            .cloned()
    }

    fn remember(&self, module: Arc<LoadedModule>) {
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(module.version.clone(), module);
    }
}

/// A module's version unless the operator names one: its sha256's first twelve hex digits.
pub fn default_version(sha256: &str) -> String {
    sha256[..12.min(sha256.len())].to_owned()
}

fn is_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a new module must get right before it may serve: a cart's life from creation to a
/// replayed checkout, and a sweep, on this edge's real data (the caller rolls it all back).
pub fn smoke(
    call: &mut dyn FnMut(GuestCall) -> Result<GuestOutcome, GuestFault>,
    sku: &str,
) -> Result<(), String> {
    let cart_id = crate::ids::new_id("c");
    let token_hash = crate::ids::token_hash("smoke");
    let mut cart = |c: GuestCall, what: &str| match call(c) {
        Ok(GuestOutcome::Cart(Ok(cart))) => Ok(cart),
        Ok(other) => Err(format!("{what} answered {other:?}")),
        Err(fault) => Err(format!("{what} failed: {fault}")),
    };
    let created = cart(
        GuestCall::Create {
            cart_id: cart_id.clone(),
            customer_id: "smoke-test".into(),
            token_hash: token_hash.clone(),
        },
        "create-cart",
    )?;
    if created.cart_id != cart_id || created.status != CartStatus::Open || !created.lines.is_empty()
    {
        return Err(format!("create-cart made {created:?}"));
    }
    let held = cart(
        GuestCall::SetQuantity {
            cart_id: cart_id.clone(),
            token_hash: token_hash.clone(),
            sku: sku.into(),
            quantity: 1,
        },
        "set-quantity",
    )?;
    if held.lines.len() != 1 || held.lines[0].quantity != 1 || held.lines[0].sku != sku {
        return Err(format!("set-quantity of one {sku} made {held:?}"));
    }
    match call(GuestCall::Get {
        cart_id: cart_id.clone(),
        token_hash: "wrong".into(),
    }) {
        Ok(GuestOutcome::Cart(Err(CartError::Unauthorized))) => {}
        other => return Err(format!("get-cart with a wrong token answered {other:?}")),
    }
    let checkout = |call: &mut dyn FnMut(GuestCall) -> Result<GuestOutcome, GuestFault>| match call(
        GuestCall::Checkout {
            cart_id: cart_id.clone(),
            token_hash: token_hash.clone(),
            idempotency_key: "smoke".into(),
        },
    ) {
        Ok(GuestOutcome::Checkout(Ok(done))) => Ok(done),
        other => Err(format!("checkout answered {other:?}")),
    };
    let first = checkout(call)?;
    let replay = checkout(call)?;
    if first.replayed || !replay.replayed || first.order != replay.order {
        return Err("checkout is not idempotent by its key".into());
    }
    match call(GuestCall::Sweep) {
        Ok(GuestOutcome::Swept(_)) => Ok(()),
        other => Err(format!("sweep answered {other:?}")),
    }
}

fn stored_sha(conn: &Connection, version: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT sha256 FROM modules WHERE version = ?1")?
        .query_row([version], |r| r.get(0))
        .optional()
}

fn store(conn: &Connection, version: &str, bytes: &[u8], now: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO modules (version, sha256, bytes, deployed_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![version, sha256_hex(bytes), bytes, now])?;
    Ok(())
}

fn load_stored(
    conn: &Connection,
    version: &str,
) -> rusqlite::Result<Option<(Vec<u8>, ModuleInfo)>> {
    conn.prepare_cached("SELECT bytes, sha256, deployed_at FROM modules WHERE version = ?1")?
        .query_row([version], |r| {
            Ok((
                r.get(0)?,
                ModuleInfo {
                    version: version.to_owned(),
                    sha256: r.get(1)?,
                    deployed_at: rfc3339(r.get(2)?),
                },
            ))
        })
        .optional()
}

fn list_stored(conn: &Connection) -> rusqlite::Result<Vec<ModuleInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, sha256, deployed_at FROM modules ORDER BY deployed_at, version",
    )?;
    stmt.query_map([], |r| {
        Ok(ModuleInfo {
            version: r.get(0)?,
            sha256: r.get(1)?,
            deployed_at: rfc3339(r.get(2)?),
        })
    })?
    .collect()
}

/// The module an edge starts on: the active stored one, else the one in `file`, which becomes
/// the first stored version once the runtime has taken it.
pub fn start_runtime(
    conn: &Connection,
    file: &std::path::Path,
    limits: crate::wasm::SandboxLimits,
    now: Millis,
) -> anyhow::Result<Runtime> {
    if let Some(version) = edge_db::meta(conn, "active_module")?
        && let Some((bytes, _)) = load_stored(conn, &version)?
    {
        return Runtime::new(limits, &bytes, &version)
            .map_err(|e| e.context(format!("loading the stored module {version}")));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("reading the module {}: {e}", file.display()))?;
    let version = default_version(&sha256_hex(&bytes));
    let runtime = Runtime::new(limits, &bytes, &version)
        .map_err(|e| e.context(format!("loading the module {}", file.display())))?;
    if stored_sha(conn, &version)?.is_none() {
        store(conn, &version, &bytes, now)?;
    }
    edge_db::set_meta(conn, "active_module", &version)?;
    Ok(runtime)
}
