-- Votes keep the order they were cast in, in a column of their own that
-- every engine has (SQLite's rowid has no PostgreSQL twin). seq is the
-- largest so far + 1, assigned in the serialised write transaction.
ALTER TABLE approval_votes ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE approval_votes SET seq = rowid;
CREATE INDEX approval_votes_by_seq ON approval_votes (seq);
