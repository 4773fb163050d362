//! The host's integration tests, one binary. Every test runs the real cart component in the real
//! host over real HTTP on 127.0.0.1, against real SQLite files in temporary folders.

// The harness: fleets, in-process edges, edge processes, a client.
mod support;

// Every storefront route and every error row of the contract.
mod storefront;
// Hold expiry, by moving the request clock.
mod expiry;
// Broken guests: traps, loops, greed; load shedding.
mod faults;
// Many shoppers, few units, one and two edges; central gets every hold and order once.
mod concurrency;
// kill -9 under load, restart on the same data.
mod crash;
// Three edge processes over PostgreSQL and SQLite: sell-out, kill -9, central outage, redelivery.
mod fleet;
// The outbox through NATS JetStream and relays: sell-out, relay kill -9, NATS and central outages.
mod queue;
// Deploying modules: validation, signatures, rollback under load, the deploy command.
mod deploy;
// A full disk, for real (a tmpfs): 503, nothing unacknowledged kept, recovery.
mod storage;
// A calendar of sales: loaded into a running fleet, starting, ending; the calendar's rules.
mod calendar;
// Property tests of the rules and the store against a model of carts, holds and stock.
mod model;
// One fleet behind one address: forwarding to a cart's owner, the fleet secret, a dead owner.
mod one_fleet;
// Edges joining and draining mid-sale: carts handed to the others exactly once, under load and
// kill -9; the reference scaler growing and shrinking a fleet behind one address.
mod drain;
mod scale;
// Customers from signed tokens; cart creation limited per client address.
mod customers;
// The audit fails on each kind of tampered ledger.
mod audit;
// Untrusted input: anonymous demand, modules, second processes, slow clients, redeploys.
mod trust;
// Never oversell: a copied folder, a partition and a take-over, a forged hand-off, forged
// queue messages.
mod oversell;
// A seeded run of random faults over a fleet, checked against every answer shoppers got.
mod chaos;
// The OpenAPI document validates, and Schemathesis finds no disagreement with a live edge.
mod api;
// The storefront and the dashboard in headless Chromium.
mod pages;
// The commands as a user runs them: the demo from any folder, with the built-in component.
mod commands;
// README.md, run as a reader pastes it, block by block; and the runner failing on a broken block.
mod readme;
// Across a real network: central's PostgreSQL over TLS as libpq's users set it up, its password
// kept out of URLs and logs.
mod network;
// The edge over HTTPS: peers over mutual TLS with the fleet CA; certificates renewed in place.
mod https;
// Across a bad network: central and a peer blackholed through the test kit's proxy.
mod wan;
// What an operator ships: the image, run with podman.
mod shipping;
// Central restored from a backup mid-sale: the edges deliver again what it lost.
mod restore;
// Upgrades: central migrated on its own, edges restarted in place on a newer compatible schema.
mod upgrade;
// Thirty daily sales: edges that keep two days of finished sales stop growing.
mod retention;
// `rules new` built with cargo, `rules check`, and the new rules on a running edge.
mod rules;
