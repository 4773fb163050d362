//! The cart rules as the host calls them: a seam with two sides, the deployed component
//! ([`crate::wasm::LoadedModule`]) and, for benchmarks, the same rules compiled into the host.

use std::sync::{Arc, RwLock};

use cart_rules::{CartError, CheckoutOutcome, CheckoutRequest, Line, SetRequest};

use crate::locks;

/// The rules failed to decide: trapped, ran past their deadline, or outgrew their memory.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuestFault(pub String);

/// Whatever decides cart updates. Calls are pure: the same request gets the same decision.
pub trait CartRules: Send + Sync {
    /// The version answers name in `X-Module-Version`.
    fn version(&self) -> &str;

    /// Whether these rules serve new requests now: while they do, they may prepare for calls
    /// ahead of them (the component makes its instances ahead), and when they stop, let go of it.
    fn set_serving(&self, serving: bool) {
        let _ = serving;
    }

    fn set_quantity(
        &self,
        req: &SetRequest<'_>,
    ) -> Result<Result<Option<Line>, CartError>, GuestFault>;

    fn checkout(
        &self,
        req: &CheckoutRequest<'_>,
    ) -> Result<Result<CheckoutOutcome, CartError>, GuestFault>;
}

/// The rules new requests run on. A deploy switches them atomically; calls already running
/// finish on the rules they started with.
pub struct ActiveRules(RwLock<Arc<dyn CartRules>>);

impl ActiveRules {
    pub fn new(rules: Arc<dyn CartRules>) -> Self {
        rules.set_serving(true);
        Self(RwLock::new(rules))
    }

    pub fn get(&self) -> Arc<dyn CartRules> {
        Arc::clone(&locks::read(&self.0))
    }

    pub fn set(&self, rules: Arc<dyn CartRules>) {
        rules.set_serving(true);
        let old = std::mem::replace(&mut *locks::write(&self.0), Arc::clone(&rules));
        if !Arc::ptr_eq(&old, &rules) {
            old.set_serving(false);
        }
    }
}

/// Rules an edge runs instead of its deployed modules, fixed at start: the benchmarks' native
/// baseline.
#[derive(Clone)]
pub struct FixedRules(pub Arc<dyn CartRules>);

impl std::fmt::Debug for FixedRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FixedRules({})", self.0.version())
    }
}
