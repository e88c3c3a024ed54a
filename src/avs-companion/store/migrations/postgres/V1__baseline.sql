-- The same tables and meaning as SQLite's V1: Unix seconds in BIGINT, and
-- a sequence number where SQLite orders login states by rowid.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    reg_code TEXT UNIQUE,
    product_id TEXT NOT NULL,
    dsn TEXT NOT NULL,
    reg_expires_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    "interval" BIGINT NOT NULL,
    last_poll_at BIGINT,
    access_token TEXT,
    access_expires_at BIGINT,
    refresh_token TEXT,
    updated_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_device ON sessions (product_id, dsn);
CREATE TABLE login_states (
    seq BIGSERIAL,
    state TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    cookie TEXT NOT NULL,
    verifier TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_states_session ON login_states (session_id, seq);
