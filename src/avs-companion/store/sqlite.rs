//! [`Store`] on SQLite in WAL mode with `synchronous=FULL`: a committed
//! change survives a crash or power cut, and an interrupted one leaves no
//! trace.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Lease, LoginState, SecretKind, SecretRow, Session, SessionInfo, Status, Store, StoreError,
    TakeState, Tokens,
};
use kit::secret::Secret;

/// Ended sessions are kept this long, so a device still polling hears
/// `access_denied`, not `invalid_session`. Pending sessions go as soon as
/// their code expires: a flood of registrations must not stay on disk.
const KEEP_ENDED_SECS: u64 = 24 * 3600;
/// Login states kept per session: each press of "Login with Amazon" adds
/// one, and only the newest few can still be finished.
const STATES_PER_SESSION: i64 = 4;

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`: its directory
    /// mode 0700, the file 0600.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let io = |source| StoreError::Io {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            kit::fsutil::ensure_private_dir(dir).map_err(io)?;
        }
        // Create the file ourselves so it is 0600 from the first byte;
        // SQLite gives its -wal and -shm files the same mode.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let db = |source| StoreError::Db {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        adopt_legacy(&conn).map_err(db)?;
        let history = has_history(&conn).map_err(db)?;
        let mut conn = conn;
        super::migrate::run(super::migrate::SQLITE, &mut conn, history, &shown)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Where the schema stands (for `--check-config`).
    pub fn schema_state(&self) -> Result<super::SchemaState, StoreError> {
        let mut conn = self.conn();
        let history = has_history(&conn).map_err(|e| self.err(e))?;
        super::migrate::state(super::migrate::SQLITE, &mut *conn, history).map_err(|e| {
            StoreError::Schema {
                what: self.path.display().to_string(),
                message: format!("cannot read the schema history: {e}"),
                fix: "check that the file is an avs-companion database".into(),
            }
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // The connection holds no Rust invariants a panic could break.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.path.display().to_string(),
            source,
        }
    }
}

/// A database from before versioned migrations whose `sessions` lacks
/// `created_at` (its `user_version` 1) gets it here, so the baseline
/// migration, which creates tables only if missing, finds today's shape.
fn adopt_legacy(conn: &Connection) -> rusqlite::Result<()> {
    let columns = |table: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        stmt.query_map([table], |r| r.get(0))?.collect()
    };
    let sessions = columns("sessions")?;
    if !sessions.is_empty() && !sessions.iter().any(|c| c == "created_at") {
        conn.execute_batch(
            "ALTER TABLE sessions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(())
}

/// Whether refinery's history table exists in `conn`.
pub(super) fn has_history(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [super::migrate::HISTORY],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn now_secs() -> i64 {
    i64::try_from(kit::clock::unix_now()).unwrap_or(i64::MAX)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    let access: Option<String> = r.get("access_token")?;
    let refresh: Option<String> = r.get("refresh_token")?;
    let tokens = match (access, refresh) {
        (Some(a), Some(rt)) => Some(Tokens {
            access: Secret::new(a),
            access_expires_at: u(r.get::<_, Option<i64>>("access_expires_at")?.unwrap_or(0)),
            refresh: Secret::new(rt),
        }),
        _ => None,
    };
    Ok(Session {
        id: Secret::new(r.get::<_, String>("id")?),
        reg_code: r.get("reg_code")?,
        product_id: r.get("product_id")?,
        dsn: r.get("dsn")?,
        reg_expires_at: u(r.get("reg_expires_at")?),
        status: Status::parse(&r.get::<_, String>("status")?),
        interval: u(r.get("interval")?),
        last_poll_at: r.get::<_, Option<i64>>("last_poll_at")?.map(u),
        tokens,
        version: u(r.get("token_version")?),
    })
}

impl Store for SqliteStore {
    fn create_session(&self, s: &Session) -> Result<bool, StoreError> {
        let r = self.conn().execute(
            "INSERT INTO sessions (id, reg_code, product_id, dsn, reg_expires_at, status, interval, updated_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                s.id.expose(),
                s.reg_code,
                s.product_id,
                s.dsn,
                i(s.reg_expires_at),
                s.status.as_str(),
                i(s.interval),
                now_secs()
            ],
        );
        match r {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.conn()
            .query_row(
                "SELECT * FROM sessions WHERE id = ?1",
                [id],
                session_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn session_by_code(&self, code: &str) -> Result<Option<Session>, StoreError> {
        self.conn()
            .query_row(
                "SELECT * FROM sessions WHERE reg_code = ?1 AND status = 'pending'",
                [code],
                session_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn add_state(&self, st: &LoginState) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO login_states (state, session_id, cookie, verifier, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                st.state.expose(),
                st.session_id.expose(),
                st.cookie.expose(),
                st.verifier.expose(),
                i(st.expires_at)
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM login_states WHERE session_id = ?1 AND rowid NOT IN
             (SELECT rowid FROM login_states WHERE session_id = ?1 ORDER BY rowid DESC LIMIT ?2)",
            params![st.session_id.expose(), STATES_PER_SESSION],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn take_state(
        &self,
        state: &str,
        cookie: Option<&str>,
        now: u64,
    ) -> Result<TakeState, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let row = tx
            .query_row(
                "SELECT state, session_id, cookie, verifier, expires_at FROM login_states WHERE state = ?1",
                [state],
                |r| {
                    Ok(LoginState {
                        state: Secret::new(r.get::<_, String>(0)?),
                        session_id: Secret::new(r.get::<_, String>(1)?),
                        cookie: Secret::new(r.get::<_, String>(2)?),
                        verifier: Secret::new(r.get::<_, String>(3)?),
                        expires_at: u(r.get(4)?),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(st) = row else {
            return Ok(TakeState::Unknown);
        };
        if now >= st.expires_at {
            return Ok(TakeState::Expired);
        }
        let same_browser =
            cookie.is_some_and(|c| https::ct_eq(c.as_bytes(), st.cookie.expose().as_bytes()));
        if !same_browser {
            return Ok(TakeState::WrongBrowser);
        }
        tx.execute("DELETE FROM login_states WHERE state = ?1", [state])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(TakeState::Taken(st))
    }

    fn link(&self, id: &str, t: &Tokens) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "UPDATE sessions SET status = 'linked', reg_code = NULL, access_token = ?2,
                 access_expires_at = ?3, refresh_token = ?4, updated_at = ?5,
                 token_version = token_version + 1, lease_token = NULL, lease_until = NULL
                 WHERE id = ?1 AND status = 'pending'",
                params![
                    id,
                    t.access.expose(),
                    i(t.access_expires_at),
                    t.refresh.expose(),
                    now_secs()
                ],
            )
            .map_err(|e| self.err(e))?;
        // Other logins started for this session cannot be finished any more.
        tx.execute("DELETE FROM login_states WHERE session_id = ?1", [id])
            .map_err(|e| self.err(e))?;
        if n == 1 {
            // The device registered again: whoever holds an older session
            // id for it (a backup, an old SD card) gets no more tokens.
            tx.execute(
                "DELETE FROM login_states WHERE session_id IN
                 (SELECT s.id FROM sessions s, sessions me WHERE me.id = ?1 AND s.id != ?1
                  AND s.product_id = me.product_id AND s.dsn = me.dsn)",
                [id],
            )
            .map_err(|e| self.err(e))?;
            tx.execute(
                "UPDATE sessions SET status = 'revoked', reg_code = NULL, access_token = NULL,
                 access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = ?2
                 WHERE id != ?1 AND status IN ('pending', 'linked')
                 AND (product_id, dsn) = (SELECT product_id, dsn FROM sessions WHERE id = ?1)",
                params![id, now_secs()],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn update_tokens(&self, id: &str, version: u64, t: &Tokens) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE sessions SET access_token = ?2, access_expires_at = ?3, refresh_token = ?4,
                 updated_at = ?5, token_version = token_version + 1, lease_token = NULL,
                 lease_until = NULL WHERE id = ?1 AND status = 'linked' AND token_version = ?6",
                params![
                    id,
                    t.access.expose(),
                    i(t.access_expires_at),
                    t.refresh.expose(),
                    now_secs(),
                    i(version)
                ],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn lease_refresh(&self, id: &str, lease: &Lease) -> Result<Option<Session>, StoreError> {
        // One statement under SQLite's write lock: of two callers, the
        // second sees the first's lease.
        self.conn()
            .query_row(
                "UPDATE sessions SET lease_token = ?2, lease_until = ?3
                 WHERE id = ?1 AND status = 'linked'
                 AND (lease_token IS NULL OR lease_until <= ?4 OR lease_token = ?2)
                 RETURNING *",
                params![id, lease.token, i(lease.until), i(lease.now)],
                session_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn renew_refresh(&self, id: &str, token: &str, until: u64) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE sessions SET lease_until = ?3
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'linked'",
                params![id, token, i(until)],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn release_refresh(
        &self,
        id: &str,
        token: &str,
        hold_until: Option<u64>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let r = match hold_until {
            Some(t) => conn.execute(
                "UPDATE sessions SET lease_until = ?3 WHERE id = ?1 AND lease_token = ?2",
                params![id, token, i(t)],
            ),
            None => conn.execute(
                "UPDATE sessions SET lease_token = NULL, lease_until = NULL
                 WHERE id = ?1 AND lease_token = ?2",
                params![id, token],
            ),
        };
        r.map(|_| ()).map_err(|e| self.err(e))
    }

    fn lease_due(
        &self,
        due_by: u64,
        lease: &Lease,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "UPDATE sessions SET lease_token = ?1, lease_until = ?2 WHERE id IN
                 (SELECT id FROM sessions WHERE status = 'linked' AND access_expires_at <= ?3
                  AND (lease_token IS NULL OR lease_until <= ?4)
                  ORDER BY access_expires_at LIMIT ?5)
                 RETURNING *",
            )
            .map_err(|e| self.err(e))?;
        let mut due: Vec<Session> = stmt
            .query_map(
                params![
                    lease.token,
                    i(lease.until),
                    i(due_by),
                    i(lease.now),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                session_from_row,
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        due.sort_by_key(|s| s.tokens.as_ref().map_or(0, |t| t.access_expires_at));
        Ok(due)
    }

    fn revoke_if_unchanged(&self, id: &str, version: u64) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE sessions SET status = 'revoked', reg_code = NULL, access_token = NULL,
                 access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = ?3
                 WHERE id = ?1 AND status = 'linked' AND token_version = ?2",
                params![id, i(version), now_secs()],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn end(&self, id: &str, status: Status) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "UPDATE sessions SET status = ?2, reg_code = NULL, access_token = NULL,
             access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = ?3 WHERE id = ?1",
            params![id, status.as_str(), now_secs()],
        )
        .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM login_states WHERE session_id = ?1", [id])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn touch_poll(&self, id: &str, now: u64, interval: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE sessions SET last_poll_at = ?2, interval = ?3 WHERE id = ?1",
                params![id, i(now), i(interval)],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut n = tx
            .execute("DELETE FROM login_states WHERE expires_at <= ?1", [i(now)])
            .map_err(|e| self.err(e))?;
        n += tx
            .execute(
                "DELETE FROM sessions WHERE status = 'pending' AND reg_expires_at <= ?1",
                [i(now)],
            )
            .map_err(|e| self.err(e))?;
        n += tx
            .execute(
                "DELETE FROM sessions WHERE status NOT IN ('linked', 'pending')
                 AND reg_expires_at + ?2 <= ?1 AND updated_at + ?2 <= ?1",
                params![i(now), i(KEEP_ENDED_SECS)],
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n)
    }

    fn pending_count(&self, now: u64) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE status = 'pending' AND reg_expires_at > ?1",
                [i(now)],
                |r| r.get::<_, i64>(0),
            )
            .map(u)
            .map_err(|e| self.err(e))
    }

    fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, product_id, dsn, status, created_at, updated_at FROM sessions
                 ORDER BY product_id, dsn, created_at",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| {
            Ok(SessionInfo {
                short_id: super::short_id(&r.get::<_, String>(0)?),
                product_id: r.get(1)?,
                dsn: r.get(2)?,
                status: Status::parse(&r.get::<_, String>(3)?),
                created_at: u(r.get(4)?),
                updated_at: u(r.get(5)?),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    fn ids_by_short_id(&self, prefix: &str) -> Result<Vec<Secret>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id FROM sessions")
            .map_err(|e| self.err(e))?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(ids
            .into_iter()
            .filter(|id| super::short_id(id).starts_with(prefix))
            .map(Secret::new)
            .collect())
    }

    fn revoke_device(&self, product_id: &str, dsn: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM login_states WHERE session_id IN
             (SELECT id FROM sessions WHERE product_id = ?1 AND dsn = ?2)",
            params![product_id, dsn],
        )
        .map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "UPDATE sessions SET status = 'revoked', reg_code = NULL, access_token = NULL,
                 access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = ?3
                 WHERE product_id = ?1 AND dsn = ?2 AND status IN ('pending', 'linked')",
                params![product_id, dsn, now_secs()],
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n)
    }

    fn secrets(&self) -> Result<Vec<SecretRow>, StoreError> {
        let conn = self.conn();
        let mut out = Vec::new();
        for (kind, sql) in [
            (
                SecretKind::Refresh,
                "SELECT id, refresh_token FROM sessions WHERE refresh_token IS NOT NULL",
            ),
            (
                SecretKind::Verifier,
                "SELECT state, verifier FROM login_states",
            ),
        ] {
            let mut stmt = conn.prepare(sql).map_err(|e| self.err(e))?;
            let rows: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?;
            out.extend(
                rows.into_iter()
                    .map(|(key, value)| SecretRow { kind, key, value }),
            );
        }
        Ok(out)
    }

    fn replace_secret(
        &self,
        kind: SecretKind,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let sql = match kind {
            SecretKind::Refresh => {
                "UPDATE sessions SET refresh_token = ?3 WHERE id = ?1 AND refresh_token = ?2"
            }
            SecretKind::Verifier => {
                "UPDATE login_states SET verifier = ?3 WHERE state = ?1 AND verifier = ?2"
            }
        };
        self.conn()
            .execute(sql, params![key, old, new])
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn key_checks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT key_id, check_value FROM store_keys ORDER BY key_id")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    fn add_key_check(&self, id: &str, check: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO store_keys (key_id, check_value) VALUES (?1, ?2)
                 ON CONFLICT (key_id) DO NOTHING",
                params![id, check],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn retire_key_checks(&self, keep: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM store_keys WHERE key_id <> ?1", [keep])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
