-- A take-over waits for the lease (cart-host 0.5). A take-over refused because the old process's
-- lease has not lapsed yet is recorded: once the lease lapses, its holder cannot renew it while
-- the take-over keeps asking, and the take-over claims the id at its next try. Without this, an
-- old process that renews now and then across a flaky link revived its lapsed lease each time,
-- and the take-over an operator started waited for ever.
ALTER TABLE edges ADD COLUMN take_over_asked_at BIGINT NOT NULL DEFAULT 0;
