-- Hand-offs and the fleet's module (cart-host 0.3). A draining edge moves its carts, with their
-- held and sold units, to another edge, and central records the move once, by the id the
-- draining edge chose.
CREATE TABLE handoffs (
    handoff_id TEXT PRIMARY KEY,
    from_edge  TEXT NOT NULL,
    to_edge    TEXT NOT NULL,
    carts      BIGINT NOT NULL,
    moved_at   BIGINT NOT NULL
);

-- The units that moved with a hand-off's carts: they leave one edge's allotment for the other's.
CREATE TABLE unit_moves (
    handoff_id TEXT NOT NULL REFERENCES handoffs (handoff_id),
    from_edge  TEXT NOT NULL,
    to_edge    TEXT NOT NULL,
    sale_id    TEXT NOT NULL,
    sku        TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (handoff_id, sale_id, sku)
);

-- Where a handed-off cart is now (a cart's id names the edge that made it; this names the
-- edge that keeps it since).
CREATE TABLE cart_owners (
    cart_id TEXT PRIMARY KEY,
    edge_id TEXT NOT NULL,
    since   BIGINT NOT NULL
);

-- An edge that drained: out of the registry until it claims its id again.
ALTER TABLE edges ADD COLUMN drained_at BIGINT;

-- The cart module the fleet runs: the one an operator last deployed or activated on an edge
-- (base64, as only BIGINT and TEXT are used here; `signature` is empty for an unsigned one). An
-- edge that starts runs it.
CREATE TABLE fleet_module (
    name       TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    bytes      TEXT NOT NULL,
    signature  TEXT NOT NULL,
    set_at     BIGINT NOT NULL
);
