//! The outbox: an edge's events, from the process that serves its history (vouched for by its
//! key), applied once, in sequence, and their digests.

use std::collections::{BTreeMap, BTreeSet};

use super::units::{counting, is_retired_name};
use crate::db::{Dialect, Row, Statement, Tx, params};
use crate::events::{self, Delivery, Order, OutboxEvent};
use crate::time::Millis;
use crate::{CentralError, Marks};

/// Applies a batch of an edge's outbox in one transaction: each event after the history's
/// high-water mark, strictly in sequence (a gap stops the batch there), once, if a key of the
/// history vouches for it: `process`, the public key of the process that delivers the batch
/// itself, or else each row's signature (see [`events::Sender`]). A history a take-over wrote
/// off still applies what its process delivers, under its retired id: the orders it took
/// before its lease lapsed are real. The mark before and after.
pub fn apply(
    tx: &mut dyn Tx,
    edge_id: &str,
    history_id: &str,
    batch: &[Delivery],
    process: Option<&str>,
    now: Millis,
) -> Result<Marks, CentralError> {
    // Read in one round trip: the history's row, whose lock orders its batches (a redelivery
    // waits, then skips), its keys, and the holds of the batch's carts.
    let mut reads = vec![
        (
            "UPDATE edges SET last_seen = $2 WHERE history_id = $1 \
             RETURNING edge_id, high_water",
            params![history_id, now].to_vec(),
        ),
        (HISTORY_KEYS, params![history_id].to_vec()),
    ];
    reads.extend(Effect::reads(tx.dialect(), batch));
    let mut answers = tx.query_all(&reads)?.into_iter();
    let row = answers
        .next()
        .and_then(|rows| rows.into_iter().next())
        .ok_or_else(|| CentralError::UnknownEdge(edge_id.to_owned()))?;
    let (name, mark) = (row.text(0)?, row.int(1)?);
    if name != edge_id && !is_retired_name(&name, edge_id) {
        return Err(CentralError::UnknownEdge(edge_id.to_owned()));
    }
    let keys = answers
        .next()
        .unwrap_or_default()
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<Vec<_>, _>>()?;
    let mut effect = Effect::new(answers.flatten())?;
    // A process that is not the history's is refused whatever its batch holds: even one that
    // central has applied already, or that starts past a gap, tells central nothing.
    if let Some(key) = process
        && !keys.iter().any(|k| k == key)
    {
        return Err(CentralError::BadSignature {
            edge_id: edge_id.to_owned(),
            seq: batch.first().map_or(mark, |d| d.seq),
        });
    }
    let mut fresh = Vec::new();
    for d in batch.iter().filter(|d| d.seq > mark) {
        if d.seq != mark + 1 + fresh.len() as i64 {
            break;
        }
        let vouched =
            process.is_some() || keys.iter().any(|key| events::verify(key, history_id, d));
        if !vouched {
            return Err(CentralError::BadSignature {
                edge_id: edge_id.to_owned(),
                seq: d.seq,
            });
        }
        fresh.push(d);
    }
    let Some(last) = fresh.last() else {
        return Ok(Marks {
            before: mark,
            after: mark,
        });
    };
    let high = last.seq;
    let digests: Vec<String> = fresh.iter().map(|d| events::digest(&d.event)).collect();
    let mut writes = Vec::new();
    for (d, digest) in fresh.iter().zip(&digests) {
        writes.push((
            "INSERT INTO applied_events (edge_id, seq, kind, applied_at, digest) \
             VALUES ($1, $2, $3, $4, $5)",
            params![&name, d.seq, d.event.kind(), now, digest].to_vec(),
        ));
        effect.apply(&name, &d.event, &mut writes);
    }
    effect.write(&mut writes);
    writes.push((
        "UPDATE edges SET high_water = $2 WHERE history_id = $1",
        params![history_id, high].to_vec(),
    ));
    tx.exec_all(&writes)?;
    Ok(Marks {
        before: mark,
        after: high,
    })
}

/// The digests of the events of `history_id` central applied with sequence numbers `from` to
/// `to`, in order.
pub fn applied_digests(
    tx: &mut dyn Tx,
    history_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String)>, CentralError> {
    tx.query(
        "SELECT a.seq, a.digest FROM applied_events a JOIN edges e ON e.edge_id = a.edge_id \
         WHERE e.history_id = $1 AND a.seq >= $2 AND a.seq <= $3 ORDER BY a.seq",
        params![history_id, from, to],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.text(1)?)))
    .collect()
}

const HISTORY_KEYS: &str =
    "SELECT public_key FROM history_keys WHERE history_id = $1 ORDER BY public_key";

/// The keys of the processes that have served `history_id` (none: central does not know it).
pub fn history_keys(tx: &mut dyn Tx, history_id: &str) -> Result<Vec<String>, CentralError> {
    tx.query(HISTORY_KEYS, params![history_id])?
        .iter()
        .map(|r| r.text(0))
        .collect()
}

/// A cart's hold of a SKU: (cart, sale, SKU).
type HoldKey = (String, String, String);

/// A hold as central books it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hold {
    edge_id: String,
    customer_id: String,
    quantity: i64,
    expires_at: i64,
}

/// What a batch of events does to central's books, worked out in memory from the holds
/// central has for the batch's carts, each event in turn as statements one at a time would,
/// then written in one pipeline. A batch costs central a few round trips, not a few for each
/// of its events: 80 ms from central, over a thousand events a second against 2 (BENCHMARKS.md).
struct Effect {
    /// Every hold of the batch's carts, as central has them before the batch.
    before: BTreeMap<HoldKey, Hold>,
    /// The same, as the batch leaves them.
    holds: BTreeMap<HoldKey, Hold>,
    /// Units each edge holds and sold, moved: by (edge, sale, SKU).
    counts: BTreeMap<(String, String, String), (i64, i64)>,
}

impl Effect {
    /// The queries for the holds of every cart the batch names, each answer's rows for
    /// [`Effect::new`].
    fn reads(dialect: Dialect, batch: &[Delivery]) -> Vec<Statement<'_>> {
        let carts: BTreeSet<&str> = batch
            .iter()
            .map(|d| match &d.event {
                OutboxEvent::HoldChanged { cart_id, .. } => cart_id.as_str(),
                OutboxEvent::OrderPlaced(order) => order.cart_id.as_str(),
            })
            .collect();
        // Locked until the batch commits, as the deletes one at a time locked them: another
        // transaction releasing one of these holds waits, then finds it gone. (SQLite has one
        // writer at a time.)
        let sql = match dialect {
            Dialect::Postgres => {
                "SELECT cart_id, sale_id, sku, edge_id, customer_id, quantity, expires_at \
                 FROM holds WHERE cart_id = $1 FOR UPDATE"
            }
            Dialect::Sqlite => {
                "SELECT cart_id, sale_id, sku, edge_id, customer_id, quantity, expires_at \
                 FROM holds WHERE cart_id = $1"
            }
        };
        carts
            .into_iter()
            .map(|cart| (sql, params![cart].to_vec()))
            .collect()
    }

    fn new(rows: impl Iterator<Item = Row>) -> Result<Self, CentralError> {
        let mut before = BTreeMap::new();
        for row in rows {
            before.insert(
                (row.text(0)?, row.text(1)?, row.text(2)?),
                Hold {
                    edge_id: row.text(3)?,
                    customer_id: row.text(4)?,
                    quantity: row.int(5)?,
                    expires_at: row.int(6)?,
                },
            );
        }
        Ok(Self {
            holds: before.clone(),
            before,
            counts: BTreeMap::new(),
        })
    }

    /// One event of `edge_id`'s: its holds in memory, its order's rows to `writes`.
    fn apply<'a>(
        &mut self,
        edge_id: &'a str,
        event: &'a OutboxEvent,
        writes: &mut Vec<Statement<'a>>,
    ) {
        match event {
            OutboxEvent::HoldChanged {
                cart_id,
                customer_id,
                sale_id,
                sku,
                quantity,
                expires_at,
            } => {
                let key = (cart_id.clone(), sale_id.clone(), sku.clone());
                self.release(&key);
                if *quantity > 0 {
                    self.count(edge_id, sale_id, sku, i64::from(*quantity), 0);
                    self.holds.insert(
                        key,
                        Hold {
                            edge_id: edge_id.to_owned(),
                            customer_id: customer_id.clone(),
                            quantity: i64::from(*quantity),
                            expires_at: *expires_at,
                        },
                    );
                }
            }
            OutboxEvent::OrderPlaced(Order {
                order_id,
                cart_id,
                customer_id,
                lines,
                total_cents,
                placed_at,
            }) => {
                writes.push((
                    "INSERT INTO orders (order_id, edge_id, cart_id, customer_id, total_cents, placed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    params![order_id, edge_id, cart_id, customer_id, *total_cents, *placed_at]
                        .to_vec(),
                ));
                // The cart's holds became this order.
                let held: Vec<HoldKey> = self
                    .holds
                    .keys()
                    .filter(|(cart, _, _)| cart == cart_id)
                    .cloned()
                    .collect();
                for key in &held {
                    self.release(key);
                }
                for l in lines {
                    writes.push((
                        "INSERT INTO order_lines (order_id, sale_id, sku, quantity, unit_price_cents) \
                         VALUES ($1, $2, $3, $4, $5)",
                        params![order_id, &l.sale_id, &l.sku, l.quantity, l.unit_price_cents]
                            .to_vec(),
                    ));
                    self.count(edge_id, &l.sale_id, &l.sku, 0, i64::from(l.quantity));
                }
            }
        }
    }

    /// Takes a cart's hold of a SKU off the books, if there is one, and off its edge's count.
    fn release(&mut self, key: &HoldKey) {
        if let Some(hold) = self.holds.remove(key) {
            self.count(&hold.edge_id, &key.1, &key.2, -hold.quantity, 0);
        }
    }

    fn count(&mut self, edge_id: &str, sale_id: &str, sku: &str, held: i64, sold: i64) {
        let moved = self
            .counts
            .entry((edge_id.to_owned(), sale_id.to_owned(), sku.to_owned()))
            .or_default();
        moved.0 += held;
        moved.1 += sold;
    }

    /// The holds that changed and the edges' counts, to `writes`: each edge's counters of a
    /// SKU moved once by the batch's sum (see `edge_units` in the schema, whose CHECK refuses
    /// holding and selling more than was allotted).
    fn write<'a>(&'a self, writes: &mut Vec<Statement<'a>>) {
        for (key @ (cart, sale, sku), hold) in &self.before {
            if self.holds.get(key) != Some(hold) {
                writes.push((
                    "DELETE FROM holds WHERE cart_id = $1 AND sale_id = $2 AND sku = $3",
                    params![cart, sale, sku].to_vec(),
                ));
            }
        }
        for (key @ (cart, sale, sku), hold) in &self.holds {
            if self.before.get(key) != Some(hold) {
                writes.push((
                    "INSERT INTO holds (cart_id, sale_id, sku, edge_id, customer_id, quantity, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    params![
                        cart,
                        sale,
                        sku,
                        &hold.edge_id,
                        &hold.customer_id,
                        hold.quantity,
                        hold.expires_at
                    ]
                    .to_vec(),
                ));
            }
        }
        for ((edge, sale, sku), &(held, sold)) in &self.counts {
            if (held, sold) == (0, 0) {
                continue;
            }
            writes.extend(counting(edge, sale, sku, [0, held, sold]));
        }
    }
}
