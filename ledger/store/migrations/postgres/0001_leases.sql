-- store: one lease per running tollgate process (server or replica). An
-- operation records the lease of the process working on it; another process
-- takes it over only once that lease is dead. Times are BIGINT unix
-- nanoseconds. On PostgreSQL a lease lives by heartbeat alone: lock_file is
-- always ''.
CREATE TABLE leases (
    id           TEXT    PRIMARY KEY,
    pid          BIGINT  NOT NULL,
    host         TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL,
    lock_file    TEXT    NOT NULL DEFAULT '',
    lock_dev     BIGINT  NOT NULL DEFAULT 0,
    lock_ino     BIGINT  NOT NULL DEFAULT 0,
    -- Set by the process that found the lease dead and took over its work; a
    -- holder that finds it set has lost its lease and must stop.
    reclaimed_at BIGINT
);
