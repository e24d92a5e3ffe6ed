-- A request's first post is claimed before the channel is called, so that of
-- the processes that find it unposted (the one holding the call, any other's
-- retry sweep) exactly one posts it. A claim that outlives its channel call
-- (the process died mid-post) lapses, and another process posts instead.
ALTER TABLE approval_posts ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0; -- unix nanoseconds; 0 = unclaimed
