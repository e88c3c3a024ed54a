-- Refreshes coordinated through the database, so any number of instances
-- refresh each session once per due time: token_version grows with every
-- change of a session's tokens (update_tokens is a compare-and-swap on
-- it), and a refresh holds a lease (a random token and an expiry, so a
-- dead instance's lease runs out).
ALTER TABLE sessions ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_token TEXT;
ALTER TABLE sessions ADD COLUMN lease_until INTEGER;
CREATE INDEX sessions_due ON sessions (status, access_expires_at);
