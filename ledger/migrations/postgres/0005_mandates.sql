-- Mandates (standing approvals): an approver lets one agent run one action
-- on resources matching a pattern, up to a count, a per-call and a total
-- amount, until an expiry. Reserve consumes one in the reservation's own
-- write transaction; mandate_uses says which reservation used which.
CREATE TABLE mandates (
    id                  TEXT    PRIMARY KEY,
    agent               TEXT    NOT NULL,
    action              TEXT    NOT NULL,
    pattern             TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    max_per_call_micros BIGINT  NOT NULL,
    max_total_micros    BIGINT  NOT NULL,
    max_count           INTEGER NOT NULL,
    used_count          INTEGER NOT NULL DEFAULT 0,
    used_micros         BIGINT  NOT NULL DEFAULT 0,
    created_by          TEXT    NOT NULL,
    created_at          BIGINT  NOT NULL,
    expires_at          BIGINT  NOT NULL,
    revoked_at          BIGINT,
    revoked_by          TEXT    NOT NULL DEFAULT '',
    CHECK (used_count <= max_count),
    CHECK (used_micros <= max_total_micros)
);
CREATE INDEX mandates_by_agent ON mandates (agent, action, expires_at);
CREATE TABLE mandate_uses (
    operation_id  TEXT    PRIMARY KEY,
    mandate_id    TEXT    NOT NULL REFERENCES mandates (id),
    amount_micros BIGINT  NOT NULL,
    at            BIGINT  NOT NULL
);
CREATE INDEX mandate_uses_by_mandate ON mandate_uses (mandate_id);
