-- The lease (ledger/store's leases table) of the process working on an
-- operation: the last one that moved it. Another process takes a
-- non-terminal operation over only once that lease is dead. NULL: moved last
-- by a process without a lease (a CLI command, or tollgate before leases).
ALTER TABLE operations ADD COLUMN lease_id TEXT;
