-- approvals: approval requests bound to one Operation, and the votes cast on them.
-- Times are BIGINT unix nanoseconds (UTC), like the ledger's tables.

CREATE TABLE approval_requests (
    id             TEXT    PRIMARY KEY,
    operation_id   TEXT    NOT NULL UNIQUE,
    tool           TEXT    NOT NULL,
    agent          TEXT    NOT NULL,
    team           TEXT    NOT NULL DEFAULT '',
    owner          TEXT    NOT NULL DEFAULT '',
    client         TEXT    NOT NULL DEFAULT '',
    summary        TEXT    NOT NULL DEFAULT '',
    args_json      TEXT    NOT NULL DEFAULT '[]',
    module_json    TEXT,
    amount_micros  BIGINT  NOT NULL CHECK (amount_micros >= 0),
    currency       TEXT    NOT NULL,
    amount_text    TEXT    NOT NULL DEFAULT '',
    headroom_json  TEXT    NOT NULL DEFAULT '[]',
    reason         TEXT    NOT NULL DEFAULT '',
    policy         TEXT    NOT NULL DEFAULT '',
    args_hash      TEXT    NOT NULL,
    irreversible   INTEGER NOT NULL DEFAULT 0,
    quorum         INTEGER NOT NULL CHECK (quorum >= 1),
    state          TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    decided_reason TEXT    NOT NULL DEFAULT '',
    decided_at     BIGINT,
    consumed_at    BIGINT,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    result_text    TEXT    NOT NULL DEFAULT '',
    -- version counts changes that the Slack message must show; slack_synced is the
    -- version the message shows now. Any process may change a request; the one
    -- holding the Slack client brings the message up to date.
    version        INTEGER NOT NULL DEFAULT 1,
    slack_channel  TEXT    NOT NULL DEFAULT '',
    slack_ts       TEXT    NOT NULL DEFAULT '',
    slack_synced   INTEGER NOT NULL DEFAULT 0,
    slack_attempts INTEGER NOT NULL DEFAULT 0,
    slack_next_at  BIGINT  NOT NULL DEFAULT 0,
    slack_error    TEXT    NOT NULL DEFAULT '',
    -- set once the decision (approved, denied, expired) was handed to the server's
    -- hook, so a decision made by another process or before a crash is not lost.
    dispatched_at  BIGINT
);

CREATE INDEX approval_requests_pending ON approval_requests (expires_at) WHERE state = 'pending';
CREATE INDEX approval_requests_state ON approval_requests (state, created_at);
CREATE INDEX approval_requests_undispatched ON approval_requests (id) WHERE dispatched_at IS NULL AND state <> 'pending';
CREATE INDEX approval_requests_slack ON approval_requests (slack_next_at) WHERE slack_synced < version;

CREATE TABLE approval_votes (
    request_id    TEXT    NOT NULL REFERENCES approval_requests (id),
    approver      TEXT    NOT NULL,
    slack_user_id TEXT    NOT NULL DEFAULT '',
    via           TEXT    NOT NULL CHECK (via IN ('slack', 'socket', 'cli')),
    outcome       TEXT    NOT NULL CHECK (outcome IN ('approve', 'deny')),
    reason        TEXT    NOT NULL DEFAULT '',
    at            BIGINT  NOT NULL,
    PRIMARY KEY (request_id, approver)
);

-- Signed Slack requests and Socket Mode envelopes already processed: a second
-- arrival within the signature window is a replay. Rows older than the window
-- are pruned.
CREATE TABLE approval_slack_seen (
    key     TEXT    PRIMARY KEY,
    seen_at BIGINT  NOT NULL
);
CREATE INDEX approval_slack_seen_at ON approval_slack_seen (seen_at);
