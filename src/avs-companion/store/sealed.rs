//! A [`Store`] that seals refresh tokens and PKCE verifiers on the way in
//! and opens them on the way out (see [`super::seal`]), around either
//! backend, so neither knows about keys. Without a key file it passes
//! everything through, and refuses a database that holds sealed values.

use std::sync::Arc;

use kit::secret::Secret;

use super::seal::{Keys, SealError, key_id};
use super::{
    Lease, LoginState, SecretKind, SecretRow, Session, SessionInfo, Status, Store, StoreError,
    TakeState, Tokens,
};

/// The wrapper.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Option<Keys>,
    /// The key new values are sealed with: the newest key of the file that
    /// the database has a check for (see [`SealedStore::rotate`]).
    active: String,
}

fn sealed_err(e: SealError) -> StoreError {
    StoreError::Sealed {
        message: e.0,
        fix: e.1,
    }
}

/// Check `keys` against the database's key `checks`: every key that sealed
/// something must be in the file and be the same key. The active key: the
/// file's newest one the database has a check for (`None`: no key yet).
pub(super) fn check_keys(
    keys: Option<&Keys>,
    checks: &[(String, String)],
) -> Result<Option<String>, StoreError> {
    let Some(keys) = keys else {
        if let Some((id, _)) = checks.first() {
            return Err(StoreError::Sealed {
                message: format!(
                    "the database holds refresh tokens sealed with key `{id}` but \
                     storage.key_file is not set"
                ),
                fix: "set storage.key_file to the key file this database was used with".into(),
            });
        }
        return Ok(None);
    };
    for (id, check) in checks {
        if !keys.ids().any(|k| k == id) {
            return Err(StoreError::Sealed {
                message: format!(
                    "the database holds values sealed with key `{id}`, which storage.key_file lacks"
                ),
                fix: format!(
                    "put key `{id}` back into storage.key_file (after `avs-companion rotate-key` \
                     no value needs it any more)"
                ),
            });
        }
        keys.verify_check(id, check).map_err(sealed_err)?;
    }
    Ok(keys
        .ids()
        .filter(|k| checks.iter().any(|(id, _)| id == k))
        .last()
        .map(str::to_string))
}

impl SealedStore {
    /// Wrap `inner`, checking the key file against the database: every key
    /// that sealed something must be in the file and be the same key. A
    /// database that never had a key gets its values sealed now with the
    /// file's newest key.
    pub fn new(inner: Arc<dyn Store>, keys: Option<Keys>) -> Result<Self, StoreError> {
        let checks = inner.key_checks()?;
        let active = check_keys(keys.as_ref(), &checks)?;
        let Some(keys) = keys else {
            return Ok(Self {
                inner,
                keys: None,
                active: String::new(),
            });
        };
        let first_key = active.is_none();
        let active = active.unwrap_or_else(|| keys.newest().to_string());
        let store = Self {
            inner,
            keys: Some(keys),
            active,
        };
        if first_key {
            // The first key this database sees: seal what lies in clear.
            store.rotate()?;
        }
        Ok(store)
    }

    /// Seal every value with the key file's newest key and make it the
    /// active one; the database then forgets the other keys' checks, so
    /// they may leave the key file. Returns how many values were resealed.
    pub fn rotate(&self) -> Result<usize, StoreError> {
        let Some(keys) = &self.keys else {
            return Err(StoreError::Sealed {
                message: "storage.key_file is not set".into(),
                fix: "make a key file and set storage.key_file (see the README's fleet section)"
                    .into(),
            });
        };
        let newest = keys.newest();
        self.inner
            .add_key_check(newest, &keys.check_value(newest).map_err(sealed_err)?)?;
        let mut n = 0;
        for SecretRow { kind, key, value } in self.inner.secrets()? {
            if key_id(&value) == Some(newest) {
                continue;
            }
            let aad = kind.aad(&key);
            let plain = keys.open(&aad, &value).map_err(sealed_err)?;
            let sealed = keys.seal(newest, &aad, &plain).map_err(sealed_err)?;
            // A refresh that replaced the value meanwhile sealed it itself.
            if self.inner.replace_secret(kind, &key, &value, &sealed)? {
                n += 1;
            }
        }
        self.inner.retire_key_checks(newest)?;
        Ok(n)
    }

    fn seal(&self, kind: SecretKind, key: &str, plain: &Secret) -> Result<Secret, StoreError> {
        match &self.keys {
            Some(keys) => keys
                .seal(&self.active, &kind.aad(key), plain.expose())
                .map(Secret::new)
                .map_err(sealed_err),
            None => Ok(plain.clone()),
        }
    }

    fn open(&self, kind: SecretKind, key: &str, stored: &Secret) -> Result<Secret, StoreError> {
        match &self.keys {
            Some(keys) => keys
                .open(&kind.aad(key), stored.expose())
                .map(Secret::new)
                .map_err(sealed_err),
            None => Ok(stored.clone()),
        }
    }

    fn sealed_tokens(&self, id: &str, t: &Tokens) -> Result<Tokens, StoreError> {
        Ok(Tokens {
            refresh: self.seal(SecretKind::Refresh, id, &t.refresh)?,
            ..t.clone()
        })
    }

    fn opened(&self, mut s: Session) -> Result<Session, StoreError> {
        if let Some(t) = &mut s.tokens {
            t.refresh = self.open(SecretKind::Refresh, s.id.expose(), &t.refresh)?;
        }
        Ok(s)
    }

    fn opened_opt(&self, s: Option<Session>) -> Result<Option<Session>, StoreError> {
        s.map(|s| self.opened(s)).transpose()
    }
}

impl Store for SealedStore {
    fn create_session(&self, s: &Session) -> Result<bool, StoreError> {
        self.inner.create_session(s)
    }

    fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.opened_opt(self.inner.session(id)?)
    }

    fn session_by_code(&self, code: &str) -> Result<Option<Session>, StoreError> {
        self.opened_opt(self.inner.session_by_code(code)?)
    }

    fn add_state(&self, st: &LoginState) -> Result<(), StoreError> {
        let sealed = LoginState {
            verifier: self.seal(SecretKind::Verifier, st.state.expose(), &st.verifier)?,
            ..st.clone()
        };
        self.inner.add_state(&sealed)
    }

    fn take_state(
        &self,
        state: &str,
        cookie: Option<&str>,
        now: u64,
    ) -> Result<TakeState, StoreError> {
        match self.inner.take_state(state, cookie, now)? {
            TakeState::Taken(mut st) => {
                st.verifier = self.open(SecretKind::Verifier, state, &st.verifier)?;
                Ok(TakeState::Taken(st))
            }
            other => Ok(other),
        }
    }

    fn link(&self, id: &str, tokens: &Tokens) -> Result<bool, StoreError> {
        self.inner.link(id, &self.sealed_tokens(id, tokens)?)
    }

    fn update_tokens(&self, id: &str, version: u64, tokens: &Tokens) -> Result<bool, StoreError> {
        self.inner
            .update_tokens(id, version, &self.sealed_tokens(id, tokens)?)
    }

    fn lease_refresh(&self, id: &str, lease: &Lease) -> Result<Option<Session>, StoreError> {
        self.opened_opt(self.inner.lease_refresh(id, lease)?)
    }

    fn renew_refresh(&self, id: &str, token: &str, until: u64) -> Result<bool, StoreError> {
        self.inner.renew_refresh(id, token, until)
    }

    fn release_refresh(
        &self,
        id: &str,
        token: &str,
        hold_until: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner.release_refresh(id, token, hold_until)
    }

    fn lease_due(
        &self,
        due_by: u64,
        lease: &Lease,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.inner
            .lease_due(due_by, lease, limit)?
            .into_iter()
            .map(|s| self.opened(s))
            .collect()
    }

    fn revoke_if_unchanged(&self, id: &str, version: u64) -> Result<bool, StoreError> {
        self.inner.revoke_if_unchanged(id, version)
    }

    fn end(&self, id: &str, status: Status) -> Result<(), StoreError> {
        self.inner.end(id, status)
    }

    fn touch_poll(&self, id: &str, now: u64, interval: u64) -> Result<(), StoreError> {
        self.inner.touch_poll(id, now, interval)
    }

    fn purge(&self, now: u64) -> Result<usize, StoreError> {
        self.inner.purge(now)
    }

    fn pending_count(&self, now: u64) -> Result<u64, StoreError> {
        self.inner.pending_count(now)
    }

    fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.list()
    }

    fn revoke_device(&self, product_id: &str, dsn: &str) -> Result<usize, StoreError> {
        self.inner.revoke_device(product_id, dsn)
    }

    fn ids_by_short_id(&self, prefix: &str) -> Result<Vec<Secret>, StoreError> {
        self.inner.ids_by_short_id(prefix)
    }

    fn secrets(&self) -> Result<Vec<SecretRow>, StoreError> {
        self.inner.secrets()
    }

    fn replace_secret(
        &self,
        kind: SecretKind,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        self.inner.replace_secret(kind, key, old, new)
    }

    fn key_checks(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.key_checks()
    }

    fn add_key_check(&self, id: &str, check: &str) -> Result<(), StoreError> {
        self.inner.add_key_check(id, check)
    }

    fn retire_key_checks(&self, keep: &str) -> Result<(), StoreError> {
        self.inner.retire_key_checks(keep)
    }
}
