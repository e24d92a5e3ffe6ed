-- When a scope was last unfrozen: the auto-freeze counts only the blocks after
-- it, so an agent a human just unfroze is not frozen again by old blocks.
CREATE TABLE freeze_clears (
    scope TEXT    PRIMARY KEY,
    at    BIGINT  NOT NULL
);
