-- Cart components deployed to this edge, by version; `meta.active_module` names the one in use.
CREATE TABLE modules (
    version     TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    bytes       BLOB NOT NULL,
    deployed_at INTEGER NOT NULL
) WITHOUT ROWID;
