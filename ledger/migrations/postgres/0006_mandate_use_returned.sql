-- When a mandate use was given back: the operation it covered ended without
-- a charge (Cloudflare refused, reconciliation found nothing done, the call
-- released its hold), so the use and its amount count against the mandate
-- no more. NULL: the use stands (pending, or settled with a charge).
ALTER TABLE mandate_uses ADD COLUMN returned_at BIGINT;
