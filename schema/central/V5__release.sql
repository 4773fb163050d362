-- The release that last migrated this schema, and the oldest release whose edges and relays may
-- run against it (cart-host 0.5). `cart-host migrate` of release N stamps N; a migration that an
-- older binary cannot run against raises `edges_from` to its own release. The policy (README,
-- "Upgrades"): a release's migrations only add, so an edge of release N runs against central at
-- N and N+1, and `edges_from` stays where it was.
CREATE TABLE schema_release (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    release    TEXT NOT NULL,
    edges_from TEXT NOT NULL
);
INSERT INTO schema_release (id, release, edges_from) VALUES (1, '0.5', '0.5');
