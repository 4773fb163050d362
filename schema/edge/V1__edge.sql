-- The edge's local database (schema of cart-host 0.2). The host owns every table: the cart
-- component sees none of them; it decides on what the host loads and hands it.

-- Key/value facts about this edge: the outbox delivery mark, the active module.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The sales this edge serves (running, scheduled, and ended ones it still holds units of) and
-- their SKUs, as pulled from central, so an edge restarts without it.
CREATE TABLE sales (
    sale_id     TEXT PRIMARY KEY,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    hold_ttl_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE catalog (
    sale_id            TEXT NOT NULL REFERENCES sales (sale_id),
    sku                TEXT NOT NULL,
    name               TEXT NOT NULL,
    price_cents        INTEGER NOT NULL,
    limit_per_customer INTEGER NOT NULL,
    starts_at          INTEGER NOT NULL,
    stock_total        INTEGER NOT NULL,
    PRIMARY KEY (sale_id, sku)
) WITHOUT ROWID;

-- This edge's escrowed units: granted by central, then free, held or sold.
CREATE TABLE stock (
    sale_id TEXT NOT NULL,
    sku     TEXT NOT NULL,
    free    INTEGER NOT NULL DEFAULT 0 CHECK (free >= 0),
    held    INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    sold    INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    PRIMARY KEY (sale_id, sku)
) WITHOUT ROWID;

-- Grant requests, stored before central is asked, so a retry reuses the id.
-- `granted` is NULL until central's answer has been added to `stock.free`.
CREATE TABLE grants (
    grant_id     TEXT PRIMARY KEY,
    sale_id      TEXT NOT NULL,
    sku          TEXT NOT NULL,
    requested    INTEGER NOT NULL CHECK (requested > 0),
    granted      INTEGER,
    requested_at INTEGER NOT NULL,
    applied_at   INTEGER
) WITHOUT ROWID;
CREATE INDEX grants_pending ON grants (requested_at) WHERE granted IS NULL;

-- Units given back to central, stored (and taken out of `stock.free`) before central is told,
-- so a retry reuses the id. `confirmed_at` is NULL until central has taken them.
CREATE TABLE unit_returns (
    return_id    TEXT PRIMARY KEY,
    sale_id      TEXT NOT NULL,
    sku          TEXT NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity > 0),
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX unit_returns_pending ON unit_returns (created_at) WHERE confirmed_at IS NULL;

-- Events for central, written in the same transaction as the change they describe.
-- AUTOINCREMENT: a sequence number is never reused, even after delivered rows are pruned.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    event      TEXT NOT NULL
);

-- Carts, their lines and their orders, as the cart rules decided them.
CREATE TABLE carts (
    cart_id     TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    token_hash  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'checked_out')),
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX carts_by_customer ON carts (customer_id);

-- A line is `held` while units of its SKU are reserved for it in `stock.held`; a lapsed hold
-- keeps them until the sweep releases them, and a checked-out cart's lines are its order's.
CREATE TABLE cart_lines (
    cart_id          TEXT NOT NULL,
    sku              TEXT NOT NULL,
    sale_id          TEXT NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    hold_expires_at  INTEGER NOT NULL,
    held             INTEGER NOT NULL CHECK (held IN (0, 1)),
    PRIMARY KEY (cart_id, sku)
) WITHOUT ROWID;
CREATE INDEX cart_lines_lapsing ON cart_lines (hold_expires_at) WHERE held = 1;

CREATE TABLE orders (
    order_id        TEXT PRIMARY KEY,
    cart_id         TEXT NOT NULL UNIQUE,
    customer_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    total_cents     INTEGER NOT NULL,
    placed_at       INTEGER NOT NULL
) WITHOUT ROWID;

-- Cart components deployed to this edge, by version, with the signature they came with;
-- `meta.active_module` names the one in use.
CREATE TABLE modules (
    version     TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    bytes       BLOB NOT NULL,
    signature   TEXT,
    deployed_at INTEGER NOT NULL
) WITHOUT ROWID;
