//! Instances made ahead of their calls, and spent ones reset, on threads other than the writer.
//!
//! Making an instance (a store, a WASI context, a slot of the pool) and resetting a spent one
//! (its memory back to the module's image) are what a fresh instance per call costs beyond the
//! call itself. The
//! serving module keeps [`SandboxLimits::instances_ahead`] instances made ahead by a thread of
//! its own; a call takes one (or makes one itself when none is ready), runs once in it, and
//! hands it to the reaper, whose thread drops it. Nothing is shared between calls: each
//! instance serves exactly one.
//!
//! This moves work off the writer; it does not remove any. It can pay only where cores are to
//! spare beside the writer and the HTTP workers; on two cores it costs (BENCHMARKS.md), so it is
//! off unless asked for (`serve --instances-ahead N`).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use super::{CartPre, Fresh, HostState, SandboxLimits};

use crate::locks;

/// Most instances a module may keep made ahead.
pub const MOST_READY: usize = 32;
/// Spent instances waiting to be reset; beyond this a call resets its own.
pub const SPENT: usize = 48;

/// The serving module's instances made ahead, while it serves.
#[derive(Default)]
pub struct Ahead(Mutex<Option<Receiver<Fresh>>>);

impl Ahead {
    /// Starts making instances ahead, unless that is already under way.
    pub fn start(&self, pre: &CartPre<HostState>, limits: SandboxLimits) {
        let mut ready = locks::lock(&self.0);
        if ready.is_some() {
            return;
        }
        let (tx, rx) = sync_channel(limits.instances_ahead.clamp(1, MOST_READY));
        let pre = pre.clone();
        let spawned = std::thread::Builder::new()
            .name("guest-ahead".into())
            .spawn(move || make_ahead(&pre, limits, &tx));
        match spawned {
            Ok(_) => *ready = Some(rx),
            // Calls make their own instances, as they would without this.
            Err(e) => tracing::warn!("no thread to make guest instances ahead: {e}"),
        }
    }

    /// Stops making instances ahead and lets go of those made (their thread ends).
    pub fn stop(&self) {
        locks::lock(&self.0).take();
    }

    /// An instance made ahead, if one is ready.
    pub fn take(&self) -> Option<Fresh> {
        locks::lock(&self.0)
            .as_ref()
            .and_then(|rx| rx.try_recv().ok())
    }
}

/// Makes instances until the module stops serving (the receiver is gone). One that cannot be
/// made ends it: calls then make their own, and each reports the fault to its request.
fn make_ahead(pre: &CartPre<HostState>, limits: SandboxLimits, ready: &SyncSender<Fresh>) {
    loop {
        match Fresh::new(pre, limits) {
            Ok(fresh) => {
                if ready.send(fresh).is_err() {
                    return;
                }
            }
            Err(fault) => {
                tracing::warn!("no more guest instances made ahead; calls make their own: {fault}");
                return;
            }
        }
    }
}

/// Where spent instances go to be reset: a thread of their own, or (`None`) each call.
#[derive(Clone)]
pub struct Reaper(Option<Arc<SyncSender<Fresh>>>);

impl Reaper {
    /// Starts the thread that resets spent instances, if `off_thread`; it ends with the last
    /// handle.
    pub fn spawn(off_thread: bool) -> Self {
        if !off_thread {
            return Self(None);
        }
        let (tx, rx) = sync_channel::<Fresh>(SPENT);
        let spawned = std::thread::Builder::new()
            .name("guest-reaper".into())
            .spawn(move || rx.into_iter().for_each(drop));
        match spawned {
            Ok(_) => Self(Some(Arc::new(tx))),
            Err(e) => {
                tracing::warn!("no thread to reset spent guest instances: {e}");
                Self(None)
            }
        }
    }

    /// Resets `spent` off this thread, or here when there is no reaper or it is behind.
    pub fn reset(&self, spent: Fresh) {
        if let Some(reaper) = &self.0 {
            match reaper.try_send(spent) {
                Ok(()) => {}
                Err(TrySendError::Full(spent) | TrySendError::Disconnected(spent)) => drop(spent),
            }
        } else {
            drop(spent);
        }
    }
}
