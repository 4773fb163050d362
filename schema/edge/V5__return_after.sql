-- Returns wait for the outbox (cart-host 0.5). A return of units records the newest outbox event
-- written when its units left the free count: central takes the return only once it has applied
-- the outbox up to there, so that it counts the edge's holds and sales before the units it gave
-- back. Returns recorded before this migration wait for nothing, as before.
ALTER TABLE unit_returns ADD COLUMN after_seq INTEGER NOT NULL DEFAULT 0;
