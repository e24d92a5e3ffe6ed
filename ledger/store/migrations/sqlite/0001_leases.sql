-- store: one lease per running tollgate process (server or replica). An
-- operation records the lease of the process working on it; another process
-- takes it over only once that lease is dead. Times are INTEGER unix
-- nanoseconds.
CREATE TABLE leases (
    id           TEXT    PRIMARY KEY,
    pid          INTEGER NOT NULL,
    host         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    -- The file the process holds an exclusive flock on while it lives, as an
    -- absolute path and its identity: liveness is checked on exactly this
    -- file, never on a path derived from how another process named the
    -- database. '' where leases live by heartbeat alone.
    lock_file    TEXT    NOT NULL DEFAULT '',
    lock_dev     INTEGER NOT NULL DEFAULT 0,
    lock_ino     INTEGER NOT NULL DEFAULT 0,
    -- Set by the process that found the lease dead and took over its work; a
    -- holder that finds it set has lost its lease and must stop.
    reclaimed_at INTEGER
);
