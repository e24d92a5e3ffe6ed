-- A request the agent withdrew (cancel_operation, a cancelled MCP request
-- or task) is cancelled like one of a frozen agent, but says so: a later
-- vote is told "withdrawn by the agent".
ALTER TABLE approval_requests ADD COLUMN withdrawn INTEGER NOT NULL DEFAULT 0;
