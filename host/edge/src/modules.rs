//! Deploying cart components to a running edge: signatures, validation (a component, the right
//! world, a smoke check of its decisions), storage by version with its sha256 and signature,
//! atomic activation, and rollback to any stored version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cart_rules::{CartStatus, CheckoutOutcome, Line, SkuInfo};
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::asked::{Asked, CheckoutAsked, SetAsked};
use crate::clock::{Clock, Millis, rfc3339};
use crate::decided::Decided;
use crate::invariants;
use crate::locks;
use crate::rules::{ActiveRules, CartRules};
use crate::store::db;
use crate::store::writer::{WriteError, WriterHandle};
use crate::wasm::{LoadedModule, ModuleError, Runtime, sha256_hex};

/// The largest module an edge takes.
pub const MAX_MODULE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("this edge accepts only signed modules: send X-Module-Signature")]
    Unsigned,
    #[error("the module's signature does not verify against any trusted key")]
    BadSignature,
    #[error("module {0} is stored without a signature from a trusted key; deploy it again signed")]
    StoredUnsigned(String),
    #[error(transparent)]
    Invalid(#[from] ModuleError),
    #[error("bad module version {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadVersion(String),
    #[error("version {version} already holds another module (sha256 {sha256})")]
    VersionTaken { version: String, sha256: String },
    #[error("these bytes are already stored as version {0}; activate that version instead")]
    StoredAs(String),
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

/// What a deploy did.
#[derive(Debug)]
pub enum Deployed {
    /// A new module, stored and active.
    Created(ModuleInfo),
    /// The same bytes under the same version were stored already; now active.
    Unchanged(ModuleInfo),
}

/// Reads an ed25519 public key in SPKI PEM (as `openssl pkey -pubout` writes it).
pub fn read_public_key(pem: &str) -> anyhow::Result<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| anyhow::anyhow!("not an ed25519 public key in SPKI PEM: {e}"))
}

/// Who may vouch for a module: keys, and the module the operator started the edge with.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// With any, only modules signed by one of these keys run (besides `started_with`).
    pub keys: Vec<VerifyingKey>,
    /// The sha256 of the module given at start (`--module`, or the one built in).
    pub started_with: String,
}

impl Trust {
    /// Checks a base64 ed25519 signature over `bytes` when keys are configured.
    fn verify(&self, bytes: &[u8], signature: Option<&str>) -> Result<(), DeployError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let signature = signature.ok_or(DeployError::Unsigned)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| DeployError::BadSignature)?;
        let signature = Signature::from_slice(&raw).map_err(|_| DeployError::BadSignature)?;
        if self
            .keys
            .iter()
            .any(|k| k.verify(bytes, &signature).is_ok())
        {
            Ok(())
        } else {
            Err(DeployError::BadSignature)
        }
    }

    /// Whether a stored module may run: signed by a trusted key, or the one the operator
    /// started this edge with.
    fn admits(&self, stored: &Stored) -> Result<(), DeployError> {
        if self.keys.is_empty() || stored.info.sha256 == self.started_with {
            return Ok(());
        }
        self.verify(&stored.bytes, stored.signature.as_deref())
            .map_err(|_| DeployError::StoredUnsigned(stored.info.version.clone()))
    }
}

/// The modules of one edge.
pub struct Modules {
    runtime: Runtime,
    active: Arc<ActiveRules>,
    writer: WriterHandle,
    clock: Clock,
    trust: Trust,
    /// Compiled modules by version, so a rollback does not compile again.
    compiled: Mutex<HashMap<String, Arc<LoadedModule>>>,
    /// Why the active module is not the fleet's, from a start on which the fleet's could not
    /// run until an operator deploys or activates one.
    not_the_fleets: Mutex<Option<String>>,
}

impl Modules {
    pub fn new(
        runtime: Runtime,
        active: Arc<ActiveRules>,
        first: Arc<LoadedModule>,
        not_the_fleets: Option<String>,
        writer: WriterHandle,
        clock: Clock,
        trust: Trust,
    ) -> Self {
        let compiled = HashMap::from([(first.version().to_owned(), first)]);
        Self {
            runtime,
            active,
            writer,
            clock,
            trust,
            compiled: Mutex::new(compiled),
            not_the_fleets: Mutex::new(not_the_fleets),
        }
    }

    /// Why the active module is not the fleet's, if this edge started unable to run it and no
    /// operator has deployed or activated a module since.
    pub fn not_the_fleets(&self) -> Option<String> {
        locks::lock(&self.not_the_fleets).clone()
    }

    /// Validates, stores and activates a module. Nothing changes unless every check passes.
    pub async fn deploy(
        &self,
        bytes: Vec<u8>,
        version: Option<String>,
        signature: Option<String>,
    ) -> Result<Deployed, DeployError> {
        self.trust.verify(&bytes, signature.as_deref())?;
        let sha256 = sha256_hex(&bytes);
        let version = version.unwrap_or_else(|| default_version(&sha256));
        if !is_version(&version) {
            return Err(DeployError::BadVersion(version));
        }
        let (v, sha) = (version.clone(), sha256.clone());
        let (by_version, by_sha) = self
            .writer
            .host(move |c| Ok((stored_sha(c, &v)?, version_of(c, &sha)?)))
            .await?;
        match (by_version, by_sha) {
            // The same module again: deploying it is activating it, so a re-run resumes.
            (Some(stored), _) if stored == sha256 => {
                return self.activate(&version).await.map(Deployed::Unchanged);
            }
            (Some(stored), _) => {
                return Err(DeployError::VersionTaken {
                    version,
                    sha256: stored,
                });
            }
            (None, Some(other)) => return Err(DeployError::StoredAs(other)),
            (None, None) => {}
        }
        let module = self.compile(Arc::new(bytes.clone()), &version).await?;
        let checked = Arc::clone(&module);
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || smoke(&*checked, now))
            .await?
            .map_err(ModuleError::SmokeFailed)?;
        let (v, at) = (version.clone(), now);
        let info = self
            .writer
            .host(move |c| {
                store(c, &v, &bytes, signature.as_deref(), at)?;
                db::set_meta(c, "active_module", &v)?;
                Ok(ModuleInfo {
                    version: v,
                    sha256,
                    deployed_at: rfc3339(at),
                })
            })
            .await?;
        self.active.set(module);
        *locks::lock(&self.not_the_fleets) = None;
        tracing::info!(version = %info.version, sha256 = %info.sha256, "module deployed");
        Ok(Deployed::Created(info))
    }

    /// Makes a stored version the active one (rollback or roll forward).
    pub async fn activate(&self, version: &str) -> Result<ModuleInfo, DeployError> {
        let v = version.to_owned();
        let stored = self
            .writer
            .host(move |c| load_stored(c, &v))
            .await?
            .ok_or_else(|| DeployError::UnknownVersion(version.to_owned()))?;
        self.trust.admits(&stored)?;
        let module = match self.cached(version) {
            Some(m) => m,
            None => self.compile(Arc::new(stored.bytes), version).await?,
        };
        let v = version.to_owned();
        self.writer
            .host(move |c| db::set_meta(c, "active_module", &v))
            .await?;
        self.active.set(module);
        *locks::lock(&self.not_the_fleets) = None;
        tracing::info!(version, "module activated");
        Ok(stored.info)
    }

    /// A stored module as the fleet would record it.
    pub async fn fleet_copy(
        &self,
        version: &str,
    ) -> Result<Option<cart_central::FleetModule>, DeployError> {
        let v = version.to_owned();
        let stored = self.writer.host(move |c| load_stored(c, &v)).await?;
        Ok(stored.map(|s| cart_central::FleetModule {
            version: s.info.version,
            sha256: s.info.sha256,
            bytes: s.bytes,
            signature: s.signature,
        }))
    }

    /// The active version and every stored module, oldest first.
    pub async fn list(&self) -> Result<(String, Vec<ModuleInfo>), DeployError> {
        let modules = self.writer.host(list_stored).await?;
        Ok((self.active.get().version().to_owned(), modules))
    }

    /// Compiles off the async workers, and remembers the result by version.
    async fn compile(
        &self,
        bytes: Arc<Vec<u8>>,
        version: &str,
    ) -> Result<Arc<LoadedModule>, DeployError> {
        let (runtime, v) = (self.runtime.clone(), version.to_owned());
        let module =
            Arc::new(tokio::task::spawn_blocking(move || runtime.load(&bytes, &v)).await??);
        locks::lock(&self.compiled).insert(version.to_owned(), Arc::clone(&module));
        Ok(module)
    }

    fn cached(&self, version: &str) -> Option<Arc<LoadedModule>> {
        locks::lock(&self.compiled).get(version).cloned()
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

/// What new rules must get right before they may serve, asked a cart's life: no decision may
/// break what the books need of any rules ([`crate::invariants`]); the rules must sell (hold one
/// of five free units of a sale that is on, and place the cart that holds it); and a checkout
/// must be idempotent by its key, as the API promises (replayed under the same key, neither
/// placed nor replayed under another). How much more than is free, past the limit or before
/// the sale they refuse, and in which words, is theirs to decide.
pub fn smoke(rules: &dyn CartRules, now: Millis) -> Result<(), String> {
    let sku = SkuInfo {
        sku: "SMOKE-1".into(),
        price_cents: 1_000,
        limit_per_customer: 2,
        starts_at: now - 1,
        ends_at: now + 3_600_000,
        hold_ttl_ms: 600_000,
    };
    let set = |sku: &SkuInfo, quantity, free, customer_elsewhere| {
        Asked::Set(SetAsked {
            now,
            status: CartStatus::Open,
            sku: sku.clone(),
            line: None,
            quantity,
            free,
            customer_elsewhere,
        })
    };
    let closed = |line: &Line| {
        Asked::Set(SetAsked {
            now,
            status: CartStatus::CheckedOut,
            sku: sku.clone(),
            line: Some(line.clone()),
            quantity: 2,
            free: 5,
            customer_elsewhere: 0,
        })
    };
    let ask = |what: &str, asked: &Asked| {
        let decided = asked.ask(rules);
        match &decided {
            Decided::Set(Err(fault)) => return Err(format!("set-quantity failed: {fault}")),
            Decided::Checkout(Err(fault)) => return Err(format!("checkout failed: {fault}")),
            _ => {}
        }
        match invariants::broken(asked, &decided).first() {
            None => Ok(decided),
            Some(rule) => Err(format!(
                "{what} answered {}, which breaks the rule \"{rule}\": {}",
                decided.json(now),
                invariants::told(rule)
            )),
        }
    };
    let what = "holding one of five free units";
    let held = match ask(what, &set(&sku, 1, 5, 0))? {
        Decided::Set(Ok(Ok(Some(line)))) if line.quantity == 1 && line.holds_at(now) => line,
        other => {
            return Err(format!(
                "{what} answered {other:?}: rules that never hold sell nothing"
            ));
        }
    };
    ask("holding two of one free unit", &set(&sku, 2, 1, 0))?;
    ask("passing the limit of 2", &set(&sku, 1, 5, 2))?;
    let early = SkuInfo {
        starts_at: now + 60_000,
        ..sku.clone()
    };
    ask("holding before the sale", &set(&early, 1, 5, 0))?;
    let checkout = |status, placed_with: Option<&str>| {
        Asked::Checkout(CheckoutAsked {
            now,
            status,
            skus: vec![sku.clone()],
            lines: vec![held.clone()],
            idempotency_key: "smoke".into(),
            placed_with: placed_with.map(str::to_owned),
        })
    };
    let what = "checking out a held line";
    match ask(what, &checkout(CartStatus::Open, None))? {
        Decided::Checkout(Ok(Ok(CheckoutOutcome::Place))) => {}
        other => return Err(format!("{what} answered {}", other.json(now))),
    }
    match ask("a replay", &checkout(CartStatus::CheckedOut, Some("smoke")))? {
        Decided::Checkout(Ok(Ok(CheckoutOutcome::Replay))) => {}
        other => {
            return Err(format!(
                "checkout is not idempotent by its key: a replay answered {}",
                other.json(now)
            ));
        }
    }
    ask("changing a checked-out cart's line", &closed(&held))?;
    match ask(
        "a second checkout under another key",
        &checkout(CartStatus::CheckedOut, Some("another key")),
    )? {
        Decided::Checkout(Ok(Err(_))) => Ok(()),
        other => Err(format!(
            "a second checkout under another key answered {}: another key's checkout of a \
             checked-out cart is refused",
            other.json(now)
        )),
    }
}

/// A stored module.
struct Stored {
    info: ModuleInfo,
    bytes: Vec<u8>,
    signature: Option<String>,
}

fn stored_sha(conn: &Connection, version: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT sha256 FROM modules WHERE version = ?1")?
        .query_row([version], |r| r.get(0))
        .optional()
}

fn version_of(conn: &Connection, sha256: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT version FROM modules WHERE sha256 = ?1")?
        .query_row([sha256], |r| r.get(0))
        .optional()
}

fn store(
    conn: &Connection,
    version: &str,
    bytes: &[u8],
    signature: Option<&str>,
    now: Millis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO modules (version, sha256, bytes, signature, deployed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![version, sha256_hex(bytes), bytes, signature, now])?;
    Ok(())
}

fn load_stored(conn: &Connection, version: &str) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(
        "SELECT bytes, sha256, signature, deployed_at FROM modules WHERE version = ?1",
    )?
    .query_row([version], |r| {
        Ok(Stored {
            bytes: r.get(0)?,
            info: ModuleInfo {
                version: version.to_owned(),
                sha256: r.get(1)?,
                deployed_at: rfc3339(r.get(3)?),
            },
            signature: r.get(2)?,
        })
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

/// The fleet's module at start: stored here already (by its digest), or fetched from central.
pub enum FleetCopy {
    Stored { version: String, sha256: String },
    Fetched(cart_central::FleetModule),
}

/// Whether this edge stores the module with this sha256.
pub fn stores(conn: &Connection, sha256: &str) -> rusqlite::Result<bool> {
    Ok(version_of(conn, sha256)?.is_some())
}

/// Makes the fleet's module (as central recorded it) the one this edge starts on: checked
/// against its digest and the edge's trust, compiled, stored if new and activated. An error
/// changes nothing here, and the edge starts as it would have (see [`start_module`]).
pub fn adopt_fleet_module(
    conn: &Connection,
    runtime: &Runtime,
    copy: &FleetCopy,
    trust: &Trust,
    now: Millis,
) -> anyhow::Result<LoadedModule> {
    let m = match copy {
        FleetCopy::Fetched(m) if !stores(conn, &m.sha256)? => m,
        FleetCopy::Fetched(cart_central::FleetModule {
            version, sha256, ..
        })
        | FleetCopy::Stored { version, sha256 } => {
            let here = version_of(conn, sha256)?
                .ok_or_else(|| anyhow::anyhow!("the fleet's module {version} is not stored"))?;
            let stored = load_stored(conn, &here)?
                .ok_or_else(|| anyhow::anyhow!("the fleet's module {version} is not stored"))?;
            trust.admits(&stored)?;
            let module = runtime.load(&stored.bytes, &here)?;
            db::set_meta(conn, "active_module", &here)?;
            return Ok(module);
        }
    };
    anyhow::ensure!(
        sha256_hex(&m.bytes) == m.sha256 && is_version(&m.version),
        "central's copy of the fleet's module {} does not match its digest or name",
        m.version
    );
    let trusted =
        m.sha256 == trust.started_with || trust.verify(&m.bytes, m.signature.as_deref()).is_ok();
    anyhow::ensure!(
        trusted,
        "the fleet's module {} is not signed by a key this edge trusts",
        m.version
    );
    if stored_sha(conn, &m.version)?.is_some() {
        anyhow::bail!(
            "version {} names another module on this edge than the fleet's",
            m.version
        );
    }
    let module = runtime.load(&m.bytes, &m.version)?;
    store(conn, &m.version, &m.bytes, m.signature.as_deref(), now)?;
    db::set_meta(conn, "active_module", &m.version)?;
    Ok(module)
}

/// The module an edge starts on: the active stored one if the trust admits it, else `initial`,
/// the module the edge was started with (stored under its default version if new).
pub fn start_module(
    conn: &Connection,
    runtime: &Runtime,
    initial: &[u8],
    trust: &Trust,
    now: Millis,
) -> anyhow::Result<LoadedModule> {
    if let Some(version) = db::meta(conn, "active_module")?
        && let Some(stored) = load_stored(conn, &version)?
    {
        match trust.admits(&stored) {
            Ok(()) => {
                return runtime.load(&stored.bytes, &version).map_err(|e| {
                    anyhow::Error::new(e).context(format!("loading the stored module {version}"))
                });
            }
            Err(e) => tracing::warn!("{e}: starting on the module given at start instead"),
        }
    }
    let sha256 = sha256_hex(initial);
    let version = match version_of(conn, &sha256)? {
        Some(v) => v,
        None => {
            let v = default_version(&sha256);
            store(conn, &v, initial, None, now)?;
            v
        }
    };
    let module = runtime
        .load(initial, &version)
        .map_err(|e| anyhow::Error::new(e).context("loading the cart module"))?;
    db::set_meta(conn, "active_module", &version)?;
    Ok(module)
}

#[cfg(test)]
mod tests {
    use cart_rules::{CartError, CheckoutRequest, SetRequest};

    use super::*;
    use crate::rules::GuestFault;

    /// The default rules with another set-quantity.
    struct Rules(fn(&SetRequest<'_>) -> Result<Option<Line>, CartError>);

    impl CartRules for Rules {
        fn version(&self) -> &str {
            "test"
        }

        fn set_quantity(
            &self,
            req: &SetRequest<'_>,
        ) -> Result<Result<Option<Line>, CartError>, GuestFault> {
            Ok((self.0)(req))
        }

        fn checkout(
            &self,
            req: &CheckoutRequest<'_>,
        ) -> Result<Result<CheckoutOutcome, CartError>, GuestFault> {
            Ok(cart_rules::checkout(req))
        }
    }

    /// Asked more than is free, hold what is.
    fn partial(req: &SetRequest<'_>) -> Result<Option<Line>, CartError> {
        match cart_rules::set_quantity(req) {
            Err(CartError::SoldOut(n)) if n > 0 => cart_rules::set_quantity(&SetRequest {
                quantity: n,
                ..*req
            }),
            other => other,
        }
    }

    /// Holds from before the sale starts.
    fn early(req: &SetRequest<'_>) -> Result<Option<Line>, CartError> {
        let sku = SkuInfo {
            starts_at: req.now,
            ..req.sku.clone()
        };
        cart_rules::set_quantity(&SetRequest { sku: &sku, ..*req })
    }

    /// Holds whatever is free or not.
    fn greedy(req: &SetRequest<'_>) -> Result<Option<Line>, CartError> {
        cart_rules::set_quantity(&SetRequest {
            free: u32::MAX,
            ..*req
        })
    }

    /// The smoke check holds new rules to what the books need, not to the default rules'
    /// choices: holding part of what is asked, or from before the sale, is the rules' to decide;
    /// holding more than is free is not.
    #[test]
    fn the_smoke_check_holds_rules_to_the_books_not_to_the_default_choices() {
        let now = 1_780_000_000_000;
        for (name, rules) in [
            ("default", Rules(cart_rules::set_quantity)),
            ("partial", Rules(partial)),
            ("early", Rules(early)),
        ] {
            assert_eq!(smoke(&rules, now), Ok(()), "{name}");
        }
        let refused = smoke(&Rules(greedy), now).expect_err("greedy rules refused");
        assert!(
            refused.starts_with("holding two of one free unit answered")
                && refused.contains("breaks the rule \"free\""),
            "{refused}"
        );
    }
}
