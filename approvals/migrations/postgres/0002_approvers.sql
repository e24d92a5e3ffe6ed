-- The approvers the serving tollgate was configured with. The local approver
-- CLI decides who may vote from this table, not from whatever tollgate.yaml it
-- happens to find, so running it from another directory changes nothing.
CREATE TABLE approval_approvers (
    name          TEXT PRIMARY KEY,
    slack_user_id TEXT NOT NULL DEFAULT '',
    os_user       TEXT NOT NULL DEFAULT '',
    roles         TEXT NOT NULL, -- JSON array
    published_at  BIGINT  NOT NULL -- unix nanoseconds
);
