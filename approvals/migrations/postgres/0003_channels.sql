-- approvals: a channel-neutral core with channels beside it.
--
-- What a channel posted for a request (a Slack message) and how far it is in
-- step with the request move out of approval_requests into approval_posts, one
-- row per request and channel. A change to a request bumps version on its
-- posts; the process that holds the channel brings each post up to date.
CREATE TABLE approval_posts (
    request_id TEXT    NOT NULL REFERENCES approval_requests (id),
    channel    TEXT    NOT NULL,
    ref        TEXT    NOT NULL DEFAULT '', -- what the channel posted ("C0123 1790000000.000100"); '' = not yet
    version    INTEGER NOT NULL DEFAULT 1,  -- changes the post must show
    synced     INTEGER NOT NULL DEFAULT 0,  -- the version it shows
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    BIGINT  NOT NULL DEFAULT 0,  -- unix nanoseconds of the next try
    error      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (request_id, channel)
);
CREATE INDEX approval_posts_due ON approval_posts (next_at) WHERE synced < version;

INSERT INTO approval_posts (request_id, channel, ref, version, synced, attempts, next_at, error)
    SELECT id, 'slack', CASE WHEN slack_ts = '' THEN '' ELSE slack_channel || ' ' || slack_ts END,
           version, slack_synced, slack_attempts, slack_next_at, slack_error
    FROM approval_requests WHERE slack_ts <> '' OR state = 'pending';

DROP INDEX approval_requests_slack;
ALTER TABLE approval_requests DROP COLUMN slack_channel;
ALTER TABLE approval_requests DROP COLUMN slack_ts;
ALTER TABLE approval_requests DROP COLUMN slack_synced;
ALTER TABLE approval_requests DROP COLUMN slack_attempts;
ALTER TABLE approval_requests DROP COLUMN slack_next_at;
ALTER TABLE approval_requests DROP COLUMN slack_error;

-- Votes name the voter as their channel knows them (channel_user), and may come from
-- the web console. SQLite cannot change a CHECK, so the table is rebuilt (here too, to keep both alike).
CREATE TABLE approval_votes_new (
    request_id TEXT    NOT NULL REFERENCES approval_requests (id),
    approver   TEXT    NOT NULL,
    channel_user TEXT  NOT NULL DEFAULT '',
    via        TEXT    NOT NULL CHECK (via IN ('slack', 'socket', 'cli', 'web')),
    outcome    TEXT    NOT NULL CHECK (outcome IN ('approve', 'deny')),
    reason     TEXT    NOT NULL DEFAULT '',
    at         BIGINT  NOT NULL,
    PRIMARY KEY (request_id, approver)
);
INSERT INTO approval_votes_new (request_id, approver, channel_user, via, outcome, reason, at)
    SELECT request_id, approver, CASE WHEN via IN ('slack', 'socket') THEN slack_user_id ELSE '' END, via, outcome, reason, at
    FROM approval_votes;
DROP TABLE approval_votes;
ALTER TABLE approval_votes_new RENAME TO approval_votes;

-- Slack's replay cache keeps its name: it is the Slack channel's own table.
