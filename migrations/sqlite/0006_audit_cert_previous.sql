-- The certificate a rotating refresh moved a grant away from (reason cert_rotated), beside the
-- event's own certificate. Absent from the hashed form when empty, so older events keep their
-- hashes.
ALTER TABLE audit_events ADD COLUMN cert_previous TEXT;
