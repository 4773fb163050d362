//! The single writer: one thread owns the edge's write connection and runs every change.
//!
//! It takes every job that is waiting, opens one transaction, runs each job in its own savepoint
//! (a failing job rolls back only itself), commits once (group commit), and only then answers
//! the jobs. Nothing is acknowledged before its commit is on disk. If the transaction ends under
//! a batch (SQLite rolls it back itself on a full disk or an I/O error), no later job of the
//! batch runs and every job of it is answered with the failure: none is half-applied.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::clock::{Millis, wall_ms};
use crate::metrics::Metrics;

/// Why a job got no committed answer.
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

/// Sends a job's answer once its batch has committed (or failed to).
type Completion = Box<dyn FnOnce(Result<(), &WriteError>) + Send>;
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

/// Whether the writer thread is alive and moving, for `/healthz`.
#[derive(Debug, Default)]
pub struct Pulse {
    stopped: AtomicBool,
    /// When the job now running started (0: none is running).
    job_since: AtomicI64,
}

impl Pulse {
    /// Whether a job is running now.
    pub fn busy(&self) -> bool {
        self.job_since.load(Ordering::Relaxed) != 0
    }

    /// Alive, and no job has run longer than `stuck_after`.
    pub fn healthy(&self, stuck_after: Duration) -> bool {
        let since = self.job_since.load(Ordering::Relaxed);
        let stuck_ms = Millis::try_from(stuck_after.as_millis()).unwrap_or(Millis::MAX);
        !self.stopped.load(Ordering::Relaxed) && (since == 0 || wall_ms() - since < stuck_ms)
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
    /// Jobs queued and not yet taken into a batch.
    waiting: prometheus_client::metrics::gauge::Gauge,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`.
    pub fn spawn(
        conn: Connection,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.queue);
        let pulse = Arc::new(Pulse::default());
        let beat = Arc::clone(&pulse);
        let waiting = metrics.writer_queue.clone();
        std::thread::Builder::new()
            .name("edge-writer".into())
            .spawn(move || {
                // However the loop ends, a panic included, `/healthz` learns the writer is gone.
                let _gone = Stopped(Arc::clone(&beat));
                run(&conn, &rx, config.batch, &metrics, &beat);
            })?;
        Ok(Self { tx, pulse, waiting })
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

/// The writer thread's loop: batch, run, commit, answer; until every handle is dropped.
fn run(conn: &Connection, rx: &Receiver<Job>, max_batch: usize, metrics: &Metrics, pulse: &Pulse) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut completions: Vec<Completion> = Vec::with_capacity(max_batch);
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
        let began = std::time::Instant::now();
        let outcome = match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                for job in batch.drain(..) {
                    // Once the transaction is gone, no job may run outside it.
                    let runnable = (!conn.is_autocommit()).then_some(conn);
                    pulse.job_since.store(wall_ms(), Ordering::Relaxed);
                    completions.push(job(runnable));
                    pulse.job_since.store(0, Ordering::Relaxed);
                }
                finish(conn)
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
        for done in completions.drain(..) {
            done(outcome.as_ref().map(|_| ()));
        }
    }
}

/// Commits the batch, unless its transaction has already ended.
fn finish(conn: &Connection) -> Result<(), WriteError> {
    if conn.is_autocommit() {
        return Err(WriteError::Storage(
            "the transaction was rolled back mid-batch; nothing of the batch was kept".into(),
        ));
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        WriteError::from(e)
    })
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
