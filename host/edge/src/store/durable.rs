//! The durable mark: which of the writer's commits are on disk; the sync that puts them there;
//! and why answering after it is safe.
//!
//! The write connection commits at `synchronous=NORMAL`: `COMMIT` appends the batch's frames
//! to the `-wal` file and returns without syncing it. The writer's flusher thread
//! ([`super::writer`]) then `fdatasync`s the `-wal` and only after that releases the answers of
//! every batch that had committed before the sync began, in commit order, while the writer
//! already runs the next batch. Why that is as safe
//! as `synchronous=FULL` (SQLite's documentation of WAL, of `PRAGMA synchronous`, and wal.c):
//!
//! - A commit's frames are written in order and each carries a checksum chained over every
//!   frame before it. Recovery after a crash replays the WAL only up to the last commit frame
//!   of an unbroken, checksummed prefix. A synced commit is inside that prefix, and so is every
//!   commit before it; the bytes of later, unsynced commits are ignored or missing, whatever
//!   the disk kept of them.
//! - At `NORMAL` SQLite still syncs at the moments that keep the database whole: the WAL
//!   before a checkpoint copies its pages into the database, the database after a completed
//!   checkpoint, and the WAL's new header when it starts the file over. So a commit that a
//!   checkpoint has moved out of the WAL is synced in the database file before the WAL is
//!   reused, and the frames that overwrite it cannot be taken for it (a new salt).
//! - `fdatasync` on our own descriptor of the `-wal` syncs the file, not the descriptor: every
//!   write any descriptor made to it before the call.
//!
//! Everything that tells the world about a change waits for this mark: a job's answer, and a
//! read on the edge's read connections (they see commits as soon as `COMMIT` publishes them,
//! synced or not), so nothing is sent to central, the queue, a peer or a shopper that a power
//! cut could take back.
//!
//! A failed sync is final (fail-stop): the kernel may have dropped the pages it could not
//! write and marked them clean, so a second `fdatasync` could succeed with the data gone
//! (PostgreSQL's lesson of 2018). So is an I/O error the writer meets itself, in `COMMIT`'s
//! checkpoint. Every batch not yet answered fails, the writer stops without checkpointing, and
//! `/healthz` answers `503`. Restarting the process is not enough: the page cache may still
//! hold pages that never reached the disk, and a new process would read them. Check the disk
//! and reboot the host (or remount the file system) before the edge starts again.
//!
//! A batch answered with a failure is not known to be undone: a commit the flusher did not sync
//! may still reach the disk whole, as a commit whose answer was lost may have happened in any
//! database. The outbox tells central only what is there after the restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Why a job got no committed answer (or a read, none it may give).
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    #[error("edge database: {0}")]
    Storage(String),
    #[error("the writer's queue is full")]
    Overloaded,
    #[error("the writer has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

/// Batches committed and not yet synced that the writer may run ahead by, beyond the ones a
/// sync in progress covers. Past it, the writer waits for the disk, and its next batch grows.
pub const AHEAD: usize = 2;

/// How far the writer's commits are on disk.
#[derive(Clone, Debug)]
enum Synced {
    /// Every batch up to this number is on disk (or failed, and was answered so).
    Upto(u64),
    /// A sync failed: nothing after the last mark can be trusted to be on disk.
    Failed(WriteError),
}

/// The writer's batch numbers against the durable mark.
#[derive(Debug)]
pub struct Mark {
    /// The batch now running (or the last one): what its jobs noted outside the database, such
    /// as the rules' recent requests, is at most this far.
    running: AtomicU64,
    /// The newest batch whose `COMMIT` has begun: a read that has ended saw at most this far.
    committing: AtomicU64,
    synced: watch::Sender<Synced>,
}

impl Default for Mark {
    fn default() -> Self {
        Self {
            running: AtomicU64::new(0),
            committing: AtomicU64::new(0),
            synced: watch::Sender::new(Synced::Upto(0)),
        }
    }
}

impl Mark {
    /// Called by the writer before it runs batch `number`'s jobs.
    pub(super) fn begin(&self, number: u64) {
        self.running.store(number, Ordering::SeqCst);
    }

    /// Called by the writer before it commits batch `number`, so that no read can see the
    /// batch before the mark knows of it. (Not before its jobs: a read while a job runs long
    /// need not wait for it.)
    pub(super) fn commit(&self, number: u64) {
        self.committing.store(number, Ordering::SeqCst);
    }

    /// Moves the mark to `upto`; a failure stays.
    pub(super) fn synced(&self, upto: u64) {
        self.synced.send_if_modified(|s| match s {
            Synced::Upto(n) => {
                *n = upto;
                true
            }
            Synced::Failed(_) => false,
        });
    }

    /// Fails the mark for good: no read waiting for it, and no batch after it, succeeds.
    pub(super) fn failed(&self, why: WriteError) {
        self.synced.send_replace(Synced::Failed(why));
    }

    /// The failure that stopped the writer, if one did.
    pub(super) fn failure(&self) -> Option<WriteError> {
        match &*self.synced.borrow() {
            Synced::Failed(why) => Some(why.clone()),
            Synced::Upto(_) => None,
        }
    }

    /// Waits until every commit a read that has just ended could have seen is on disk. Call it
    /// after the read, before anything the read found leaves the edge.
    pub async fn after_read(&self) -> Result<(), WriteError> {
        self.reached(self.committing.load(Ordering::SeqCst)).await
    }

    /// Waits until the batch now running, and every one before it, is on disk: for what a job
    /// noted outside the database.
    pub async fn after_jobs(&self) -> Result<(), WriteError> {
        self.reached(self.running.load(Ordering::SeqCst)).await
    }

    async fn reached(&self, seen: u64) -> Result<(), WriteError> {
        let mut synced = self.synced.subscribe();
        let settled = synced
            .wait_for(|s| !matches!(s, Synced::Upto(n) if *n < seen))
            .await
            .map_err(|_| WriteError::Stopped)?;
        match &*settled {
            Synced::Upto(_) => Ok(()),
            Synced::Failed(why) => Err(why.clone()),
        }
    }
}

/// The `-wal` file of the database at `db`.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Syncs the file at `path` (its data, and its size): every write made to it before the call
/// is on disk when this returns `Ok`.
pub fn sync(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    #[cfg(feature = "test-hooks")]
    if super::power::tracking() {
        return super::power::sync(path);
    }
    let _ = path;
    file.sync_data()
}

/// Syncs the `-wal` of the database at `db`, if it has one: at start, so that commits a killed
/// process left in the kernel's cache are on disk before anything reads them.
pub fn sync_wal(db: &Path) -> std::io::Result<()> {
    let wal = wal_path(db);
    match std::fs::File::open(&wal) {
        Ok(file) => sync(&file, &wal),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
