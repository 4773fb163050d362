-- A central restored from a backup (cart-host 0.5). Units granted since the backup look
-- unallocated to the restored central until the edges that hold them send their grants again,
-- and a grant made from them meanwhile sells them twice. So once a restore is noticed (an edge
-- finds central behind what it had acknowledged, or an operator says so with `cart-host migrate
-- --restored`), `restored_at` is set, and central grants nothing new until every edge it may
-- have lost grants of has sent them again and says so (`reconciled_at`).
CREATE TABLE restores (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    restored_at BIGINT NOT NULL
);
INSERT INTO restores (id, restored_at) VALUES (1, 0);
ALTER TABLE edges ADD COLUMN reconciled_at BIGINT NOT NULL DEFAULT 0;
