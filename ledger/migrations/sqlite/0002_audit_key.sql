-- The audit chain gets a key kept outside the database (see ledger/auditkey.go).
-- Events appended after the key's boundary carry mac = HMAC-SHA-256(chain key,
-- hash); events up to the boundary keep their plain hashes ('' here).
ALTER TABLE audit_events ADD COLUMN mac TEXT NOT NULL DEFAULT '';

-- The one key every writer of this chain must use, and the boundary it signed
-- when it was first used: events at or before boundary_seq are plain,
-- everything after is keyed. signature is Ed25519 over the boundary statement.
CREATE TABLE audit_keys (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    key_id        TEXT    NOT NULL,
    public_key    TEXT    NOT NULL,
    boundary_seq  INTEGER NOT NULL,
    boundary_hash TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    signature     TEXT    NOT NULL
);

-- Signed heads the server writes every N events or M minutes (the boundary is
-- the first). Deleting rows here hides nothing: copies go to the checkpoint
-- file and Slack, and verify checks every row that remains.
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    key_id    TEXT    NOT NULL,
    signature TEXT    NOT NULL
);
