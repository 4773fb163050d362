//! What a shopper's request does, between the HTTP handler and the writer: each cart operation
//! as one writer job (or one read), on the rules active when it was asked, and the escrow policy
//! around a shortage (ask central for units before a shopper is told `sold_out`).

use std::sync::Arc;

use cart_central::SkuKey;
use cart_rules::CartError;

use crate::asked::Noting;
use crate::carts::{self, CartFailure, CartView, Order, SetQuantity};
use crate::edge::Edge;
use crate::escrow::AfterShortage;
use crate::ids;
use crate::store::writer::WriteError;

/// Grant attempts per request after a shortage.
const SHORTAGE_RETRIES: usize = 2;

/// Why a shopper's request got no answer from the cart store.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    #[error(transparent)]
    Cart(#[from] CartFailure),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("reading the edge database: {0:#}")]
    Read(anyhow::Error),
    #[error("this edge is not selling: {0}")]
    NotSelling(String),
}

/// Refuses changes while the edge may not sell (see [`crate::identity::Standing`]), and once
/// its lease has run out (see [`crate::identity`]).
fn selling(edge: &Edge) -> Result<(), ShopError> {
    if let Some(why) = edge.standing().refusal() {
        return Err(ShopError::NotSelling(why));
    }
    if !edge.identity.holds_lease() {
        return Err(ShopError::NotSelling(crate::edge::NO_LEASE.into()));
    }
    Ok(())
}

/// An answer, and the version of the rules that gave it.
pub struct Served<T> {
    pub value: T,
    pub module: String,
}

/// A new cart, and the token the shopper proves it with.
pub async fn create(
    edge: &Edge,
    customer_id: String,
) -> Result<(Served<CartView>, String), ShopError> {
    selling(edge)?;
    let cart_id = edge.fleet.new_cart_id();
    let token = edge.fleet.new_token(&cart_id);
    let (hash, now) = (ids::token_hash(&token), edge.clock.now());
    let module = edge.rules.get().version().to_owned();
    let view = edge
        .writer
        .run(move |c| carts::create(c, &cart_id, &customer_id, &hash, now))
        .await??;
    Ok((
        Served {
            value: view,
            module,
        },
        token,
    ))
}

/// A cart, read from the last commit without waiting for the writer, on the request's own
/// thread (it is a read by key), and answered once what it shows is on disk.
pub async fn get(
    edge: &Edge,
    cart_id: &str,
    token_hash: &str,
) -> Result<Served<CartView>, ShopError> {
    let module = edge.rules.get().version().to_owned();
    let cart = edge
        .read_here(|c| carts::load_authorized(c, cart_id, token_hash))
        .await
        .map_err(ShopError::Read)??;
    Ok(Served {
        value: cart.view(),
        module,
    })
}

/// Sets a line's quantity. When the rules find too few units here, the edge asks central for
/// more (the request is authentic and within the customer's limit by then) and tries again.
pub async fn set_quantity(
    edge: &Arc<Edge>,
    ask: SetQuantity,
) -> Result<Served<CartView>, ShopError> {
    selling(edge)?;
    let key = edge
        .catalog()
        .sku(&ask.sku, edge.clock.now())
        .map(|e| SkuKey::new(&e.sale_id, &e.sku))
        .ok_or(CartFailure::NotFound("SKU"))?;
    let mut generation = edge.allotments.generation(&key);
    let mut attempt = 0;
    loop {
        let (rules, sample) = (edge.rules.get(), Arc::clone(&edge.asked));
        let (catalog, now, job) = (edge.catalog(), edge.clock.now(), ask.clone());
        let module = rules.version().to_owned();
        let done = edge
            .writer
            .run(move |c| {
                let rules = Noting {
                    rules: &*rules,
                    sample: &sample,
                };
                carts::set_quantity(c, &rules, &catalog, now, &job)
            })
            .await?;
        count_fault(edge, &done);
        match done {
            Ok(set) => {
                edge.allotments.note_demand(&key, set.reserved_more);
                return Ok(Served {
                    value: set.view,
                    module,
                });
            }
            Err(CartFailure::Refused(CartError::SoldOut(available)))
                if attempt < SHORTAGE_RETRIES =>
            {
                attempt += 1;
                // Only a refusal for stock alone counts as demand, and at most the quantity
                // the rules let this customer have.
                edge.allotments.note_demand(&key, ask.quantity);
                let more = tokio::time::timeout(
                    edge.config.shortage_wait,
                    edge.allotments
                        .after_shortage(&key, ask.quantity, generation),
                )
                .await;
                match more {
                    Ok(Ok(AfterShortage::Retry)) => generation = edge.allotments.generation(&key),
                    Ok(Err(e)) => {
                        tracing::warn!("no grant for {key}: {e}");
                        return Err(sold_out(available));
                    }
                    _ => return Err(sold_out(available)),
                }
            }
            Err(failure) => return Err(failure.into()),
        }
    }
}

fn sold_out(available: u32) -> ShopError {
    CartFailure::Refused(CartError::SoldOut(available)).into()
}

/// Checks a cart out: the order, and whether this was a replay of an earlier checkout.
pub async fn checkout(
    edge: &Edge,
    cart_id: String,
    token_hash: String,
    idempotency_key: String,
) -> Result<Served<(Order, bool)>, ShopError> {
    selling(edge)?;
    let (rules, sample) = (edge.rules.get(), Arc::clone(&edge.asked));
    let (catalog, now) = (edge.catalog(), edge.clock.now());
    let module = rules.version().to_owned();
    let done = edge
        .writer
        .run(move |c| {
            carts::checkout(
                c,
                &Noting {
                    rules: &*rules,
                    sample: &sample,
                },
                &catalog,
                now,
                &cart_id,
                &token_hash,
                &idempotency_key,
            )
        })
        .await?;
    count_fault(edge, &done);
    Ok(Served {
        value: done?,
        module,
    })
}

/// Counts the rules' failures (traps, deadlines, impossible decisions) in `/metrics`.
fn count_fault<T>(edge: &Edge, done: &Result<T, CartFailure>) {
    if let Err(CartFailure::Fault(fault)) = done {
        edge.metrics.guest_faults.inc();
        tracing::warn!("guest fault: {fault}");
    }
}
