-- The schema as it stood before versioned migrations. IF NOT EXISTS so a
-- database made by those versions is adopted as it is (the store adds
-- created_at to the oldest ones first); every later change is its own
-- migration and never edits this file (refinery checks its checksum).
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    reg_code TEXT UNIQUE,
    product_id TEXT NOT NULL,
    dsn TEXT NOT NULL,
    reg_expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    interval INTEGER NOT NULL,
    last_poll_at INTEGER,
    access_token TEXT,
    access_expires_at INTEGER,
    refresh_token TEXT,
    updated_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS login_states (
    state TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    cookie TEXT NOT NULL,
    verifier TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
