-- tollgate ledger schema, version 1.
-- Times are INTEGER nanoseconds since the Unix epoch (UTC); money is INTEGER
-- micro-units with its ISO 4217 currency. CHECK (typeof(...) = 'integer') guards
-- stop SQLite from silently turning an overflowing sum into a REAL.

CREATE TABLE blobs (
    sha256     TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL,
    data       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE operations (
    seq               INTEGER PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    agent             TEXT    NOT NULL,
    team              TEXT    NOT NULL,
    tool              TEXT    NOT NULL,
    resource          TEXT    NOT NULL,
    args              TEXT    NOT NULL,
    args_hash         TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    idempotency_key   TEXT    NOT NULL,
    key_derived       INTEGER NOT NULL,
    blob_sha256       TEXT    REFERENCES blobs (sha256),
    client_name       TEXT    NOT NULL,
    client_version    TEXT    NOT NULL,
    client_session    TEXT    NOT NULL,
    client_transport  TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('planned', 'authorized', 'reserved', 'awaiting_approval',
                                 'approved', 'executing', 'succeeded', 'failed', 'denied', 'expired', 'in_doubt', 'cancelled')),
    currency          TEXT    NOT NULL DEFAULT '',
    quote_micros      INTEGER NOT NULL DEFAULT 0 CHECK (typeof(quote_micros) = 'integer' AND quote_micros >= 0),
    charged_micros    INTEGER CHECK (charged_micros IS NULL OR typeof(charged_micros) = 'integer'),
    commitment_key    TEXT,
    commitment_micros INTEGER,
    result            TEXT,
    error_code        TEXT    NOT NULL DEFAULT '',
    error             TEXT    NOT NULL DEFAULT '',
    expires_at        INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (agent, idempotency_key)
);
CREATE INDEX operations_by_agent ON operations (agent, seq);
CREATE INDEX operations_by_team ON operations (team, seq);
CREATE INDEX operations_by_args ON operations (agent, args_hash, seq);
CREATE INDEX operations_by_state ON operations (state, updated_at);

-- One budget per (scope, window); its currency is part of the limit.
CREATE TABLE budgets (
    scope        TEXT    NOT NULL,
    win          TEXT    NOT NULL CHECK (win IN ('day', 'month', 'total')),
    currency     TEXT    NOT NULL,
    limit_micros INTEGER NOT NULL CHECK (typeof(limit_micros) = 'integer' AND limit_micros >= 0),
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT    NOT NULL,
    PRIMARY KEY (scope, win)
);

CREATE TABLE velocity_limits (
    scope      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    win        TEXT    NOT NULL CHECK (win IN ('day', 'month')),
    max_count  INTEGER NOT NULL CHECK (max_count >= 0),
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    PRIMARY KEY (scope, action, win)
);

-- Running totals per scope, window, period and currency, kept for every scope a
-- reservation touches whether or not a budget exists yet, so a budget set mid-period
-- sees what was already spent.
CREATE TABLE spend_totals (
    scope        TEXT    NOT NULL,
    win          TEXT    NOT NULL,
    period       TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    spent_micros INTEGER NOT NULL DEFAULT 0 CHECK (typeof(spent_micros) = 'integer'),
    held_micros  INTEGER NOT NULL DEFAULT 0 CHECK (typeof(held_micros) = 'integer' AND held_micros >= 0),
    PRIMARY KEY (scope, win, period, currency)
) WITHOUT ROWID;

-- Reservations of an action not released (held or settled) per scope and period.
CREATE TABLE velocity_totals (
    scope  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    win    TEXT    NOT NULL,
    period TEXT    NOT NULL,
    count  INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (scope, action, win, period)
) WITHOUT ROWID;

-- Live holds only: a row per operation, scope and window while the operation is
-- reserved .. in_doubt. Settle turns them into charges; release deletes them.
CREATE TABLE holds (
    operation_id  TEXT    NOT NULL REFERENCES operations (id),
    scope         TEXT    NOT NULL,
    win           TEXT    NOT NULL,
    period        TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    amount_micros INTEGER NOT NULL CHECK (typeof(amount_micros) = 'integer' AND amount_micros >= 0),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (operation_id, scope, win)
) WITHOUT ROWID;

-- The settled ledger: append-only, one row per settled operation, scope and window.
CREATE TABLE charges (
    id            INTEGER PRIMARY KEY,
    operation_id  TEXT    NOT NULL REFERENCES operations (id),
    scope         TEXT    NOT NULL,
    win           TEXT    NOT NULL,
    period        TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    amount_micros INTEGER NOT NULL CHECK (typeof(amount_micros) = 'integer' AND amount_micros >= 0),
    at            INTEGER NOT NULL
);
CREATE INDEX charges_by_operation ON charges (operation_id);

-- Once-per-key charges such as a monthly plan: the first settled operation records
-- the key; later ones are not charged its amount again.
CREATE TABLE commitments (
    key           TEXT    PRIMARY KEY,
    operation_id  TEXT    NOT NULL REFERENCES operations (id),
    currency      TEXT    NOT NULL,
    amount_micros INTEGER NOT NULL,
    recorded_at   INTEGER NOT NULL
);

CREATE TABLE blocks (
    id           INTEGER PRIMARY KEY,
    agent        TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    operation_id TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    win          TEXT    NOT NULL
);
CREATE INDEX blocks_by_agent ON blocks (agent, at);

CREATE TABLE freezes (
    scope     TEXT    PRIMARY KEY,
    reason    TEXT    NOT NULL,
    frozen_by TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    auto      INTEGER NOT NULL
);

-- The hash chain. seq is assigned by the appender (last seq + 1 inside the same
-- BEGIN IMMEDIATE transaction), never by SQLite, so a gap is evidence of deletion.
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    operation_id TEXT    NOT NULL,
    data         TEXT    NOT NULL,
    prev_hash    TEXT    NOT NULL,
    hash         TEXT    NOT NULL
);
CREATE INDEX audit_events_by_operation ON audit_events (operation_id, seq) WHERE operation_id <> '';
CREATE INDEX audit_events_by_at ON audit_events (at);

CREATE TABLE agents (
    name       TEXT    PRIMARY KEY,
    team       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    roles      TEXT    NOT NULL,
    attributes TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL
);

-- Only the SHA-256 of a token is stored; prefix (the first characters, not enough to
-- use) lets Authenticate find candidates without a lookup keyed on the secret.
CREATE TABLE agent_tokens (
    id            TEXT    PRIMARY KEY,
    agent         TEXT    NOT NULL REFERENCES agents (name),
    prefix        TEXT    NOT NULL,
    hash          BLOB    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    overlap_until INTEGER
);
CREATE INDEX agent_tokens_by_prefix ON agent_tokens (prefix);
CREATE INDEX agent_tokens_by_agent ON agent_tokens (agent);
