-- Hand-offs (cart-host 0.3). A draining edge takes a batch of carts out of its books in one
-- transaction and keeps them here until the receiving edge has them and central has recorded
-- the move; a restart resumes what is not `done`. `carts` is the batch as sent, in JSON.
CREATE TABLE handoffs_out (
    handoff_id TEXT PRIMARY KEY,
    to_edge    TEXT NOT NULL,
    to_url     TEXT NOT NULL,
    carts      TEXT NOT NULL,
    frozen_seq INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sending', 'done', 'aborted')),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Carts this edge handed off, and the edge that keeps each now.
CREATE TABLE moved_carts (
    cart_id    TEXT PRIMARY KEY,
    handoff_id TEXT NOT NULL REFERENCES handoffs_out (handoff_id),
    edge_id    TEXT NOT NULL
) WITHOUT ROWID;

-- Hand-offs this edge was offered: taken (its carts are in this edge's books since) or refused,
-- so that a retry of either gets the same answer. `recorded`: central has recorded a taken one
-- (until then its carts do not move on).
CREATE TABLE handoffs_in (
    handoff_id  TEXT PRIMARY KEY,
    from_edge   TEXT NOT NULL,
    taken       INTEGER NOT NULL CHECK (taken IN (0, 1)),
    recorded    INTEGER NOT NULL DEFAULT 0 CHECK (recorded IN (0, 1)),
    received_at INTEGER NOT NULL
) WITHOUT ROWID;
