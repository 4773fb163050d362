//! Who this edge is to the fleet: the data folder it holds (locked, so one process serves it),
//! the history that folder carries, this process's incarnation and event key, and its claim and
//! lease at central, which say whether it may sell.
//!
//! **Fencing.** A process sells only while it holds a lease on its edge id, and stops before the
//! lease can lapse at central: central grants a lease for `lease` from when it commits the
//! renewal, on its own clock, and the edge counts from when it *asked*, on its monotonic clock,
//! less a tenth of the lease (at least 100 ms) for clocks that run at different rates. So by the
//! time central lets another process take the id over, this one has stopped selling, however
//! the network between them behaves.
//!
//! **Copies.** The history belongs to the database file, not to its bytes: the file's identity
//! on the disk (inode and birth time) is recorded with the history, and a folder whose file is
//! not the one recorded (a copy, a backup restored elsewhere) does not carry that history on. It
//! starts only with `--take-over`, as a new history, once the old lease has lapsed.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cart_central::events::EventKey;
use cart_central::{Central, CentralError, Claim, Claimed};
use rusqlite::Connection;

use crate::clock::{Millis, wall_ms};
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
    /// The database file's identity on the disk.
    folder: String,
    /// This process's key for its outbox events, registered with its claim.
    pub key: EventKey,
    /// Until when this process may sell (its lease, less the margin).
    lease: Mutex<Option<Instant>>,
    /// Held while the process lives: a second process on the same folder is refused.
    _lock: File,
}

/// Whether the edge may sell now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Central knows this process holds the edge id.
    Claimed,
    /// Central has not answered yet. A folder with its own history sells from its units while
    /// the lease its previous process held lasts; a folder that never reached central sells
    /// nothing.
    Unclaimed { own_history: bool },
    /// Central refused this process the edge id, or its outbox and central's record of its
    /// history disagree: it will not sell, nor deliver.
    Refused(String),
    /// Central gave the edge id to another process: this one will not sell again, but it
    /// still delivers its outbox (to its history, which a take-over retired) and gives its
    /// units back.
    Superseded(String),
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
            Self::Refused(why) | Self::Superseded(why) => Some(why.clone()),
        }
    }

    /// Whether another process has, or may have, this edge id: requests for its carts go there.
    pub fn lost_id(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Superseded(_))
    }
}

/// How long before its lease can lapse at central an edge stops selling.
pub fn lease_margin(lease: Duration) -> Duration {
    (lease / 10).max(Duration::from_millis(100))
}

/// The database file's identity on the disk: its inode and, where the file system keeps it, its
/// birth time. A copy, or a backup restored, is another file.
fn file_identity(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{born}", meta.ino()))
}

impl Identity {
    /// Locks the data folder and reads (or starts) its history; the previous incarnation is
    /// replaced by a new one. A folder that is a copy of the one its history ran on is refused,
    /// unless `take_over`: then it starts over as a new history.
    pub fn open(
        dir: &Path,
        edge_id: &str,
        conn: &Connection,
        take_over: bool,
    ) -> anyhow::Result<Self> {
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
        let folder = file_identity(&dir.join(db::FILE_NAME))?;
        let recorded = db::meta(conn, "folder")?;
        let copied = recorded.as_ref().is_some_and(|r| *r != folder) && Self::own_history(conn)?;
        if copied {
            anyhow::ensure!(
                take_over,
                "the data folder {} is a copy of the one edge {edge_id}'s history ran on (its \
                 database is another file), and a copy must not carry a history on: the \
                 original may have sold since the copy was made. Start the original folder, or \
                 restart with --take-over to begin a new history here (central writes the old \
                 one off once its lease has lapsed; this folder's carts are discarded)",
                dir.display()
            );
            db::start_over(conn, &crate::ids::new_id("h"))?;
            tracing::warn!(
                "the data folder {} is a copy: starting it over as a new history (--take-over)",
                dir.display()
            );
        }
        if recorded.as_deref() != Some(folder.as_str()) {
            db::set_meta(conn, "folder", &folder)?;
        }
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
        // The lease the previous process on this very file held: this one may sell on it.
        let inherited = db::meta(conn, "lease_until")?
            .and_then(|v| v.parse::<Millis>().ok())
            .filter(|_| !copied)
            .and_then(|until| u64::try_from(until - wall_ms()).ok())
            .map(|left| Instant::now() + Duration::from_millis(left));
        Ok(Self {
            edge_id: edge_id.to_owned(),
            history_id: Mutex::new(history_id),
            incarnation,
            previous,
            folder,
            key: EventKey::generate(),
            lease: Mutex::new(inherited),
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

    /// Whether this process holds its lease now: it may sell.
    pub fn holds_lease(&self) -> bool {
        locks::lock(&self.lease).is_some_and(|until| Instant::now() < until)
    }

    /// Central renewed (or granted) the lease this process asked for at `asked`: it may sell
    /// until `lease` after that, less the margin. The same deadline on the wall clock, which the
    /// caller records in the folder for the next process on it.
    pub fn renewed(&self, asked: Instant, lease: Duration) -> Millis {
        let margin = lease_margin(lease);
        let until = asked + lease.saturating_sub(margin);
        *locks::lock(&self.lease) = Some(until);
        let left = until.saturating_duration_since(Instant::now());
        wall_ms() + Millis::try_from(left.as_millis()).unwrap_or(0)
    }

    /// Gives the lease up: this process sells no more (it lost its id).
    pub fn lose_lease(&self) {
        *locks::lock(&self.lease) = None;
    }

    /// Claims the edge id at central, and takes the lease it comes with. With `take_over`, a
    /// history central does not recognise is written off there and this folder starts over:
    /// whatever it held is discarded first.
    pub async fn claim(
        &self,
        central: &Central,
        writer: &WriterHandle,
        url: &str,
        lease: Duration,
        take_over: bool,
    ) -> Result<Claimed, CentralError> {
        let lease_ms = Millis::try_from(lease.as_millis()).unwrap_or(Millis::MAX);
        let claim = |history_id: String, local_seq: i64, write_off: bool| Claim {
            edge_id: self.edge_id.clone(),
            url: url.to_owned(),
            history_id,
            incarnation: self.incarnation.clone(),
            previous_incarnation: self.previous.clone(),
            local_seq,
            lease_ms,
            take_over: write_off,
            taking_over: take_over,
            folder: self.folder.clone(),
            public_key: self.key.public_key(),
        };
        let local_seq = writer
            .host(db::highest_seq)
            .await
            .map_err(|e| CentralError::Decode(format!("reading this edge's outbox: {e}")))?;
        let mut asked = Instant::now();
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
                asked = Instant::now();
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
        let until = self.renewed(asked, lease);
        writer
            .host(move |c| {
                db::set_meta(c, "claimed", "1")?;
                db::set_meta(c, "lease_until", &until.to_string())
            })
            .await
            .map_err(|e| CentralError::Decode(format!("recording the claim: {e}")))?;
        tracing::info!(edge_id = %self.edge_id, high_water = claimed.high_water, "claimed at central");
        Ok(claimed)
    }
}
