//! Who this edge is to the fleet: the data folder it holds (locked, so one process serves it),
//! the history that folder carries, this process's incarnation, and its claim and lease at
//! central, which say whether it may sell.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use cart_central::{Central, CentralError, Claim};
use rusqlite::Connection;

use crate::locks;
use crate::store::db;
use crate::store::writer::WriterHandle;

/// This process's identity.
pub struct Identity {
    pub edge_id: String,
    /// The data folder's history: made with the folder, kept across restarts.
    history_id: Mutex<String>,
    pub incarnation: String,
    /// The process that served this folder before this one.
    previous: Option<String>,
    /// Held while the process lives: a second process on the same folder is refused.
    _lock: File,
}

/// Whether the edge may sell now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Central knows this process holds the edge id.
    Claimed,
    /// Central has not answered yet. A folder with its own history sells from its units; a
    /// folder that never reached central sells nothing.
    Unclaimed { own_history: bool },
    /// Central refused this process the edge id, or gave it to another: it will not sell.
    Refused(String),
}

impl Standing {
    /// Why the edge may not sell, if it may not.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Self::Claimed | Self::Unclaimed { own_history: true } => None,
            Self::Unclaimed { own_history: false } => Some(
                "this edge has not reached central yet, and a new edge sells nothing before it \
                 has"
                .into(),
            ),
            Self::Refused(why) => Some(why.clone()),
        }
    }
}

impl Identity {
    /// Locks the data folder and reads (or starts) its history; the previous incarnation is
    /// replaced by a new one.
    pub fn open(dir: &Path, edge_id: &str, conn: &Connection) -> anyhow::Result<Self> {
        let path = dir.join("edge.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "another cart-host process is serving the data folder {}",
                dir.display()
            )
        })?;
        let history_id = match db::meta(conn, "history_id")? {
            Some(h) => h,
            None => {
                let h = crate::ids::new_id("h");
                db::set_meta(conn, "history_id", &h)?;
                h
            }
        };
        let previous = db::meta(conn, "incarnation")?;
        let incarnation = crate::ids::new_id("i");
        db::set_meta(conn, "incarnation", &incarnation)?;
        Ok(Self {
            edge_id: edge_id.to_owned(),
            history_id: Mutex::new(history_id),
            incarnation,
            previous,
            _lock: lock,
        })
    }

    pub fn history_id(&self) -> String {
        locks::lock(&self.history_id).clone()
    }

    /// Whether this folder has ever been claimed at central.
    pub fn own_history(conn: &Connection) -> rusqlite::Result<bool> {
        Ok(db::meta(conn, "claimed")?.is_some())
    }

    /// Claims the edge id at central. With `take_over`, a history central does not recognise is
    /// written off there and this folder starts over: whatever it held is discarded first.
    pub async fn claim(
        &self,
        central: &Central,
        writer: &WriterHandle,
        url: &str,
        lease_ms: i64,
        take_over: bool,
    ) -> Result<(), CentralError> {
        let claim = |history_id: String, local_seq: i64, take_over: bool| Claim {
            edge_id: self.edge_id.clone(),
            url: url.to_owned(),
            history_id,
            incarnation: self.incarnation.clone(),
            previous_incarnation: self.previous.clone(),
            local_seq,
            lease_ms,
            take_over,
        };
        let local_seq = writer
            .host(db::highest_seq)
            .await
            .map_err(|e| CentralError::Decode(format!("reading this edge's outbox: {e}")))?;
        let claimed = match central
            .claim_edge(&claim(self.history_id(), local_seq, false))
            .await
        {
            Err(CentralError::HistoryMismatch { .. }) if take_over => {
                let fresh = crate::ids::new_id("h");
                let h = fresh.clone();
                writer
                    .host(move |c| db::start_over(c, &h))
                    .await
                    .map_err(|e| CentralError::Decode(format!("starting this folder over: {e}")))?;
                *locks::lock(&self.history_id) = fresh.clone();
                let done = central.claim_edge(&claim(fresh, 0, true)).await?;
                if let Some(retired) = &done.retired {
                    tracing::warn!(
                        edge_id = %self.edge_id,
                        "took over: the old history is written off as {retired}; this folder starts anew"
                    );
                }
                done
            }
            other => other?,
        };
        writer
            .host(|c| db::set_meta(c, "claimed", "1"))
            .await
            .map_err(|e| CentralError::Decode(format!("recording the claim: {e}")))?;
        tracing::info!(edge_id = %self.edge_id, high_water = claimed.high_water, "claimed at central");
        Ok(())
    }
}
