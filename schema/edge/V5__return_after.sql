-- Returns wait for the outbox (cart-host 0.5). A return of units records the newest outbox event
-- written when its units left the free count: central takes the return only once it has applied
-- the outbox up to there, so that it counts the edge's holds and sales before the units it gave
-- back. Returns recorded before this migration wait for every event written before it (more
-- than they need, which is safe: no later event uses units already given back), so that one
-- sent again to a central restored from a backup waits for the events sent again with it.
ALTER TABLE unit_returns ADD COLUMN after_seq INTEGER NOT NULL DEFAULT 0;
UPDATE unit_returns
SET after_seq = COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0);
