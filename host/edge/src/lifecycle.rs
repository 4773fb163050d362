//! Where an edge is in its life: serving, or draining (leaving the fleet). The switch is thrown
//! once, by the operator (`POST /admin/drain`) or the signal; [`crate::drain`] does the leaving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Where an edge is in its life as far as draining goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
}

/// The drain's switch: thrown once, by the operator or the signal.
pub struct Drain {
    phase: watch::Sender<Phase>,
    /// The same, for checks inside writer jobs.
    flag: Arc<AtomicBool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Serving),
            flag: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Drain {
    /// Starts the drain; false if it had started already.
    pub fn ask(&self) -> bool {
        self.flag.store(true, Ordering::SeqCst);
        self.phase.send_if_modified(|phase| {
            let first = *phase == Phase::Serving;
            *phase = Phase::Draining;
            first
        })
    }

    pub fn draining(&self) -> bool {
        *self.phase.borrow() == Phase::Draining
    }

    /// Whether the edge is draining, readable from a writer job.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Resolves once the drain is asked for.
    pub async fn asked(&self) {
        let mut phase = self.phase.subscribe();
        let _ = phase.wait_for(|p| *p == Phase::Draining).await;
    }
}
