//! `cart-host relay`: consumes the outbox stream and applies it to central, exactly once.
//!
//! Messages are taken as they arrive, up to a batch or what came within a short linger after the
//! first, and applied in one central transaction by the same function as the direct path: per edge history, strictly in sequence
//! after central's high-water mark. Then each message is settled by what central did with it:
//!
//! - at or below the edge's new mark: applied now or before, acknowledged (a redelivery after a
//!   relay died between central's commit and its acknowledgement lands here);
//! - above it: an earlier event of that edge has not been applied yet (it is with another relay,
//!   or was published again after a failure): put back to be delivered again shortly. A gap is
//!   waited for, never jumped;
//! - of a history central does not know yet (its edge has not claimed its id with it): put
//!   back for a few seconds;
//! - unreadable, or not signed by a key of its history (forged, or corrupt): set aside,
//!   counted and logged, so one bad message neither applies, nor stops the others, nor keeps
//!   the lag above zero. (A history a take-over wrote off still applies what its process
//!   published: those orders are real.)
//!
//! Central unreachable: the whole batch goes back to the stream, and the lag grows until it
//! answers. One edge's events that central refuses go back alone; the other edges' apply. Several relays may share the consumer; the high-water marks make their order
//! irrelevant.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use cart_central::events::{Delivery, verify};
use cart_central::{Applied, Central, CentralError, EdgeBatch};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use crate::{CONSUMER, Envelope, connect, ensure_stream};

/// How a relay is run.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// `nats://HOST:PORT` (or `tls://HOST:PORT`).
    pub queue_url: String,
    /// TLS roots and credentials for NATS.
    pub queue_auth: crate::QueueAuth,
    pub central_url: String,
    /// Whether the relay may migrate central's schema, or only checks it.
    pub central_schema: cart_central::SchemaPolicy,
    /// Most messages applied in one central transaction.
    pub batch: usize,
    /// How long a batch waits for more messages after its first: fewer, larger transactions
    /// for a little latency.
    pub linger: Duration,
    /// How often the status line is logged.
    pub report_every: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            queue_url: "nats://127.0.0.1:4222".into(),
            queue_auth: crate::QueueAuth::default(),
            central_url: "sqlite:data/central.db".into(),
            central_schema: cart_central::SchemaPolicy::Migrate,
            batch: 500,
            linger: Duration::from_millis(10),
            report_every: Duration::from_secs(5),
        }
    }
}

/// What a relay has done, for `/metrics` and its status line.
pub struct RelayStats {
    registry: Registry,
    /// Events central applied (each once, whichever relay did it).
    pub applied: Counter,
    /// Messages central had applied before: acknowledged without effect.
    pub duplicates: Counter,
    /// Times a message was put back to wait for an earlier event of its edge, or its claim.
    pub waiting: Counter,
    /// Unreadable messages.
    pub dropped: Counter,
    /// Messages whose signature no key of their history made: forged or corrupt, set aside.
    pub rejected: Counter,
    /// Central transactions committed.
    pub transactions: Counter,
    /// Central transactions, and edges' batches in them, that failed (their messages went back
    /// to the stream).
    pub failures: Counter,
    /// Messages in the stream not yet acknowledged by any relay.
    pub lag: Gauge,
}

impl Default for RelayStats {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cart_relay");
        let stats = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let applied = stats(&mut registry, "events_applied", "Events applied to central");
        let duplicates = stats(
            &mut registry,
            "duplicates",
            "Messages already applied to central, acknowledged without effect",
        );
        let waiting = stats(
            &mut registry,
            "waiting",
            "Times a message was put back to wait for an earlier event of its edge, or its claim",
        );
        let dropped = stats(&mut registry, "dropped", "Unreadable messages, set aside");
        let rejected = stats(
            &mut registry,
            "rejected",
            "Messages no key of their history signed (forged or corrupt), set aside",
        );
        let transactions = stats(
            &mut registry,
            "transactions",
            "Central transactions committed",
        );
        let failures = stats(
            &mut registry,
            "failures",
            "Central transactions, and edges' batches in them, that failed; their messages went \
             back to the stream",
        );
        let lag = Gauge::default();
        registry.register(
            "lag_messages",
            "Messages in the stream no relay has acknowledged yet",
            lag.clone(),
        );
        Self {
            registry,
            applied,
            duplicates,
            waiting,
            dropped,
            rejected,
            transactions,
            failures,
            lag,
        }
    }
}

impl RelayStats {
    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Runs a relay until `shutdown` turns true; the batch in hand is finished first.
pub async fn run(
    config: RelayConfig,
    stats: Arc<RelayStats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // One transaction at a time: one connection.
    let central = Central::connect_with(&config.central_url, 1, config.central_schema).await?;
    let client = connect(&config.queue_url, "cart-relay", &config.queue_auth).await?;
    let js = jetstream::new(client);
    let mut report = Report::new();
    let mut keys = Keys::default();
    while !*shutdown.borrow() {
        let consumer = match consumer(&js).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the outbox stream is not reachable, retrying: {e:#}");
                pause(Duration::from_secs(1), &mut shutdown).await;
                continue;
            }
        };
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(config.batch)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(m) => Box::pin(m.chunks_timeout(config.batch, config.linger)),
            Err(e) => {
                tracing::warn!("cannot consume the outbox stream, retrying: {e}");
                pause(Duration::from_secs(1), &mut shutdown).await;
                continue;
            }
        };
        let mut ticker = tokio::time::interval(config.report_every);
        loop {
            tokio::select! {
                chunk = messages.next() => {
                    let Some(chunk) = chunk else { break };
                    let mut readable = Vec::with_capacity(chunk.len());
                    for m in chunk {
                        match m {
                            Ok(m) => readable.push(m),
                            // Heartbeats missed while the server is away: the stream resumes
                            // when it is back.
                            Err(e) => tracing::warn!("the outbox stream: {e}"),
                        }
                    }
                    apply(&central, &mut keys, readable, &stats).await;
                }
                _ = ticker.tick() => {
                    let mut info = consumer.clone();
                    if let Ok(info) = info.info().await {
                        let lag = info.num_pending + info.num_ack_pending as u64;
                        stats.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
                    }
                    report.log(&stats);
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
        tracing::warn!("the outbox stream's consumer ended; subscribing again");
    }
    Ok(())
}

/// The relays' durable consumer, made if missing.
async fn consumer(js: &jetstream::Context) -> anyhow::Result<PullConsumer> {
    let stream = ensure_stream(js).await?;
    Ok(stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                description: Some("cart-host relays: outbox events into central".into()),
                ack_policy: AckPolicy::Explicit,
                // A relay that took messages and died: they are delivered again after this.
                ack_wait: Duration::from_secs(10),
                max_ack_pending: 50_000,
                ..Default::default()
            },
        )
        .await?)
}

async fn pause(period: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = shutdown.changed() => {}
    }
}

/// Applies what a batch of messages holds, then settles each message by what central did.
async fn apply(
    central: &Central,
    keys: &mut Keys,
    messages: Vec<jetstream::Message>,
    stats: &RelayStats,
) {
    let mut events: BTreeMap<(String, String), BTreeMap<i64, Delivery>> = BTreeMap::new();
    let mut keyed = Vec::with_capacity(messages.len());
    for m in messages {
        let e = match serde_json::from_slice::<Envelope>(&m.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("an unreadable message in the outbox stream, set aside: {e}");
                stats.dropped.inc();
                settle(&m, AckKind::Term).await;
                continue;
            }
        };
        match keys.signed(central, &e).await {
            Ok(Some(true)) => {
                let key = (e.edge_id.clone(), e.history_id.clone());
                events
                    .entry(key.clone())
                    .or_default()
                    .insert(e.seq, e.delivery());
                keyed.push((key, e.seq, m));
            }
            Ok(Some(false)) => {
                tracing::error!(
                    "a message in the outbox stream as edge {}'s event {} of history {}, which no \
                     key of that history signed (forged or corrupt): set aside",
                    e.edge_id,
                    e.seq,
                    e.history_id
                );
                stats.rejected.inc();
                settle(&m, AckKind::Term).await;
            }
            Ok(None) => {
                tracing::warn!(
                    "edge {}: central knows no history {} yet; its event {} waits for the \
                     edge's claim",
                    e.edge_id,
                    e.history_id,
                    e.seq
                );
                stats.waiting.inc();
                settle(&m, AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
            Err(err) => {
                tracing::warn!(
                    "reading history {}'s keys from central: {err}",
                    e.history_id
                );
                stats.failures.inc();
                settle(&m, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }
    if keyed.is_empty() {
        return;
    }
    let batches: Vec<EdgeBatch> = events
        .into_iter()
        .map(|((edge_id, history_id), events)| EdgeBatch {
            edge_id,
            history_id,
            events: events.into_values().collect(),
        })
        .collect();
    let outcomes = match central.apply_batches(&batches).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(
                "central did not take {} events, back to the stream: {e}",
                keyed.len()
            );
            stats.failures.inc();
            for (_, _, m) in &keyed {
                settle(m, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            return;
        }
    };
    stats.transactions.inc();
    let mut acknowledged = 0;
    for (batch, outcome) in batches.iter().zip(&outcomes) {
        if let Applied::Marks(m) = outcome {
            stats
                .applied
                .inc_by(u64::try_from(m.after - m.before).unwrap_or(0));
            acknowledged -= m.after - m.before;
        }
        if let Applied::Failed(why) = outcome {
            tracing::warn!(
                "edge {}: central refused its events {}..={}, back to the stream: {why}",
                batch.edge_id,
                batch.events.first().map_or(0, |d| d.seq),
                batch.events.last().map_or(0, |d| d.seq),
            );
            stats.failures.inc();
        }
    }
    let outcomes: HashMap<(&str, &str), &Applied> = batches
        .iter()
        .zip(&outcomes)
        .map(|(b, outcome)| ((b.edge_id.as_str(), b.history_id.as_str()), outcome))
        .collect();
    for ((edge_id, history_id), seq, m) in &keyed {
        match outcomes[&(edge_id.as_str(), history_id.as_str())] {
            Applied::Marks(mark) if *seq <= mark.after => {
                acknowledged += 1;
                settle(m, AckKind::Ack).await;
            }
            Applied::Marks(_) => {
                stats.waiting.inc();
                settle(m, AckKind::Nak(Some(Duration::from_millis(100)))).await;
            }
            Applied::Unknown => {
                tracing::warn!(
                    "edge {edge_id}: central knows no history {history_id} yet; its event {seq} \
                     waits for the edge's claim"
                );
                stats.waiting.inc();
                settle(m, AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
            Applied::Failed(_) => {
                settle(m, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }
    // Acknowledged without being applied now: applied before (a redelivery, or a copy).
    stats
        .duplicates
        .inc_by(u64::try_from(acknowledged).unwrap_or(0));
}

/// The keys of the histories this relay has seen (see [`cart_central::events`]), read from
/// central when a history is new here or a message is signed by a key not read yet.
#[derive(Default)]
pub struct Keys(HashMap<String, Vec<String>>);

impl Keys {
    /// Whether one of its history's keys signed the message; `None` when central does not know
    /// the history (yet).
    async fn signed(
        &mut self,
        central: &Central,
        envelope: &Envelope,
    ) -> Result<Option<bool>, CentralError> {
        let delivery = envelope.delivery();
        let history = &envelope.history_id;
        let by = |keys: &[String]| keys.iter().any(|k| verify(k, history, &delivery));
        if self.0.get(history).is_some_and(|keys| by(keys)) {
            return Ok(Some(true));
        }
        let keys = central.history_keys(history).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let signed = by(&keys);
        self.0.insert(history.clone(), keys);
        Ok(Some(signed))
    }
}

/// Tells the server what became of a message. A lost acknowledgement only means it is
/// delivered again, and then found applied.
async fn settle(m: &jetstream::Message, kind: AckKind) {
    if let Err(e) = m.ack_with(kind).await {
        tracing::warn!("acknowledging a message: {e}");
    }
}

/// The status line: what was done since the last one.
struct Report {
    since: Instant,
    applied: u64,
    transactions: u64,
}

impl Report {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            applied: 0,
            transactions: 0,
        }
    }

    fn log(&mut self, stats: &RelayStats) {
        let (applied, transactions) = (stats.applied.get(), stats.transactions.get());
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            "relay: {} events applied in {} central transactions ({:.0}/s); lag {} messages; \
             {} duplicates, {} waiting for an earlier event, {} unreadable and {} unsigned set \
             aside, {} failed transactions",
            applied - self.applied,
            transactions - self.transactions,
            (applied - self.applied) as f64 / secs,
            stats.lag.get(),
            stats.duplicates.get(),
            stats.waiting.get(),
            stats.dropped.get(),
            stats.rejected.get(),
            stats.failures.get(),
        );
        *self = Self {
            since: Instant::now(),
            applied,
            transactions,
        };
    }
}
