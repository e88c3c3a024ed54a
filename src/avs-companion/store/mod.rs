//! Where sessions, registration codes and login states live: a small
//! [`Store`] trait (so a fleet can swap SQLite for PostgreSQL without
//! touching the flow) and its SQLite implementation in WAL mode. Every
//! change is one transaction, so a crash leaves the old row, never half
//! of a new one.

mod migrate;
mod pg;
mod pool;
pub mod seal;
mod sealed;
mod sqlite;

use std::sync::Arc;

use kit::secret::Secret;
pub use migrate::SchemaState;
pub use pg::{PgOptions, PgStore};
pub use sealed::SealedStore;
pub use sqlite::SqliteStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error(
        "database {path}: {source}; fix: check that the file and its directory are writable by the service user and the disk is not full"
    )]
    Db {
        /// Database file.
        path: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The database file or directory could not be prepared.
    #[error(
        "database {path}: {source}; fix: make the state directory exist and belong to the service user"
    )]
    Io {
        /// Database file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// PostgreSQL refused, failed, or could not be reached.
    #[error("database {what}: {message}; fix: {fix}")]
    Pg {
        /// The URL (never a password).
        what: String,
        /// What went wrong, in words.
        message: String,
        /// What to do.
        fix: String,
    },
    /// The key file does not fit the database, or a sealed value does not
    /// open.
    #[error("storage.key_file: {message}; fix: {fix}")]
    Sealed {
        /// What is wrong.
        message: String,
        /// What to do.
        fix: String,
    },
    /// The schema cannot be brought to this program's version.
    #[error("database {what}: {message}; fix: {fix}")]
    Schema {
        /// Which database.
        what: String,
        /// What is wrong.
        message: String,
        /// What to do.
        fix: String,
    },
    /// The blocking worker went away (shutdown or a panic).
    #[error("database worker stopped")]
    Worker,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the user to log in.
    Pending,
    /// The user logged in; tokens are held.
    Linked,
    /// The user refused consent.
    Denied,
    /// LWA refused the refresh token (the user revoked access).
    Revoked,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Linked => "linked",
            Status::Denied => "denied",
            Status::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "linked" => Status::Linked,
            "denied" => Status::Denied,
            "revoked" => Status::Revoked,
            _ => Status::Pending,
        }
    }
}

/// Tokens held for a linked session.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The current access token.
    pub access: Secret,
    /// When it expires, Unix seconds.
    pub access_expires_at: u64,
    /// The refresh token (never leaves the service).
    pub refresh: Secret,
}

/// One device registration.
#[derive(Debug, Clone)]
pub struct Session {
    /// The secret id the device polls with.
    pub id: Secret,
    /// The code the user types; `None` once used.
    pub reg_code: Option<String>,
    /// Product id the device claimed.
    pub product_id: String,
    /// Device serial number.
    pub dsn: String,
    /// When the registration code stops working, Unix seconds.
    pub reg_expires_at: u64,
    /// Where it stands.
    pub status: Status,
    /// Minimum seconds between polls while pending.
    pub interval: u64,
    /// The last poll, Unix seconds.
    pub last_poll_at: Option<u64>,
    /// Tokens, once linked.
    pub tokens: Option<Tokens>,
    /// Grows with every change of the tokens (link, refresh, end): what
    /// [`Store::update_tokens`] compares before it swaps.
    pub version: u64,
}

/// A claim on refreshing a session: whoever holds an unexpired lease is
/// the only one (across every instance) that may send the session's
/// refresh token to LWA.
#[derive(Debug, Clone)]
pub struct Lease {
    /// A random value naming this holder (not the instance: two requests
    /// in one instance are two holders).
    pub token: String,
    /// The time the lease is taken at, Unix seconds.
    pub now: u64,
    /// When it runs out if never released, Unix seconds: longer than a
    /// refresh can take, so it never runs out under a live holder.
    pub until: u64,
}

/// A login in progress: the `state` sent to LWA and what it is bound to.
#[derive(Debug, Clone)]
pub struct LoginState {
    /// The random `state` value.
    pub state: Secret,
    /// The session it logs in.
    pub session_id: Secret,
    /// The browser cookie it is bound to.
    pub cookie: Secret,
    /// The PKCE verifier, sent only to the token endpoint.
    pub verifier: Secret,
    /// When it stops working, Unix seconds.
    pub expires_at: u64,
}

/// What `avs-companion sessions list` shows of a session: never its id or
/// tokens, only a short fingerprint of the id to name it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The first hex digits of SHA-256(session id): names the session
    /// without revealing anything that would let someone use it.
    pub short_id: String,
    /// Product id.
    pub product_id: String,
    /// Device serial number.
    pub dsn: String,
    /// Where it stands.
    pub status: Status,
    /// When it was registered, Unix seconds (0 if from before this was kept).
    pub created_at: u64,
    /// When it last changed (linked, tokens refreshed, ended), Unix seconds.
    pub updated_at: u64,
}

impl Status {
    /// The status as stored and shown.
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

/// The short, non-secret name of session `id` (see [`SessionInfo::short_id`]).
pub fn short_id(id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    d.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer to [`Store::take_state`].
#[derive(Debug)]
pub enum TakeState {
    /// Valid: consumed and returned.
    Taken(LoginState),
    /// Never issued, or already used.
    Unknown,
    /// Issued but too old.
    Expired,
    /// Issued to another browser (cookie missing or different); left in place.
    WrongBrowser,
}

/// Which secret column a [`SecretRow`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `sessions.refresh_token`, keyed by session id.
    Refresh,
    /// `login_states.verifier`, keyed by state.
    Verifier,
}

impl SecretKind {
    /// The associated data a value of this kind in row `key` is sealed
    /// with: a value moved to another row or column does not open.
    pub fn aad(self, key: &str) -> String {
        match self {
            SecretKind::Refresh => format!("refresh_token:{key}"),
            SecretKind::Verifier => format!("verifier:{key}"),
        }
    }
}

/// One stored secret as it lies in the database (sealed or, from before
/// a key file, in clear), for `rotate-key`.
#[derive(Debug, Clone)]
pub struct SecretRow {
    /// Which column.
    pub kind: SecretKind,
    /// The session id or state naming the row.
    pub key: String,
    /// The stored value.
    pub value: String,
}

/// Storage the flow needs. Methods block: call them through [`StoreHandle`].
pub trait Store: Send + Sync + 'static {
    /// Insert a new session; `Ok(false)` if its registration code is taken.
    fn create_session(&self, s: &Session) -> Result<bool, StoreError>;
    /// The session with this id.
    fn session(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// The pending session with this registration code.
    fn session_by_code(&self, code: &str) -> Result<Option<Session>, StoreError>;
    /// Remember a login state.
    fn add_state(&self, st: &LoginState) -> Result<(), StoreError>;
    /// Consume `state` if it is valid at `now` and bound to `cookie`.
    fn take_state(
        &self,
        state: &str,
        cookie: Option<&str>,
        now: u64,
    ) -> Result<TakeState, StoreError>;
    /// Link a pending session: store its tokens, retire its code, and
    /// revoke every other session of the same product id and serial (a
    /// device registered again replaces its old sessions).
    /// `Ok(false)` if it was not pending.
    fn link(&self, id: &str, tokens: &Tokens) -> Result<bool, StoreError>;
    /// Replace the tokens of a linked session after a refresh, if their
    /// version is still `version` (compare-and-swap: the version then
    /// grows by one and any refresh lease is released). `Ok(false)`: the
    /// tokens changed meanwhile (or the session ended) and nothing was
    /// written.
    fn update_tokens(&self, id: &str, version: u64, tokens: &Tokens) -> Result<bool, StoreError>;
    /// Take the refresh lease of linked session `id` if nobody holds an
    /// unexpired one (or `lease` already does); the session as it stands
    /// under the lease, for the re-check before refreshing. `Ok(None)`:
    /// someone else holds it, or the session is not linked.
    fn lease_refresh(&self, id: &str, lease: &Lease) -> Result<Option<Session>, StoreError>;
    /// Extend the lease named `token` of session `id` to `until`, before
    /// each call to LWA, so a lease need only outlast one request and a
    /// dead holder's runs out soon. `Ok(false)`: the lease is no longer
    /// this holder's (it ran out and someone else took it, or was released):
    /// do not call LWA.
    fn renew_refresh(&self, id: &str, token: &str, until: u64) -> Result<bool, StoreError>;
    /// Give the lease named `token` back early (a refresh that failed or
    /// was not needed), or keep others off until `hold_until` (a failed
    /// refresh's back-off). A lease someone else holds is left alone.
    fn release_refresh(
        &self,
        id: &str,
        token: &str,
        hold_until: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Lease up to `limit` linked sessions whose access token expires by
    /// `due_by` and whose lease is free or expired, soonest first, all
    /// under `lease`; a session leased by another caller is skipped, never
    /// waited for (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    fn lease_due(
        &self,
        due_by: u64,
        lease: &Lease,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError>;
    /// Revoke linked session `id` if its tokens are still at `version`
    /// (LWA refused their refresh token: `invalid_grant`). `Ok(false)`:
    /// another holder refreshed meanwhile, so the refusal was of a
    /// superseded token, not a revocation.
    fn revoke_if_unchanged(&self, id: &str, version: u64) -> Result<bool, StoreError>;
    /// End a session (denied or revoked), forgetting its tokens.
    fn end(&self, id: &str, status: Status) -> Result<(), StoreError>;
    /// Record a poll and the interval the device must keep.
    fn touch_poll(&self, id: &str, now: u64, interval: u64) -> Result<(), StoreError>;
    /// Delete what has expired; returns how many rows went.
    fn purge(&self, now: u64) -> Result<usize, StoreError>;
    /// How many sessions are pending and not yet expired at `now`.
    fn pending_count(&self, now: u64) -> Result<u64, StoreError>;
    /// Every session, for the operator (no secrets).
    fn list(&self) -> Result<Vec<SessionInfo>, StoreError>;
    /// End every pending or linked session of `product_id` + `dsn` as
    /// revoked; returns how many.
    fn revoke_device(&self, product_id: &str, dsn: &str) -> Result<usize, StoreError>;
    /// The ids of the sessions whose [`short_id`] starts with `prefix`.
    fn ids_by_short_id(&self, prefix: &str) -> Result<Vec<Secret>, StoreError>;
    /// Every stored refresh token and verifier, as stored.
    fn secrets(&self) -> Result<Vec<SecretRow>, StoreError>;
    /// Replace a stored secret if it is still `old` (a refresh meanwhile
    /// wins); `Ok(false)` if it changed or went.
    fn replace_secret(
        &self,
        kind: SecretKind,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError>;
    /// The key checks: (key id, check value) per key that sealed anything.
    fn key_checks(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Record key `id`'s check value, if it has none yet.
    fn add_key_check(&self, id: &str, check: &str) -> Result<(), StoreError>;
    /// Forget every key check but `id`'s (after every value is sealed
    /// with it).
    fn retire_key_checks(&self, keep: &str) -> Result<(), StoreError>;
}

/// Open the store `config` names: PostgreSQL if `storage.url` is set,
/// else the SQLite file. Blocking (it connects and migrates): call it off
/// the async workers.
pub fn open(config: &crate::config::CompanionConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(open_sealed(config)?))
}

/// [`open`], as the sealing wrapper (for `rotate-key`).
pub fn open_sealed(config: &crate::config::CompanionConfig) -> Result<SealedStore, StoreError> {
    // The key first: a bad key file should not leave a migrated database.
    let keys = load_keys(config)?;
    let inner: Arc<dyn Store> = match &config.storage.url {
        Some(url) => Arc::new(PgStore::open(&pg_options(config, url)?)?),
        None => Arc::new(SqliteStore::open(&config.database_path())?),
    };
    SealedStore::new(inner, keys)
}

/// Where the store `config` names stands, changing nothing: connects,
/// logs in and reads the schema version (`--check-config`).
pub fn check(config: &crate::config::CompanionConfig) -> Result<SchemaState, StoreError> {
    let keys = load_keys(config)?;
    let (state, checks) = match &config.storage.url {
        Some(url) => PgStore::check(&pg_options(config, url)?)?,
        None => check_sqlite(&config.database_path())?,
    };
    // A wrong key file, told now rather than at the service's start.
    sealed::check_keys(keys.as_ref(), &checks)?;
    Ok(state)
}

fn load_keys(config: &crate::config::CompanionConfig) -> Result<Option<seal::Keys>, StoreError> {
    config
        .storage
        .key_file
        .as_ref()
        .map(|p| seal::Keys::load(p).map_err(|(message, fix)| StoreError::Sealed { message, fix }))
        .transpose()
}

/// The SQLite file's schema and key checks, read-only.
fn check_sqlite(
    path: &std::path::Path,
) -> Result<(SchemaState, Vec<(String, String)>), StoreError> {
    let want = migrate::latest(migrate::SQLITE);
    if !path.exists() {
        return Ok((SchemaState::Behind { at: None, want }, Vec::new()));
    }
    let shown = path.display().to_string();
    let db = |source| StoreError::Db {
        path: shown.clone(),
        source,
    };
    let mut conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(db)?;
    let history = sqlite::has_history(&conn).map_err(db)?;
    let state =
        migrate::state(migrate::SQLITE, &mut conn, history).map_err(|e| StoreError::Schema {
            what: shown.clone(),
            message: format!("cannot read the schema history: {e}"),
            fix: "check that the file is an avs-companion database".into(),
        })?;
    let has_keys: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'store_keys'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db)?
        > 0;
    let mut checks = Vec::new();
    if has_keys {
        let mut stmt = conn
            .prepare("SELECT key_id, check_value FROM store_keys")
            .map_err(db)?;
        checks = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(db)?;
    }
    Ok((state, checks))
}

fn pg_options(config: &crate::config::CompanionConfig, url: &str) -> Result<PgOptions, StoreError> {
    let password = match &config.storage.password_file {
        Some(p) => Some(
            crate::config::read_owned_secret(p).map_err(|(message, fix)| StoreError::Pg {
                what: format!("storage.password_file {}", p.display()),
                message,
                fix,
            })?,
        ),
        None => None,
    };
    Ok(PgOptions {
        url: url.to_string(),
        password,
        max_connections: config.storage.max_connections,
    })
}

/// A store shared by the async handlers; each call runs on the blocking
/// pool so SQLite's fsyncs never stall the async workers.
#[derive(Clone)]
pub struct StoreHandle(Arc<dyn Store>);

impl StoreHandle {
    /// Wrap a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    /// Run `f` against the store off the async workers.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|_| StoreError::Worker)?
    }
}

#[cfg(any(test, feature = "store-suite"))]
pub mod suite;
#[cfg(test)]
mod tests;
