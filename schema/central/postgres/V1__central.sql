-- The central database (PostgreSQL): owns the stock and receives every hold
-- and order the edges commit. Kept in step with ../sqlite/V1__central.sql.

CREATE TABLE sales (
    sale_id          TEXT PRIMARY KEY,
    starts_at        BIGINT NOT NULL,
    hold_ttl_seconds BIGINT NOT NULL,
    loaded_at        BIGINT NOT NULL
);

-- Per SKU: the stock it was loaded with and the units no edge has been granted.
CREATE TABLE skus (
    sku                TEXT PRIMARY KEY,
    sale_id            TEXT NOT NULL REFERENCES sales (sale_id),
    name               TEXT NOT NULL,
    price_cents        BIGINT NOT NULL,
    limit_per_customer BIGINT NOT NULL,
    sale_starts_at     BIGINT NOT NULL,
    stock_total        BIGINT NOT NULL CHECK (stock_total >= 0),
    unallocated        BIGINT NOT NULL CHECK (unallocated >= 0),
    -- When an edge last asked for more than was left: edges with spare units give them back.
    wanted_at          BIGINT NOT NULL DEFAULT 0
);

-- Edges that have registered, and how far each one's outbox has been applied.
CREATE TABLE edges (
    edge_id    TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    high_water BIGINT NOT NULL DEFAULT 0,
    last_seen  BIGINT NOT NULL
);

-- Units granted to an edge, by the id the edge chose: a retried request finds its answer here.
CREATE TABLE grants (
    grant_id   TEXT PRIMARY KEY,
    edge_id    TEXT NOT NULL,
    sku        TEXT NOT NULL REFERENCES skus (sku),
    requested  BIGINT NOT NULL,
    granted    BIGINT NOT NULL,
    granted_at BIGINT NOT NULL
);

-- Units edges gave back, by the id the edge chose.
CREATE TABLE unit_returns (
    return_id   TEXT PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    sku         TEXT NOT NULL REFERENCES skus (sku),
    quantity    BIGINT NOT NULL,
    returned_at BIGINT NOT NULL
);

-- Every outbox event applied, once: the primary key refuses a second application.
CREATE TABLE applied_events (
    edge_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (edge_id, seq)
);

-- Holds as the edges last reported them.
CREATE TABLE holds (
    edge_id     TEXT NOT NULL,
    cart_id     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (edge_id, cart_id, sku)
);

CREATE TABLE orders (
    order_id    TEXT PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    cart_id     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    placed_at   BIGINT NOT NULL
);

CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (order_id),
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);
