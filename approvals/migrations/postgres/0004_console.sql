-- approvals: the web console's sign-in links and sessions.
--
-- Only a SHA-256 of each secret is stored, so reading the database does not
-- sign anyone in. A link is minted by one process (tollgate approvals open, or
-- the server answering a Slack click) and redeemed by the serving one.

CREATE TABLE approval_console_links (
    token_hash TEXT    PRIMARY KEY, -- hex SHA-256 of the link's secret
    approver   TEXT    NOT NULL,    -- who the link signs in
    next_path  TEXT    NOT NULL DEFAULT '/console/', -- where it lands; always a console path
    created_by TEXT    NOT NULL,    -- cli:OSUSER or slack:UXXXX
    created_at BIGINT  NOT NULL,    -- unix nanoseconds
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT              -- set once: a link signs in one browser, once
);
CREATE INDEX approval_console_links_expiry ON approval_console_links (expires_at);

CREATE TABLE approval_console_sessions (
    token_hash TEXT    PRIMARY KEY, -- hex SHA-256 of the cookie's secret
    approver   TEXT    NOT NULL,
    link_hash  TEXT    NOT NULL,    -- the link it was opened with
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    ended_at   BIGINT               -- signed out
);
CREATE INDEX approval_console_sessions_expiry ON approval_console_sessions (expires_at);

-- The console's public address as the serving tollgate knows it, so a CLI
-- process mints links that point at the running server.
CREATE TABLE approval_console_endpoint (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    base_url     TEXT    NOT NULL,
    published_at BIGINT  NOT NULL
);
