-- Votes keep the order they were cast in, in a column of their own that
-- every engine has (SQLite's rowid has no PostgreSQL twin). seq is the
-- largest so far + 1, assigned in the serialised write transaction.
ALTER TABLE approval_votes ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE approval_votes SET seq = n.seq
    FROM (SELECT request_id, approver, ROW_NUMBER() OVER (ORDER BY at, request_id, approver) AS seq FROM approval_votes) AS n
    WHERE approval_votes.request_id = n.request_id AND approval_votes.approver = n.approver;
CREATE INDEX approval_votes_by_seq ON approval_votes (seq);
