-- Fencing and signed events (cart-host 0.4).
--
-- `folder` names the database file a history runs on (its inode and birth time): a process
-- that serves the same file after a crash may take its predecessor's lease over at once, a copy
-- of the folder may not. `digest` is the SHA-256 of each applied event, so that an edge can tell
-- its own events, applied before a crash, from another process's under the same sequence
-- numbers.
ALTER TABLE edges ADD COLUMN folder TEXT NOT NULL DEFAULT '';
ALTER TABLE applied_events ADD COLUMN digest TEXT NOT NULL DEFAULT '';

-- The ed25519 keys of the processes that have served each history, one per process: central
-- applies an outbox event only if one of them signed it, whatever path the event took (a row a
-- process stored in the queue before it died is still its own when a relay applies it later).
CREATE TABLE history_keys (
    history_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    PRIMARY KEY (history_id, public_key)
);
CREATE INDEX edges_history ON edges (history_id);
CREATE INDEX edges_incarnation ON edges (incarnation);

-- Each edge's units of each SKU, kept as counters beside the ledger rows they sum: allotted
-- (granted, less returned, with hand-offs in and out), held and sold. Central refuses any
-- grant, return, hand-off or event that would make an edge hold and sell more than it was
-- allotted: the CHECK is the last word, whatever a caller sent.
CREATE TABLE edge_units (
    edge_id  TEXT NOT NULL,
    sale_id  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    allotted BIGINT NOT NULL DEFAULT 0,
    held     BIGINT NOT NULL DEFAULT 0,
    sold     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (edge_id, sale_id, sku),
    CHECK (held >= 0 AND sold >= 0 AND held + sold <= allotted)
);
INSERT INTO edge_units (edge_id, sale_id, sku, allotted, held, sold)
SELECT edge_id, sale_id, sku, SUM(allotted), SUM(held), SUM(sold) FROM (
    SELECT edge_id, sale_id, sku, granted AS allotted, 0 AS held, 0 AS sold FROM grants
    UNION ALL SELECT edge_id, sale_id, sku, -quantity, 0, 0 FROM unit_returns
    UNION ALL SELECT from_edge, sale_id, sku, -quantity, 0, 0 FROM unit_moves
    UNION ALL SELECT to_edge, sale_id, sku, quantity, 0, 0 FROM unit_moves
    UNION ALL SELECT edge_id, sale_id, sku, 0, quantity, 0 FROM holds
    UNION ALL SELECT o.edge_id, l.sale_id, l.sku, 0, 0, l.quantity
        FROM order_lines l JOIN orders o ON o.order_id = l.order_id
) AS units GROUP BY edge_id, sale_id, sku;

-- Where hand-offs stand: the receiving edge marks each one taken, and an edge does not leave
-- the registry while a hand-off recorded to it has not been taken.
ALTER TABLE handoffs ADD COLUMN taken_at BIGINT;

-- The carts of each hand-off, as recorded: the receiving edge takes their holds and orders
-- from here, not from what a peer sent it.
CREATE TABLE handoff_carts (
    handoff_id TEXT NOT NULL REFERENCES handoffs (handoff_id),
    cart_id    TEXT NOT NULL,
    PRIMARY KEY (handoff_id, cart_id)
);
CREATE INDEX orders_cart ON orders (cart_id);
CREATE INDEX orders_edge ON orders (edge_id);
CREATE INDEX holds_edge ON holds (edge_id, sale_id, sku);

-- When an operator ended a sale early (`cart-host sale end`): such a sale stays ended, whatever
-- file is loaded under its id again.
ALTER TABLE sales ADD COLUMN ended_early_at BIGINT;
