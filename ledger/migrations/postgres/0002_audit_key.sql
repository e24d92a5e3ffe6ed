-- The audit chain gets a key kept outside the database (see ledger/auditkey.go
-- and ../sqlite/0002_audit_key.sql).
ALTER TABLE audit_events ADD COLUMN mac TEXT NOT NULL DEFAULT '';

CREATE TABLE audit_keys (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    key_id        TEXT    NOT NULL,
    public_key    TEXT    NOT NULL,
    boundary_seq  BIGINT  NOT NULL,
    boundary_hash TEXT    NOT NULL,
    at            BIGINT  NOT NULL,
    signature     TEXT    NOT NULL
);

CREATE TABLE audit_checkpoints (
    seq       BIGINT  PRIMARY KEY,
    hash      TEXT    NOT NULL,
    at        BIGINT  NOT NULL,
    key_id    TEXT    NOT NULL,
    signature TEXT    NOT NULL
);
