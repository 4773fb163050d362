-- The central database (schema of cart-host 0.2): owns the stock and receives every hold and
-- order the edges commit. The same SQL runs on PostgreSQL and on SQLite (the embedded default),
-- so only types both take are used: BIGINT and TEXT.

-- The calendar: every sale loaded, past, running and scheduled.
CREATE TABLE sales (
    sale_id          TEXT PRIMARY KEY,
    starts_at        BIGINT NOT NULL,
    -- Moved earlier by `cart-host sale end`.
    ends_at          BIGINT NOT NULL,
    hold_ttl_seconds BIGINT NOT NULL,
    loaded_at        BIGINT NOT NULL
);

-- Per SKU of a sale: the stock it was loaded with and the units no edge has been granted.
CREATE TABLE skus (
    sale_id            TEXT NOT NULL REFERENCES sales (sale_id),
    sku                TEXT NOT NULL,
    name               TEXT NOT NULL,
    price_cents        BIGINT NOT NULL,
    limit_per_customer BIGINT NOT NULL,
    starts_at          BIGINT NOT NULL,
    stock_total        BIGINT NOT NULL CHECK (stock_total >= 0),
    unallocated        BIGINT NOT NULL CHECK (unallocated >= 0),
    -- When an edge last asked for more than was left: edges with spare units give them back.
    wanted_at          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (sale_id, sku)
);

-- Counters edges watch: `catalog` changes whenever a sale is loaded, replaced or ended.
CREATE TABLE versions (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO versions (name, value) VALUES ('catalog', 1);

-- Edges that have registered, and how far each one's outbox has been applied.
-- `history_id` names the data folder whose outbox this is; `incarnation` the process serving it
-- now, whose lease its sync loop renews. A history an operator writes off (`serve --take-over`)
-- stays here under a retired id, `<edge_id>~<history>`, with `retired_at` set and no URL.
CREATE TABLE edges (
    edge_id     TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    history_id  TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    high_water  BIGINT NOT NULL DEFAULT 0,
    last_seen   BIGINT NOT NULL,
    retired_at  BIGINT
);

-- Units granted to an edge, by the id the edge chose: a retried request finds its answer here.
CREATE TABLE grants (
    grant_id   TEXT PRIMARY KEY,
    edge_id    TEXT NOT NULL,
    sale_id    TEXT NOT NULL,
    sku        TEXT NOT NULL,
    requested  BIGINT NOT NULL,
    granted    BIGINT NOT NULL,
    granted_at BIGINT NOT NULL,
    FOREIGN KEY (sale_id, sku) REFERENCES skus (sale_id, sku)
);

-- Units edges gave back, by the id the edge chose.
CREATE TABLE unit_returns (
    return_id   TEXT PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    sale_id     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    returned_at BIGINT NOT NULL,
    FOREIGN KEY (sale_id, sku) REFERENCES skus (sale_id, sku)
);

-- Every outbox event applied, once: the primary key refuses a second application.
CREATE TABLE applied_events (
    edge_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (edge_id, seq)
);

-- Holds as the edges last reported them, by cart (a cart's owner may change).
CREATE TABLE holds (
    cart_id     TEXT NOT NULL,
    sale_id     TEXT NOT NULL,
    sku         TEXT NOT NULL,
    edge_id     TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (cart_id, sale_id, sku)
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
    sale_id          TEXT NOT NULL,
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, sale_id, sku)
);
