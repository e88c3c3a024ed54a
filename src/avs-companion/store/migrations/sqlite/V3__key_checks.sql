-- Refresh tokens and PKCE verifiers sealed at rest: per key that sealed
-- anything, a known value sealed with it, so a wrong key file is refused
-- at start.
CREATE TABLE store_keys (
    key_id TEXT PRIMARY KEY,
    check_value TEXT NOT NULL
);
