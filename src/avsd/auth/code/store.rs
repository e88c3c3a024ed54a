//! What code-based linking keeps on the device (`lwa-token.json` in the
//! 0700 state directory, mode 0600, written atomically and fsynced): the
//! refresh token once the user has linked, and before that the code pair
//! being waited on, so a restart or `kill -9` at any point needs no second
//! login. The file is always whole: the old content or the new.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use kit::fsutil;
use kit::secret::Secret;

/// File name inside the state directory.
pub const FILE_NAME: &str = "lwa-token.json";

/// A code pair the user has not answered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The device's handle on the request.
    #[serde(with = "secret_str")]
    pub device_code: Secret,
    /// The code shown to the user.
    pub user_code: String,
    /// Amazon's page for the code.
    pub verification_uri: String,
    /// Unix seconds when the pair expires.
    pub expires_at: u64,
    /// Seconds between polls (grown by `slow_down`).
    pub interval: u64,
}

/// The saved link with LWA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// LWA the link belongs to.
    pub lwa_url: String,
    /// Security profile it was made with.
    pub client_id: String,
    /// Product ID it was made for.
    pub product_id: String,
    /// Device serial it was made for.
    pub dsn: String,
    /// The refresh token, once linked.
    #[serde(with = "opt_secret", default)]
    pub refresh_token: Option<Secret>,
    /// The code pair waited on, before the link.
    #[serde(default)]
    pub pending: Option<Pending>,
}

/// Where the file of `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Load the saved link; `Ok(None)` when there is none. A damaged file is
/// moved aside and reported.
pub fn load(state_dir: &Path) -> Result<Option<Saved>, String> {
    let file = path(state_dir);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    match serde_json::from_slice(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            let aside = PathBuf::from(format!("{}.damaged", file.display()));
            let _ = std::fs::rename(&file, &aside);
            Err(format!(
                "{} is damaged ({e}); it was set aside as {}",
                file.display(),
                aside.display()
            ))
        }
    }
}

/// Save atomically (0600, fsync, rename, directory fsync) in a 0700 directory.
pub fn save(state_dir: &Path, saved: &Saved) -> io::Result<()> {
    fsutil::ensure_private_dir(state_dir)?;
    let json = serde_json::to_vec_pretty(saved).map_err(io::Error::other)?;
    fsutil::write_atomic(&path(state_dir), &json)
}

/// Forget the saved link.
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

mod opt_secret {
    use serde::{Deserialize, Deserializer, Serializer};

    use kit::secret::Secret;

    pub fn serialize<S: Serializer>(s: &Option<Secret>, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_some(s.expose()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Secret>, D::Error> {
        Option::<String>::deserialize(de).map(|s| s.map(Secret::new))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn round_trips_private_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(load(&state).unwrap().is_none());
        let saved = Saved {
            lwa_url: "https://l".into(),
            client_id: "c".into(),
            product_id: "p".into(),
            dsn: "d".into(),
            refresh_token: Some(Secret::new("Atzr|x")),
            pending: None,
        };
        save(&state, &saved).unwrap();
        assert_eq!(load(&state).unwrap(), Some(saved));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path(&state)), 0o600);
        assert_eq!(mode(&state), 0o700);
        remove(&state).unwrap();
        assert!(load(&state).unwrap().is_none());
    }

    #[test]
    fn damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), b"{\"lwa_url\": \"ht").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("set aside"));
        assert!(load(dir.path()).unwrap().is_none());
    }
}
