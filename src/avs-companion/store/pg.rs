//! [`Store`] on PostgreSQL, for a fleet of instances sharing one database.
//! Same schema meaning and answers as [`super::SqliteStore`]; every change
//! is one transaction at READ COMMITTED, and the statements that must not
//! race across instances take row locks (`FOR UPDATE`) or are single
//! conditional UPDATEs, which PostgreSQL re-checks after a lock wait.

use std::str::FromStr;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Config, GenericClient, Row};

use super::pool::{Pool, PoolError};
use super::{
    Lease, LoginState, SecretKind, SecretRow, Session, SessionInfo, Status, Store, StoreError,
    TakeState, Tokens,
};
use kit::secret::Secret;

const KEEP_ENDED_SECS: i64 = 24 * 3600;
const STATES_PER_SESSION: i64 = 4;
/// How long a caller waits for a pooled connection before it gives up.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long connecting may take (an unreachable host fails in words, fast).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Two instances starting together must not both migrate: the first holds
/// this advisory lock while the other waits (an arbitrary constant, ours).
const MIGRATION_LOCK: i64 = 0x6176_735f_636f_6d70;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// The URL without any password, for messages.
    what: String,
}

/// Where PostgreSQL is and how to log in.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (a host starting with `%2F` is a
    /// Unix socket directory).
    pub url: String,
    /// The password, if the server asks for one.
    pub password: Option<Secret>,
    /// Connections open at once, at most.
    pub max_connections: usize,
}

impl PgOptions {
    fn config(&self) -> Result<Config, StoreError> {
        let mut c = Config::from_str(&self.url).map_err(|e| StoreError::Pg {
            what: self.url.clone(),
            message: format!("not a PostgreSQL URL: {e}"),
            fix: "write it as postgres://USER@HOST:PORT/DATABASE (the password goes in \
                  storage.password_file, not the URL)"
                .into(),
        })?;
        if let Some(p) = &self.password {
            c.password(p.expose());
        }
        c.connect_timeout(CONNECT_TIMEOUT);
        c.application_name("avs-companion");
        Ok(c)
    }
}

/// What a PostgreSQL failure means for the operator: (what, fix).
pub(super) fn explain(e: &postgres::Error) -> (String, String) {
    let Some(db) = e.as_db_error() else {
        if e.is_closed() {
            return (
                format!("the connection closed: {e}"),
                "check that PostgreSQL is running; the store reconnects by itself".into(),
            );
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        if text.contains("password missing") {
            return (
                "the server asks for a password and none is configured".into(),
                "put the database user's password in a file and set storage.password_file".into(),
            );
        }
        return (
            format!("cannot reach the database: {text}"),
            "check the host and port in storage.url, that PostgreSQL is running, and that a \
             firewall lets this host in"
                .into(),
        );
    };
    let code = db.code();
    let fix = if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        "authentication failed: check the user in storage.url, the password in \
         storage.password_file, and pg_hba.conf on the server"
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        "the database does not exist: create it (createdb -O USER DATABASE) or fix storage.url"
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        "the user lacks a privilege: make it the owner of the database (ALTER DATABASE … OWNER TO …)"
    } else if *code == SqlState::TOO_MANY_CONNECTIONS {
        "the server has no connection left: lower storage.max_connections per instance or raise \
         max_connections on the server"
    } else {
        "see the PostgreSQL server's log for the statement that failed"
    };
    (format!("{} ({})", db.message(), code.code()), fix.into())
}

impl PgStore {
    /// Connect (one connection, to fail early in words), then apply the
    /// migrations this program has and the database lacks.
    pub fn open(opts: &PgOptions) -> Result<Self, StoreError> {
        let store = Self {
            pool: Pool::new(opts.config()?, opts.max_connections, POOL_WAIT),
            what: redact(&opts.url),
        };
        {
            let mut c = store.conn()?;
            c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .map_err(|e| store.err(&e))?;
            let history = has_history(&mut c).map_err(|e| store.err(&e))?;
            let done = super::migrate::run(super::migrate::POSTGRES, &mut *c, history, &store.what);
            let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
            done?;
            unlocked.map_err(|e| store.err(&e))?;
        }
        Ok(store)
    }

    /// Where the schema stands, without changing anything (for
    /// `--check-config`).
    /// Also returns the database's key checks (see `store::seal`).
    pub fn check(
        opts: &PgOptions,
    ) -> Result<(super::SchemaState, Vec<(String, String)>), StoreError> {
        let what = redact(&opts.url);
        let mut c = opts.config()?.connect(postgres::NoTls).map_err(|e| {
            let (message, fix) = explain(&e);
            StoreError::Pg {
                what: what.clone(),
                message,
                fix,
            }
        })?;
        let history = has_history(&mut c).map_err(|e| {
            let (message, fix) = explain(&e);
            StoreError::Pg {
                what: what.clone(),
                message,
                fix,
            }
        })?;
        let state =
            super::migrate::state(super::migrate::POSTGRES, &mut c, history).map_err(|e| {
                StoreError::Schema {
                    what: what.clone(),
                    message: format!("cannot read the schema history: {e}"),
                    fix: "check that the database user may read the tables".into(),
                }
            })?;
        let read_checks =
            |c: &mut postgres::Client| -> Result<Vec<(String, String)>, postgres::Error> {
                let has: bool = c
                    .query_one("SELECT to_regclass('store_keys') IS NOT NULL", &[])?
                    .try_get(0)?;
                if !has {
                    return Ok(Vec::new());
                }
                c.query("SELECT key_id, check_value FROM store_keys", &[])?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            };
        let checks = read_checks(&mut c).map_err(|e| {
            let (message, fix) = explain(&e);
            StoreError::Pg { what, message, fix }
        })?;
        Ok((state, checks))
    }

    fn conn(&self) -> Result<super::pool::Conn<'_>, StoreError> {
        self.pool.get().map_err(|e| match e {
            PoolError::Connect(e) => self.err(&e),
            PoolError::Busy(wait) => StoreError::Pg {
                what: self.what.clone(),
                message: format!("every pooled connection stayed busy for {wait:?}"),
                fix: "raise storage.max_connections, or look for slow statements on the server"
                    .into(),
            },
        })
    }

    fn err(&self, e: &postgres::Error) -> StoreError {
        let (message, fix) = explain(e);
        StoreError::Pg {
            what: self.what.clone(),
            message,
            fix,
        }
    }
}

/// `url` without a password, should someone have put one there.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Whether refinery's history table exists.
fn has_history(c: &mut postgres::Client) -> Result<bool, postgres::Error> {
    c.query_one(
        "SELECT to_regclass($1) IS NOT NULL",
        &[&super::migrate::HISTORY],
    )?
    .try_get(0)
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

fn session_from_row(r: &Row) -> Result<Session, postgres::Error> {
    let access: Option<String> = r.try_get("access_token")?;
    let refresh: Option<String> = r.try_get("refresh_token")?;
    let tokens = match (access, refresh) {
        (Some(a), Some(rt)) => Some(Tokens {
            access: Secret::new(a),
            access_expires_at: u(r
                .try_get::<_, Option<i64>>("access_expires_at")?
                .unwrap_or(0)),
            refresh: Secret::new(rt),
        }),
        _ => None,
    };
    Ok(Session {
        id: Secret::new(r.try_get::<_, String>("id")?),
        reg_code: r.try_get("reg_code")?,
        product_id: r.try_get("product_id")?,
        dsn: r.try_get("dsn")?,
        reg_expires_at: u(r.try_get("reg_expires_at")?),
        status: Status::parse(r.try_get("status")?),
        interval: u(r.try_get("interval")?),
        last_poll_at: r.try_get::<_, Option<i64>>("last_poll_at")?.map(u),
        tokens,
        version: u(r.try_get("token_version")?),
    })
}

fn one_session(
    c: &mut impl GenericClient,
    sql: &str,
    key: &str,
) -> Result<Option<Session>, postgres::Error> {
    c.query_opt(sql, &[&key])?
        .map(|r| session_from_row(&r))
        .transpose()
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Store for PgStore {
    fn create_session(&self, s: &Session) -> Result<bool, StoreError> {
        let r = self.conn()?.execute(
            "INSERT INTO sessions (id, reg_code, product_id, dsn, reg_expires_at, status, \"interval\", updated_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            &[
                &s.id.expose(),
                &s.reg_code,
                &s.product_id,
                &s.dsn,
                &i(s.reg_expires_at),
                &s.status.as_str(),
                &i(s.interval),
                &now_secs(),
            ],
        );
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(false),
            Err(e) => Err(self.err(&e)),
        }
    }

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        one_session(
            &mut *self.conn()?,
            "SELECT * FROM sessions WHERE id = $1",
            id,
        )
        .map_err(|e| self.err(&e))
    }

    fn session_by_code(&self, code: &str) -> Result<Option<Session>, StoreError> {
        one_session(
            &mut *self.conn()?,
            "SELECT * FROM sessions WHERE reg_code = $1 AND status = 'pending'",
            code,
        )
        .map_err(|e| self.err(&e))
    }

    fn add_state(&self, st: &LoginState) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let run = |c: &mut postgres::Client| -> Result<(), postgres::Error> {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO login_states (state, session_id, cookie, verifier, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &st.state.expose(),
                    &st.session_id.expose(),
                    &st.cookie.expose(),
                    &st.verifier.expose(),
                    &i(st.expires_at),
                ],
            )?;
            tx.execute(
                "DELETE FROM login_states WHERE session_id = $1 AND seq NOT IN
                 (SELECT seq FROM login_states WHERE session_id = $1 ORDER BY seq DESC LIMIT $2)",
                &[&st.session_id.expose(), &STATES_PER_SESSION],
            )?;
            tx.commit()
        };
        run(&mut c).map_err(|e| self.err(&e))
    }

    fn take_state(
        &self,
        state: &str,
        cookie: Option<&str>,
        now: u64,
    ) -> Result<TakeState, StoreError> {
        let mut c = self.conn()?;
        let run = |c: &mut postgres::Client| -> Result<TakeState, postgres::Error> {
            let mut tx = c.transaction()?;
            // FOR UPDATE: of two instances given the same state at once,
            // the second waits, then finds it gone.
            let row = tx.query_opt(
                "SELECT state, session_id, cookie, verifier, expires_at FROM login_states
                 WHERE state = $1 FOR UPDATE",
                &[&state],
            )?;
            let Some(r) = row else {
                return Ok(TakeState::Unknown);
            };
            let st = LoginState {
                state: Secret::new(r.try_get::<_, String>(0)?),
                session_id: Secret::new(r.try_get::<_, String>(1)?),
                cookie: Secret::new(r.try_get::<_, String>(2)?),
                verifier: Secret::new(r.try_get::<_, String>(3)?),
                expires_at: u(r.try_get(4)?),
            };
            if now >= st.expires_at {
                return Ok(TakeState::Expired);
            }
            let same_browser =
                cookie.is_some_and(|c| https::ct_eq(c.as_bytes(), st.cookie.expose().as_bytes()));
            if !same_browser {
                return Ok(TakeState::WrongBrowser);
            }
            tx.execute("DELETE FROM login_states WHERE state = $1", &[&state])?;
            tx.commit()?;
            Ok(TakeState::Taken(st))
        };
        run(&mut c).map_err(|e| self.err(&e))
    }

    fn link(&self, id: &str, t: &Tokens) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let run = |c: &mut postgres::Client| -> Result<bool, postgres::Error> {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET status = 'linked', reg_code = NULL, access_token = $2,
                 access_expires_at = $3, refresh_token = $4, updated_at = $5,
                 token_version = token_version + 1, lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND status = 'pending'",
                &[
                    &id,
                    &t.access.expose(),
                    &i(t.access_expires_at),
                    &t.refresh.expose(),
                    &now_secs(),
                ],
            )?;
            tx.execute("DELETE FROM login_states WHERE session_id = $1", &[&id])?;
            if n == 1 {
                tx.execute(
                    "DELETE FROM login_states WHERE session_id IN
                     (SELECT s.id FROM sessions s, sessions me WHERE me.id = $1 AND s.id <> $1
                      AND s.product_id = me.product_id AND s.dsn = me.dsn)",
                    &[&id],
                )?;
                tx.execute(
                    "UPDATE sessions SET status = 'revoked', reg_code = NULL, access_token = NULL,
                     access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = $2
                     WHERE id <> $1 AND status IN ('pending', 'linked')
                     AND (product_id, dsn) = (SELECT product_id, dsn FROM sessions WHERE id = $1)",
                    &[&id, &now_secs()],
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        };
        run(&mut c).map_err(|e| self.err(&e))
    }

    fn update_tokens(&self, id: &str, version: u64, t: &Tokens) -> Result<bool, StoreError> {
        self.conn()?
            .execute(
                "UPDATE sessions SET access_token = $2, access_expires_at = $3, refresh_token = $4,
                 updated_at = $5, token_version = token_version + 1, lease_token = NULL,
                 lease_until = NULL WHERE id = $1 AND status = 'linked' AND token_version = $6",
                &[
                    &id,
                    &t.access.expose(),
                    &i(t.access_expires_at),
                    &t.refresh.expose(),
                    &now_secs(),
                    &i(version),
                ],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(&e))
    }

    fn lease_refresh(&self, id: &str, lease: &Lease) -> Result<Option<Session>, StoreError> {
        // The UPDATE locks the row; a second caller waits for the first to
        // commit, then re-checks the WHERE against the leased row and
        // matches nothing.
        self.conn()?
            .query_opt(
                "UPDATE sessions SET lease_token = $2, lease_until = $3
                 WHERE id = $1 AND status = 'linked'
                 AND (lease_token IS NULL OR lease_until <= $4 OR lease_token = $2)
                 RETURNING *",
                &[&id, &lease.token, &i(lease.until), &i(lease.now)],
            )
            .and_then(|r| r.map(|r| session_from_row(&r)).transpose())
            .map_err(|e| self.err(&e))
    }

    fn renew_refresh(&self, id: &str, token: &str, until: u64) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        c.execute(
            "UPDATE sessions SET lease_until = $3
             WHERE id = $1 AND lease_token = $2 AND status = 'linked'",
            &[&id, &token, &i(until)],
        )
        .map(|n| n == 1)
        .map_err(|e| self.err(&e))
    }

    fn release_refresh(
        &self,
        id: &str,
        token: &str,
        hold_until: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let r = match hold_until {
            Some(t) => c.execute(
                "UPDATE sessions SET lease_until = $3 WHERE id = $1 AND lease_token = $2",
                &[&id, &token, &i(t)],
            ),
            None => c.execute(
                "UPDATE sessions SET lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_token = $2",
                &[&id, &token],
            ),
        };
        r.map(|_| ()).map_err(|e| self.err(&e))
    }

    fn lease_due(
        &self,
        due_by: u64,
        lease: &Lease,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "UPDATE sessions SET lease_token = $1, lease_until = $2 WHERE id IN
                 (SELECT id FROM sessions WHERE status = 'linked' AND access_expires_at <= $3
                  AND (lease_token IS NULL OR lease_until <= $4)
                  ORDER BY access_expires_at LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING *",
                &[
                    &lease.token,
                    &i(lease.until),
                    &i(due_by),
                    &i(lease.now),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .map_err(|e| self.err(&e))?;
        let mut due = rows
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(&e))?;
        due.sort_by_key(|s| s.tokens.as_ref().map_or(0, |t| t.access_expires_at));
        Ok(due)
    }

    fn revoke_if_unchanged(&self, id: &str, version: u64) -> Result<bool, StoreError> {
        self.conn()?
            .execute(
                "UPDATE sessions SET status = 'revoked', reg_code = NULL, access_token = NULL,
                 access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'linked' AND token_version = $2",
                &[&id, &i(version), &now_secs()],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(&e))
    }

    fn end(&self, id: &str, status: Status) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let run = |c: &mut postgres::Client| -> Result<(), postgres::Error> {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE sessions SET status = $2, reg_code = NULL, access_token = NULL,
                 access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = $3 WHERE id = $1",
                &[&id, &status.as_str(), &now_secs()],
            )?;
            tx.execute("DELETE FROM login_states WHERE session_id = $1", &[&id])?;
            tx.commit()
        };
        run(&mut c).map_err(|e| self.err(&e))
    }

    fn touch_poll(&self, id: &str, now: u64, interval: u64) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "UPDATE sessions SET last_poll_at = $2, \"interval\" = $3 WHERE id = $1",
                &[&id, &i(now), &i(interval)],
            )
            .map(|_| ())
            .map_err(|e| self.err(&e))
    }

    fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let mut c = self.conn()?;
        let run = |c: &mut postgres::Client| -> Result<u64, postgres::Error> {
            let mut tx = c.transaction()?;
            let mut n = tx.execute(
                "DELETE FROM login_states WHERE expires_at <= $1",
                &[&i(now)],
            )?;
            n += tx.execute(
                "DELETE FROM sessions WHERE status = 'pending' AND reg_expires_at <= $1",
                &[&i(now)],
            )?;
            n += tx.execute(
                "DELETE FROM sessions WHERE status NOT IN ('linked', 'pending')
                 AND reg_expires_at + $2 <= $1 AND updated_at + $2 <= $1",
                &[&i(now), &KEEP_ENDED_SECS],
            )?;
            tx.commit()?;
            Ok(n)
        };
        run(&mut c).map(count).map_err(|e| self.err(&e))
    }

    fn pending_count(&self, now: u64) -> Result<u64, StoreError> {
        self.conn()?
            .query_one(
                "SELECT COUNT(*) FROM sessions WHERE status = 'pending' AND reg_expires_at > $1",
                &[&i(now)],
            )
            .and_then(|r| r.try_get::<_, i64>(0))
            .map(u)
            .map_err(|e| self.err(&e))
    }

    fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT id, product_id, dsn, status, created_at, updated_at FROM sessions
                 ORDER BY product_id, dsn, created_at",
                &[],
            )
            .map_err(|e| self.err(&e))?;
        rows.iter()
            .map(|r| {
                Ok(SessionInfo {
                    short_id: super::short_id(r.try_get(0)?),
                    product_id: r.try_get(1)?,
                    dsn: r.try_get(2)?,
                    status: Status::parse(r.try_get(3)?),
                    created_at: u(r.try_get(4)?),
                    updated_at: u(r.try_get(5)?),
                })
            })
            .collect::<Result<_, postgres::Error>>()
            .map_err(|e| self.err(&e))
    }

    fn revoke_device(&self, product_id: &str, dsn: &str) -> Result<usize, StoreError> {
        let mut c = self.conn()?;
        let run = |c: &mut postgres::Client| -> Result<u64, postgres::Error> {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM login_states WHERE session_id IN
                 (SELECT id FROM sessions WHERE product_id = $1 AND dsn = $2)",
                &[&product_id, &dsn],
            )?;
            let n = tx.execute(
                "UPDATE sessions SET status = 'revoked', reg_code = NULL, access_token = NULL,
                 access_expires_at = NULL, refresh_token = NULL, token_version = token_version + 1,
                 lease_token = NULL, lease_until = NULL, updated_at = $3
                 WHERE product_id = $1 AND dsn = $2 AND status IN ('pending', 'linked')",
                &[&product_id, &dsn, &now_secs()],
            )?;
            tx.commit()?;
            Ok(n)
        };
        run(&mut c).map(count).map_err(|e| self.err(&e))
    }

    fn ids_by_short_id(&self, prefix: &str) -> Result<Vec<Secret>, StoreError> {
        let rows = self
            .conn()?
            .query("SELECT id FROM sessions", &[])
            .map_err(|e| self.err(&e))?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get(0).map_err(|e| self.err(&e))?;
            if super::short_id(&id).starts_with(prefix) {
                out.push(Secret::new(id));
            }
        }
        Ok(out)
    }

    fn secrets(&self) -> Result<Vec<SecretRow>, StoreError> {
        let mut c = self.conn()?;
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
            let rows = c.query(sql, &[]).map_err(|e| self.err(&e))?;
            for r in rows {
                out.push(SecretRow {
                    kind,
                    key: r.try_get(0).map_err(|e| self.err(&e))?,
                    value: r.try_get(1).map_err(|e| self.err(&e))?,
                });
            }
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
                "UPDATE sessions SET refresh_token = $3 WHERE id = $1 AND refresh_token = $2"
            }
            SecretKind::Verifier => {
                "UPDATE login_states SET verifier = $3 WHERE state = $1 AND verifier = $2"
            }
        };
        self.conn()?
            .execute(sql, &[&key, &old, &new])
            .map(|n| n == 1)
            .map_err(|e| self.err(&e))
    }

    fn key_checks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT key_id, check_value FROM store_keys ORDER BY key_id",
                &[],
            )
            .map_err(|e| self.err(&e))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()
            .map_err(|e| self.err(&e))
    }

    fn add_key_check(&self, id: &str, check: &str) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO store_keys (key_id, check_value) VALUES ($1, $2)
                 ON CONFLICT (key_id) DO NOTHING",
                &[&id, &check],
            )
            .map(|_| ())
            .map_err(|e| self.err(&e))
    }

    fn retire_key_checks(&self, keep: &str) -> Result<(), StoreError> {
        self.conn()?
            .execute("DELETE FROM store_keys WHERE key_id <> $1", &[&keep])
            .map(|_| ())
            .map_err(|e| self.err(&e))
    }
}
