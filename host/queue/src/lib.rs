//! The optional queue between the edges and central, on NATS JetStream.
//!
//! Each edge publishes its outbox to one stream ([`Publisher`]) instead of writing to central; a
//! row counts as delivered once JetStream has stored it. Relays ([`relay`]) consume the stream
//! with one durable consumer and apply the events to central in batches, with the same
//! exactly-once function and high-water marks as the direct path, acknowledging messages only
//! after central has committed them.
//!
//! Only the outbox goes through the queue. Grants, returns, claims and leases stay requests to
//! central: a shopper waits for a grant's answer, which a queue cannot give within 250 ms. An
//! edge in queue mode therefore needs one central connection, not a pool.
//!
//! The stream, as the project sets it:
//!
//! | setting | value | why |
//! |---|---|---|
//! | name, subject | `CART_OUTBOX`, `cart.outbox` | one stream for the fleet; the edge is named in each message |
//! | retention | work queue | a message is gone once a relay has applied and acknowledged it |
//! | storage | file | a restarted `nats-server` still has what it acknowledged |
//! | limits | 10,000,000 messages, 1 GiB | a backlog of hours of a noon rush |
//! | discard | new | a full stream refuses a publish (the edge reports it and keeps the row), never drops a stored event |
//! | duplicate window | 10 minutes | a row published again after a lost acknowledgement is stored once |
//! | replicas | 1 | Debian's single server; a clustered `nats-server` takes 3 (`nats stream edit`) |

// Server code answers errors; it does not panic on them.
#![warn(clippy::expect_used)]

pub mod relay;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use cart_central::events::{Delivery, EventKey, OutboxEvent};
use serde::{Deserialize, Serialize};

pub const STREAM: &str = "CART_OUTBOX";
pub const SUBJECT: &str = "cart.outbox";
/// The relays' one durable consumer: they share its messages between them.
pub const CONSUMER: &str = "cart-relay";

/// The stream's definition (see the crate's documentation).
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        description: Some("flash-sale edges' outbox events on their way to central".into()),
        subjects: vec![SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        max_messages: 10_000_000,
        max_bytes: 1 << 30,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(600),
        num_replicas: 1,
        ..Default::default()
    }
}

/// One outbox row as the stream stores it, signed by the edge process that published it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub edge_id: String,
    /// The edge's data folder history the row belongs to.
    pub history_id: String,
    pub seq: i64,
    pub event: OutboxEvent,
    /// See [`cart_central::events::Delivery::signature`].
    pub signature: String,
}

impl Envelope {
    /// JetStream's de-duplication key: one per row of one history, as one process signed it.
    /// It ends in the signature, which no one without the process's key can make, so a message
    /// someone else published first under the same row cannot make the real one a duplicate.
    pub fn message_id(&self) -> String {
        let signed: String = self.signature.chars().take(24).collect();
        format!("{}/{}/{}/{signed}", self.edge_id, self.history_id, self.seq)
    }

    /// The row as central applies it.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            seq: self.seq,
            event: self.event.clone(),
            signature: Some(self.signature.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("NATS {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("the NATS credentials: {0}")]
    Creds(std::io::Error),
    #[error("the NATS server is unreachable; the outbox waits for it")]
    Unreachable,
    #[error("JetStream stream {STREAM}: {0}")]
    Stream(String),
    #[error("publishing outbox event {seq} to JetStream: {why}")]
    Publish { seq: i64, why: String },
    #[error("outbox event {seq}: {why}")]
    Encode { seq: i64, why: String },
}

/// How to reach NATS beyond its URL: the roots its TLS certificate is checked against, and the
/// credentials it asks for. A `tls://` URL, or roots given, make TLS required.
#[derive(Clone, Default)]
pub struct QueueAuth {
    /// PEM roots to check the server's certificate against (else the system's).
    pub ca: Option<PathBuf>,
    /// A user name and password.
    pub user: Option<(String, String)>,
    /// A credentials file's text.
    pub creds: Option<Creds>,
}

/// A NATS credentials file's text (`.creds`): a user's JWT and the seed of the key that signs
/// the server's challenge. Checked when read, so that a damaged file stops a start, not every
/// connection after it.
#[derive(Clone)]
pub struct Creds(String);

impl Creds {
    pub fn parse(text: String) -> std::io::Result<Self> {
        async_nats::ConnectOptions::new().credentials(&text)?;
        Ok(Self(text))
    }
}

impl std::fmt::Debug for QueueAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueAuth")
            .field("ca", &self.ca)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field(
                "creds",
                &self.creds.as_ref().map(|_| "(a credentials file)"),
            )
            .finish()
    }
}

/// Connects to NATS, retrying in the background while the server is away. A first attempt is
/// made on its own, so that what stops it (a certificate, a password) is logged with its cause:
/// the background retries only say what kind of error each one met.
pub async fn connect(
    url: &str,
    name: &str,
    auth: &QueueAuth,
) -> Result<async_nats::Client, QueueError> {
    let options = || {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None)
            // A restarted server is found again within a second.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * u64::try_from(attempts).unwrap_or(10).min(10))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::ServerError(e) => tracing::warn!("NATS refused: {e}"),
                    async_nats::Event::ClientError(e) => tracing::warn!("NATS: {e}"),
                    _ => {}
                }
            });
        if let Some((user, password)) = &auth.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(Creds(text)) = &auth.creds {
            options = options.credentials(text).map_err(QueueError::Creds)?;
        }
        if let Some(ca) = &auth.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok::<_, QueueError>(options)
    };
    match options()?.connect(url).await {
        Ok(client) => return Ok(client),
        Err(e) => tracing::warn!(
            "NATS {}: {}; trying again in the background",
            cart_central::redacted(url),
            cart_central::with_causes(&e)
        ),
    }
    options()?
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|source| QueueError::Connect {
            url: cart_central::redacted(url),
            source,
        })
}

/// Creates the stream unless it is there. One that is there may have other limits, but not
/// settings that would lose events: it must drop a message only once it is acknowledged, and
/// refuse new ones when full.
pub async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream, QueueError> {
    let stream = js
        .get_or_create_stream(stream_config())
        .await
        .map_err(|e| QueueError::Stream(e.to_string()))?;
    let config = &stream.cached_info().config;
    if config.retention != stream::RetentionPolicy::WorkQueue
        || config.discard != stream::DiscardPolicy::New
    {
        return Err(QueueError::Stream(format!(
            "it has retention {:?} and discard {:?}; the outbox needs a work queue that refuses \
             new messages when full (retention workqueue, discard new): it would lose events",
            config.retention, config.discard
        )));
    }
    Ok(stream)
}

/// An edge's side of the queue: publishes its outbox rows in order, each stored once.
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    edge_id: String,
    stream: tokio::sync::OnceCell<()>,
}

impl Publisher {
    /// Connects in the background: the edge starts (and sells) while the server is away.
    pub async fn connect(url: &str, auth: &QueueAuth, edge_id: &str) -> Result<Self, QueueError> {
        let client = connect(url, &format!("cart-edge {edge_id}"), auth).await?;
        Ok(Self {
            js: jetstream::context::ContextBuilder::new()
                .timeout(Duration::from_secs(5))
                .build(client.clone()),
            client,
            edge_id: edge_id.to_owned(),
            stream: tokio::sync::OnceCell::new(),
        })
    }

    /// Publishes `batch` (consecutive rows), each signed with `key`, in order and waits until
    /// JetStream has stored each one. The seq of the last row of the unbroken run stored from
    /// the start (`None`: not even the first), and the error that stopped the rest, if any. A
    /// row stored before (the same message id within the duplicate window) counts as stored.
    pub async fn publish(
        &self,
        history_id: &str,
        key: &EventKey,
        batch: &[Delivery],
    ) -> (Option<i64>, Option<QueueError>) {
        // Said at once, rather than after an acknowledgement's timeout.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return (None, Some(QueueError::Unreachable));
        }
        if let Err(e) = self
            .stream
            .get_or_try_init(|| async { ensure_stream(&self.js).await.map(drop) })
            .await
        {
            return (None, Some(e));
        }
        // Sent back to back, on one connection, so the server stores them in this order;
        // then each acknowledgement is awaited in turn.
        let mut pending = Vec::with_capacity(batch.len());
        let mut failure = None;
        for d in batch {
            let envelope = Envelope {
                edge_id: self.edge_id.clone(),
                history_id: history_id.to_owned(),
                seq: d.seq,
                event: d.event.clone(),
                signature: key.signature(history_id, d.seq, &d.event),
            };
            let payload = match serde_json::to_vec(&envelope) {
                Ok(p) => p,
                Err(e) => {
                    failure = Some(QueueError::Encode {
                        seq: d.seq,
                        why: e.to_string(),
                    });
                    break;
                }
            };
            let message = PublishMessage::build()
                .payload(payload.into())
                .message_id(envelope.message_id());
            match self.js.send_publish(SUBJECT, message).await {
                Ok(ack) => pending.push((d.seq, ack)),
                Err(e) => {
                    failure = Some(QueueError::Publish {
                        seq: d.seq,
                        why: e.to_string(),
                    });
                    break;
                }
            }
        }
        let mut stored = None;
        for (seq, ack) in pending {
            match ack.await {
                Ok(_) => stored = Some(seq),
                Err(e) => {
                    // Later rows may be stored too; the relay waits for this one before them.
                    return (
                        stored,
                        Some(QueueError::Publish {
                            seq,
                            why: e.to_string(),
                        }),
                    );
                }
            }
        }
        (stored, failure)
    }
}
