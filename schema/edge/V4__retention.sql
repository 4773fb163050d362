-- Retention (cart-host 0.5). A sale the edge dropped from its calendar (ended, settled here) is
-- recorded with the last outbox event written then: once central has that event and
-- `--retain-days` have passed since the drop, the sale's carts, lines and orders are deleted, a
-- batch at a time. `pruning_since`: the first batch went (from then on the audit leaves the
-- sale out of this edge's books); `pruned_at`: the last did, and the sale's stock, grants and
-- returns went with it.
CREATE TABLE finished_sales (
    sale_id       TEXT PRIMARY KEY,
    dropped_at    INTEGER NOT NULL,
    outbox_seq    INTEGER NOT NULL,
    pruning_since INTEGER,
    pruned_at     INTEGER
) WITHOUT ROWID;

-- Empty carts are found by age.
CREATE INDEX carts_created ON carts (created_at);

-- Sales dropped before this migration: retained from now.
INSERT INTO finished_sales (sale_id, dropped_at, outbox_seq)
SELECT DISTINCT l.sale_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
       COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)
FROM cart_lines l WHERE l.sale_id NOT IN (SELECT sale_id FROM sales);
