//! The saved session with the companion (`session.json` in the state
//! directory): enough to get tokens again after a restart, `kill -9` or
//! power cut without a new login. Never holds a token.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use kit::fsutil;
use kit::secret::Secret;

/// File name inside the state directory.
pub const FILE_NAME: &str = "session.json";

/// What identifies this device's link with the companion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Companion the session belongs to.
    pub companion_url: String,
    /// Product ID it was registered with.
    pub product_id: String,
    /// Device serial it was registered with.
    pub dsn: String,
    /// The secret session id.
    #[serde(with = "secret_str")]
    pub session_id: Secret,
    /// Whether the user finished the login (a token was received once).
    pub linked: bool,
    /// Login page shown while not linked.
    pub login_url: String,
    /// Registration code shown while not linked.
    pub user_code: String,
    /// Unix seconds when the registration code expires.
    pub code_expires_at: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// Why a saved session could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed for a reason other than absence.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is truncated or not ours.
    #[error("{path} is damaged ({reason}); it was set aside as {path}.damaged")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// Where the session of `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Load the saved session; `Ok(None)` when there is none. A damaged file is
/// moved aside (so the next start does not trip on it again) and reported.
pub fn load(state_dir: &Path) -> Result<Option<Session>, LoadError> {
    let file = path(state_dir);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Io { path: file, source }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            let aside = PathBuf::from(format!("{}.damaged", file.display()));
            let _ = std::fs::rename(&file, aside);
            Err(LoadError::Damaged {
                path: file,
                reason: e.to_string(),
            })
        }
    }
}

/// Save atomically (0600, fsync, rename) in a 0700 directory.
pub fn save(state_dir: &Path, session: &Session) -> io::Result<()> {
    fsutil::ensure_private_dir(state_dir)?;
    let json = serde_json::to_vec_pretty(session).map_err(io::Error::other)?;
    fsutil::write_atomic(&path(state_dir), &json)
}

/// Forget the saved session.
pub fn remove(state_dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(path(state_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

mod secret_str {
    use serde::{Deserialize, Deserializer, Serializer};

    use kit::secret::Secret;

    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
        String::deserialize(de).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Session {
        Session {
            companion_url: "https://c".into(),
            product_id: "p".into(),
            dsn: "d".into(),
            session_id: Secret::new("s3cret"),
            linked: true,
            login_url: String::new(),
            user_code: String::new(),
            code_expires_at: 0,
            interval: 5,
        }
    }

    #[test]
    fn round_trips_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(load(&state).unwrap().is_none());
        save(&state, &sample()).unwrap();
        assert_eq!(load(&state).unwrap(), Some(sample()));
        remove(&state).unwrap();
        assert!(load(&state).unwrap().is_none());
    }

    #[test]
    fn damaged_file_is_reported_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            path(dir.path()),
            b"{\"companion_url\": \"https://c\", \"produ",
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, LoadError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("set aside"));
        assert!(load(dir.path()).unwrap().is_none());
        assert!(dir.path().join("session.json.damaged").exists());
    }
}
