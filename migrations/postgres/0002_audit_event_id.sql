-- Each audit event's own id (not part of the hashed form): a retry after a commit whose outcome
-- was unknown skips the events that did get written.
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id);
