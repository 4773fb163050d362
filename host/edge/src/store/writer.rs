//! The single writer: one thread owns the edge's write connection and runs every change.
//!
//! It takes every job that is waiting, opens one transaction, runs each job in its own savepoint
//! (a failing job rolls back only itself), and commits once (group commit). The commit does not
//! wait for the disk: the batch goes to the flusher ([`super::durable`]), which answers its jobs
//! once the WAL holding it is synced, while this thread runs the next batch. Nothing is
//! acknowledged before its commit is on disk. If the transaction ends under a batch (SQLite
//! rolls it back itself on a full disk or an I/O error), no later job of the batch runs and
//! every job of it is answered with the failure: none is half-applied.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use tokio::sync::oneshot;

pub use super::durable::WriteError;
use super::durable::{self, AHEAD, Mark};
use crate::clock::{Millis, wall_ms};
use crate::metrics::Metrics;

/// Sends a job's answer once its batch is on disk (or failed).
pub(super) type Completion = Box<dyn FnOnce(Result<(), &WriteError>) + Send>;
/// Runs on the connection, or, when its batch failed before its turn, on `None`.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Completion + Send>;

/// The writer's queue and batch sizes.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Jobs waiting beyond this are refused (`503 overloaded`) rather than queued without bound.
    pub queue: usize,
    /// Most jobs in one transaction.
    pub batch: usize,
    /// A job running longer than this means the writer is stuck: `/healthz` answers 503.
    pub stuck_after: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue: 8192,
            batch: 512,
            stuck_after: Duration::from_secs(10),
        }
    }
}

/// Whether the writer and its flusher are alive and moving, for `/healthz`.
#[derive(Debug, Default)]
pub struct Pulse {
    stopped: AtomicBool,
    /// When the job now running started (0: none is running).
    job_since: AtomicI64,
    /// When the sync now running started (0: none is running).
    sync_since: AtomicI64,
}

impl Pulse {
    /// Whether a job is running now.
    pub fn busy(&self) -> bool {
        self.job_since.load(Ordering::Relaxed) != 0
    }

    /// Alive, and no job or sync has run longer than `stuck_after`.
    pub fn healthy(&self, stuck_after: Duration) -> bool {
        let stuck_ms = Millis::try_from(stuck_after.as_millis()).unwrap_or(Millis::MAX);
        let moving = |since: &AtomicI64| {
            let since = since.load(Ordering::Relaxed);
            since == 0 || wall_ms() - since < stuck_ms
        };
        !self.stopped.load(Ordering::Relaxed) && moving(&self.job_since) && moving(&self.sync_since)
    }

    pub(super) fn syncing(&self, now: bool) {
        let since = if now { wall_ms() } else { 0 };
        self.sync_since.store(since, Ordering::Relaxed);
    }
}

/// Marks the writer stopped when dropped, on return or unwind.
struct Stopped(Arc<Pulse>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Relaxed);
    }
}

/// The cloneable way in to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Job>,
    pulse: Arc<Pulse>,
    mark: Arc<Mark>,
    /// Jobs queued and not yet taken into a batch.
    waiting: prometheus_client::metrics::gauge::Gauge,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`, and its flusher on the connection's `-wal` file.
    pub fn spawn(
        conn: Connection,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.queue);
        let (pulse, mark) = (Arc::new(Pulse::default()), Arc::new(Mark::default()));
        let wal_path = durable::wal_path(Path::new(conn.path().unwrap_or_default()));
        let wal = std::fs::File::open(&wal_path)?;
        // What was committed before the writer started (the migrations, the edge's books) and
        // what a killed process left in the kernel's cache are on disk before any read that
        // could see them is answered: those reads wait for mark 0.
        durable::sync(&wal, &wal_path)?;
        let (to_flusher, committed) = sync_channel(AHEAD);
        let flusher = {
            let (pulse, mark, metrics) =
                (Arc::clone(&pulse), Arc::clone(&mark), Arc::clone(&metrics));
            std::thread::Builder::new()
                .name("edge-flusher".into())
                .spawn(move || {
                    let _gone = Stopped(Arc::clone(&pulse));
                    flush(&wal, &wal_path, &committed, &mark, &metrics, &pulse);
                })?
        };
        let waiting = metrics.writer_queue.clone();
        let (beat, marks) = (Arc::clone(&pulse), Arc::clone(&mark));
        std::thread::Builder::new()
            .name("edge-writer".into())
            .spawn(move || {
                // However the loop ends, a panic included, `/healthz` learns the writer is gone.
                let _gone = Stopped(Arc::clone(&beat));
                let writer = Writer {
                    conn: &conn,
                    flusher: to_flusher,
                    mark: &marks,
                    metrics: &metrics,
                    pulse: &beat,
                };
                writer.run(&rx, config.batch);
                // The last batches are synced and answered before the connection closes.
                let _ = flusher.join();
                if marks.failure().is_some() {
                    // Closing would checkpoint what may never have reached the disk.
                    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
                }
            })?;
        Ok(Self {
            tx,
            pulse,
            mark,
            waiting,
        })
    }

    /// The durable mark, which a read waits for before what it saw leaves the edge.
    pub fn mark(&self) -> &Arc<Mark> {
        &self.mark
    }

    pub fn pulse(&self) -> &Pulse {
        &self.pulse
    }

    /// Runs `f` in its own savepoint of the next batch: its writes are kept if it returns `Ok`
    /// and rolled back if it returns `Err`. The job is queued when this is called (so jobs run
    /// in the order they were asked for); the answer comes once the batch has committed.
    pub fn run<T, E, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<Result<T, E>, WriteError>> + use<T, E, F>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(WriteError::Storage(
                    "the batch failed before this job ran".into(),
                )),
            };
            Box::new(move |committed: Result<(), &WriteError>| {
                let sent = match committed {
                    Ok(()) => result,
                    Err(e) => Err(e.clone()),
                };
                // The request may have gone away; its update stands all the same.
                let _ = reply.send(sent);
            })
        });
        // Counted before it is sent, so that the writer never takes it off first.
        self.waiting.inc();
        let queued = self.tx.try_send(job).map_err(|e| {
            self.waiting.dec();
            match e {
                TrySendError::Full(_) => WriteError::Overloaded,
                TrySendError::Disconnected(_) => WriteError::Stopped,
            }
        });
        async move {
            queued?;
            answer.await.map_err(|_| WriteError::Stopped)?
        }
    }

    /// Runs host SQL that cannot be refused, in its own savepoint of the next batch.
    pub fn host<T, F>(&self, f: F) -> impl Future<Output = Result<T, WriteError>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let done = self.run(f);
        async move { Ok(done.await??) }
    }
}

/// Runs `f` inside `SAVEPOINT job`; keeps its writes if it succeeds, else rolls them back.
fn in_savepoint<T, E>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<Result<T, E>, WriteError> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = f(conn);
    if conn.is_autocommit() {
        // The job's statements ended the transaction: what it wrote is gone with the batch.
        return Err(WriteError::Storage(
            "the transaction was rolled back under the job".into(),
        ));
    }
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    Ok(result)
}

/// The writer thread's side of the pipeline.
struct Writer<'a> {
    conn: &'a Connection,
    flusher: SyncSender<Committed>,
    mark: &'a Mark,
    metrics: &'a Metrics,
    pulse: &'a Pulse,
}

impl Writer<'_> {
    /// Batch, run, commit, hand to the flusher; until every handle is dropped, or the flusher
    /// has stopped on a failed sync.
    fn run(self, rx: &Receiver<Job>, max_batch: usize) {
        let (conn, metrics, pulse) = (self.conn, self.metrics, self.pulse);
        let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
        let mut number = 0;
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            metrics.writer_batch.observe(batch.len() as f64);
            metrics.writer_queue.dec_by(batch.len() as i64);
            if let Some(why) = self.mark.failure() {
                for job in batch.drain(..) {
                    job(None)(Err(&why));
                }
                return;
            }
            let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
            let began = std::time::Instant::now();
            number += 1;
            self.mark.begin(number);
            let outcome = match conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => {
                    for job in batch.drain(..) {
                        // Once the transaction is gone, no job may run outside it.
                        let runnable = (!conn.is_autocommit()).then_some(conn);
                        pulse.job_since.store(wall_ms(), Ordering::Relaxed);
                        completions.push(job(runnable));
                        pulse.job_since.store(0, Ordering::Relaxed);
                    }
                    self.mark.commit(number);
                    self.commit()
                }
                Err(e) => {
                    completions.extend(batch.drain(..).map(|job| job(None)));
                    Err(WriteError::from(e))
                }
            };
            metrics.writer_busy.inc_by(began.elapsed().as_secs_f64());
            if let Err(e) = &outcome {
                tracing::error!("a batch of {} jobs failed: {e}", completions.len());
                metrics.failed_batches.inc();
            }
            let committed = Committed {
                number,
                outcome,
                completions,
            };
            // Blocks while `AHEAD` batches wait for the disk.
            if let Err(refused) = self.flusher.send(committed) {
                let stopped = WriteError::Stopped;
                for done in refused.0.completions {
                    done(Err(&stopped));
                }
                return;
            }
            if self.mark.failure().is_some() {
                return;
            }
        }
    }

    /// Commits the batch. An I/O error here (a checkpoint's sync that failed, say) stops the
    /// writer as a failed sync of the flusher does ([`super::durable`]); a full disk does not.
    fn commit(&self) -> Result<(), WriteError> {
        let conn = self.conn;
        if conn.is_autocommit() {
            return Err(WriteError::Storage(
                "the transaction was rolled back mid-batch; nothing of the batch was kept".into(),
            ));
        }
        conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            let io = e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure);
            let why = WriteError::from(e);
            if io {
                tracing::error!("the writer has stopped: {why}");
                self.mark.failed(why.clone());
            }
            why
        })
    }
}

/// A batch the writer has committed (or failed to), waiting for the sync that makes it
/// durable before its jobs are answered.
struct Committed {
    number: u64,
    outcome: Result<(), WriteError>,
    completions: Vec<Completion>,
}

/// The flusher thread's loop: take every committed batch waiting, sync the WAL once for all
/// of them, move the mark, answer them in order; until the writer hangs up. Returns on a
/// failed sync, having failed every batch it held.
fn flush(
    wal: &std::fs::File,
    wal_path: &Path,
    batches: &Receiver<Committed>,
    mark: &Mark,
    metrics: &Metrics,
    pulse: &Pulse,
) {
    let _unwinding = Unwinding(mark);
    let mut ready: Vec<Committed> = Vec::with_capacity(AHEAD + 1);
    while let Ok(first) = batches.recv() {
        ready.push(first);
        ready.extend(batches.try_iter());
        if let Some(why) = mark.failure() {
            // The writer met an I/O error itself (a checkpoint's sync, say): nothing after
            // it is trusted, whatever a sync here would say.
            for batch in ready.drain(..) {
                answer(batch, Err(&why));
            }
            return;
        }
        let began = std::time::Instant::now();
        pulse.syncing(true);
        let synced = durable::sync(wal, wal_path);
        pulse.syncing(false);
        metrics.writer_sync.observe(began.elapsed().as_secs_f64());
        if let Err(e) = synced {
            let why = WriteError::Storage(format!(
                "syncing {} failed ({e}); the writer has stopped, for the kernel may have \
                 dropped what it could not write: restart the edge",
                wal_path.display()
            ));
            tracing::error!("{why}");
            mark.failed(why.clone());
            for batch in ready.drain(..) {
                answer(batch, Err(&why));
            }
            // Batches still queued are dropped with this thread's receiver: their jobs are
            // answered `Stopped`, and the writer's next hand-over finds no flusher and stops.
            return;
        }
        let newest = ready.last().map_or(0, |b| b.number);
        mark.synced(newest);
        for batch in ready.drain(..) {
            let outcome = batch.outcome.clone();
            answer(batch, outcome.as_ref().map(|_| ()));
        }
    }
}

/// However the flusher ends, a panic included, no read waits for it forever.
struct Unwinding<'a>(&'a Mark);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed(WriteError::Stopped);
        }
    }
}

fn answer(batch: Committed, outcome: Result<(), &WriteError>) {
    for done in batch.completions {
        done(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, WriterHandle) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = crate::store::db::open_writer(dir.path()).expect("open");
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        let writer =
            WriterHandle::spawn(conn, WriterConfig::default(), Arc::default()).expect("writer");
        (dir, writer)
    }

    fn rows(dir: &tempfile::TempDir) -> i64 {
        let conn = crate::store::db::open_reader(dir.path()).expect("reader");
        conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    /// SQLite rolls a transaction back by itself on a full disk or an I/O error; a guest could
    /// do it with `INSERT OR ROLLBACK` before the cart rules were made pure. Either way, no job
    /// of the batch may run outside the transaction or be acknowledged.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_whose_transaction_ends_under_it_fails_whole_and_keeps_nothing() {
        let (dir, writer) = writer();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let blocker = writer.host(move |_| {
            let _ = wait.recv();
            Ok(())
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !writer.pulse().busy() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // These three queue behind the blocker and share the next batch.
        let first = writer.host(|c| c.execute("INSERT INTO t VALUES (1)", []));
        let ender = writer.host(|c| c.execute_batch("ROLLBACK"));
        let after = writer.host(|c| c.execute("INSERT INTO t VALUES (3)", []));
        go.send(()).expect("release the blocker");
        blocker.await.expect("the blocker's batch commits");
        for (what, result) in [
            ("the job before", first.await.map(drop)),
            ("the job that ended it", ender.await.map(drop)),
            ("the job after", after.await.map(drop)),
        ] {
            assert!(
                matches!(result, Err(WriteError::Storage(_))),
                "{what}: {result:?}"
            );
        }
        assert_eq!(rows(&dir), 0, "a job ran outside the transaction");
        // The writer serves on.
        writer
            .host(|c| c.execute("INSERT INTO t VALUES (4)", []))
            .await
            .expect("the next batch commits");
        assert_eq!(rows(&dir), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panicking_job_takes_the_writer_down_and_healthz_knows() {
        let (_dir, writer) = writer();
        assert!(writer.pulse().healthy(Duration::from_secs(1)));
        let crash = writer.host(|_| -> rusqlite::Result<()> { panic!("a host bug") });
        assert!(crash.await.is_err());
        // The job's answer is dropped as its thread unwinds, a moment before the thread marks
        // itself stopped: wait for that, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while writer.pulse().healthy(Duration::from_secs(1)) {
            assert!(
                std::time::Instant::now() < deadline,
                "/healthz never learned the writer is gone"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(
            writer.host(|_| Ok(())).await,
            Err(WriteError::Stopped)
        ));
    }
}
