//! Outbox events as stored on the edge and applied by central: JSON, one object per event;
//! and their signatures. The process that serves an edge id holds an ed25519 key of its own,
//! registered with its claim. Central applies only events a key of the event's history vouches
//! for ([`Sender`]): delivered straight, the process's own key, checked once a batch; through
//! the queue and a relay, each event's signature by that key.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxEvent {
    /// The held quantity of a SKU in a cart is now `quantity` (0: released).
    HoldChanged {
        cart_id: String,
        customer_id: String,
        sale_id: String,
        sku: String,
        quantity: u32,
        expires_at: i64,
    },
    /// A cart became an order; its holds are now sales.
    OrderPlaced(Order),
}

/// An order: a checked-out cart's lines, sold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub cart_id: String,
    pub customer_id: String,
    pub lines: Vec<EventLine>,
    pub total_cents: i64,
    pub placed_at: i64,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub sale_id: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

impl OutboxEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HoldChanged { .. } => "hold_changed",
            Self::OrderPlaced(_) => "order_placed",
        }
    }
}

/// One outbox row on its way to central.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: i64,
    pub event: OutboxEvent,
    /// Base64 ed25519 signature over [`signed_bytes`], by the process that serves the history:
    /// what a row that passed through other hands (the queue) carries. A row the process
    /// delivers itself goes without one (see [`Sender::Process`]).
    pub signature: Option<String>,
}

impl Delivery {
    /// Row `seq`, for its own process to deliver: unsigned.
    pub fn unsigned(seq: i64, event: OutboxEvent) -> Self {
        Self {
            seq,
            event,
            signature: None,
        }
    }
}

/// What shows central that a batch of outbox rows comes from the process that serves their
/// history.
#[derive(Clone, Copy, Debug)]
pub enum Sender<'a> {
    /// Each row's own signature, checked against the history's keys: rows that passed through
    /// other hands (the queue and a relay).
    Signatures,
    /// The process itself, over its own connection to central: its key is checked against the
    /// history's keys once for the batch. It could sign each row with that key; checking, in
    /// the same process, signatures it has just made would prove nothing more, at the cost of
    /// an ed25519 signature and its verification for every event.
    Process(&'a EventKey),
}

/// An event's digest: the SHA-256 (hex) of its JSON as this crate writes it. Central keeps it
/// for each event it applies, so an edge can tell its own events from another's.
pub fn digest(event: &OutboxEvent) -> String {
    // Serializing a value of these plain types cannot fail.
    let json = serde_json::to_vec(event).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

/// What a signature covers: the history, the sequence number and the event's digest.
pub fn signed_bytes(history_id: &str, seq: i64, digest: &str) -> Vec<u8> {
    format!("cart-outbox-v1\n{history_id}\n{seq}\n{digest}").into_bytes()
}

/// A process's key for its outbox events.
pub struct EventKey(SigningKey);

impl EventKey {
    /// A new key, for this process only.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self(SigningKey::from_bytes(&secret))
    }

    /// The public key as central records it (base64).
    pub fn public_key(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.verifying_key().as_bytes())
    }

    /// The event, signed as row `seq` of `history_id`.
    pub fn sign(&self, history_id: &str, seq: i64, event: OutboxEvent) -> Delivery {
        Delivery {
            seq,
            signature: Some(self.signature(history_id, seq, &event)),
            event,
        }
    }

    /// The signature (base64) of the event as row `seq` of `history_id`.
    pub fn signature(&self, history_id: &str, seq: i64, event: &OutboxEvent) -> String {
        let signature = self.0.sign(&signed_bytes(history_id, seq, &digest(event)));
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }
}

impl std::fmt::Debug for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventKey({})", self.public_key())
    }
}

/// Whether `delivery` was signed, as row of `history_id`, by the key `public_key` (base64).
pub fn verify(public_key: &str, history_id: &str, delivery: &Delivery) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(public_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok());
    let signature = delivery
        .signature
        .as_ref()
        .and_then(|s| b64.decode(s).ok())
        .and_then(|s| Signature::from_slice(&s).ok());
    match (key, signature) {
        (Some(key), Some(signature)) => key
            .verify(
                &signed_bytes(history_id, delivery.seq, &digest(&delivery.event)),
                &signature,
            )
            .is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(quantity: u32) -> OutboxEvent {
        OutboxEvent::HoldChanged {
            cart_id: "c_1".into(),
            customer_id: "ann".into(),
            sale_id: "s".into(),
            sku: "A".into(),
            quantity,
            expires_at: 5,
        }
    }

    #[test]
    fn only_the_key_of_the_history_signs_its_events() {
        let (key, other) = (EventKey::generate(), EventKey::generate());
        let signed = key.sign("h-1", 7, hold(2));
        assert!(verify(&key.public_key(), "h-1", &signed));
        assert!(!verify(&other.public_key(), "h-1", &signed), "another key");
        assert!(
            !verify(&key.public_key(), "h-2", &signed),
            "another history"
        );
        let moved = Delivery {
            seq: 8,
            ..signed.clone()
        };
        assert!(!verify(&key.public_key(), "h-1", &moved), "another row");
        let changed = Delivery {
            event: hold(3),
            ..signed.clone()
        };
        assert!(!verify(&key.public_key(), "h-1", &changed), "another event");
        let empty = Delivery {
            signature: Some(String::new()),
            ..signed.clone()
        };
        assert!(!verify(&key.public_key(), "h-1", &empty));
        let unsigned = Delivery {
            signature: None,
            ..signed
        };
        assert!(!verify(&key.public_key(), "h-1", &unsigned));
        assert!(!verify("not a key", "h-1", &unsigned));
    }
}
