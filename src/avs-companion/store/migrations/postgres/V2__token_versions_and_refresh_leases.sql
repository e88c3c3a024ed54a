-- See SQLite's V2: the same columns and meaning.
ALTER TABLE sessions ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_token TEXT;
ALTER TABLE sessions ADD COLUMN lease_until BIGINT;
CREATE INDEX sessions_due ON sessions (status, access_expires_at);
