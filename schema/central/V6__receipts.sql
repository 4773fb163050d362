-- Central forgets old receipts (cart-host 0.5). Each edge deletes central's receipts of its own
-- applied events (`applied_events`) once they are past its `--retain-days` and it has marked
-- them delivered; the receipts of a drained edge go the same way once it has been gone that
-- long. `events_pruned` counts what went, so that the audit still finds every
-- event up to the high-water mark applied once: receipts kept plus receipts pruned. Orders,
-- holds, grants and hand-offs' unit moves are the business record and are never pruned.
ALTER TABLE edges ADD COLUMN events_pruned BIGINT NOT NULL DEFAULT 0;
