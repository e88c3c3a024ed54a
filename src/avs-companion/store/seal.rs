//! Refresh tokens and PKCE verifiers encrypted at rest (AES-256-GCM, a
//! random 96-bit nonce per value, the row's key as associated data so a
//! value cannot be moved to another row). The key file
//! (`storage.key_file`, mode 0600, owned by the service user) holds one key
//! a line, `<key id> <32 bytes in base64>`; the last line is the newest.
//! A stored value names its key: `sealed:<key id>:<nonce + ciphertext in
//! base64url>`. The database keeps, per key that sealed anything, a check
//! value sealed with it, so a wrong or missing key is refused at start in
//! words instead of failing on the first refresh.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "sealed:";
/// What every key check seals.
const CHECK: &str = "avs-companion key check";

/// A problem with the key file or a sealed value: (what, fix).
pub type SealError = (String, String);

/// The keys of a key file, oldest first.
pub struct Keys {
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.ids().collect();
        f.debug_struct("Keys").field("ids", &ids).finish()
    }
}

/// A new key-file line: `id` and 32 random bytes.
pub fn new_key_line(id: &str) -> Result<String, SealError> {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| {
        (
            "the system random number generator failed".into(),
            "check /dev/urandom".into(),
        )
    })?;
    Ok(format!("{id} {}\n", B64.encode(key)))
}

impl Keys {
    /// Read `path`, refusing a file others could read or another user owns.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let shown = path.display();
        let fix_line = "each line: a key id (letters, digits, - or _) and 32 random bytes in \
                        base64, e.g. made by: printf 'k1 %s\\n' \"$(head -c 32 /dev/urandom | base64)\"";
        // Mode and owner as for the client secret; then the whole text.
        crate::config::read_owned_secret(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            (
                format!("cannot read `{shown}`: {e}"),
                "make it readable by the service user".into(),
            )
        })?;
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| {
                (
                    format!("`{shown}` line {}: {what}", n + 1),
                    fix_line.to_string(),
                )
            };
            let (id, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("no key after the id"))?;
            let ok_id = !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_id {
                return Err(bad("the key id must be 1 to 32 letters, digits, - or _"));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(bad(&format!("key id `{id}` appears twice")));
            }
            let bytes = B64
                .decode(key.trim())
                .map_err(|_| bad("the key is not base64"))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| bad(&format!("the key is {} bytes, not 32", bytes.len())))?;
            keys.push((id.to_string(), LessSafeKey::new(unbound)));
        }
        if keys.is_empty() {
            return Err((format!("`{shown}` holds no key"), fix_line.into()));
        }
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The key ids, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// The newest key's id.
    pub fn newest(&self) -> &str {
        self.keys.last().map_or("", |(id, _)| id.as_str())
    }

    fn key(&self, id: &str) -> Option<&LessSafeKey> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, k)| k)
    }

    /// `plain` sealed with key `id` for the row named by `aad`.
    pub fn seal(&self, id: &str, aad: &str, plain: &str) -> Result<String, SealError> {
        let key = self.key(id).ok_or_else(|| {
            (
                format!("no key `{id}`"),
                "add it to storage.key_file".to_string(),
            )
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| {
            (
                "the system random number generator failed".to_string(),
                "check /dev/urandom".to_string(),
            )
        })?;
        let mut buf = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .map_err(|_| ("sealing failed".to_string(), "report this bug".to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{id}:{}", B64URL.encode(out)))
    }

    /// Open a stored value; a value from before encryption (no prefix) is
    /// returned as it is.
    pub fn open(&self, aad: &str, stored: &str) -> Result<String, SealError> {
        let Some((id, body)) = split(stored) else {
            return Ok(stored.to_string());
        };
        let key = self.key(id).ok_or_else(|| {
            (
                format!("a value is sealed with key `{id}`, which storage.key_file lacks"),
                format!("put key `{id}` back into storage.key_file"),
            )
        })?;
        let wrong = || {
            (
                format!(
                    "a value sealed with key `{id}` does not open with the key of that id in storage.key_file"
                ),
                format!(
                    "storage.key_file holds another key under id `{id}`: restore the original key file"
                ),
            )
        };
        let raw = B64URL.decode(body).map_err(|_| wrong())?;
        if raw.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut buf = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }

    /// The check value of key `id`, to store in the database.
    pub fn check_value(&self, id: &str) -> Result<String, SealError> {
        self.seal(id, "key-check", CHECK)
    }

    /// Whether `stored` is key `id`'s check value.
    pub fn verify_check(&self, id: &str, stored: &str) -> Result<(), SealError> {
        if key_id(stored) != Some(id) {
            return Err((
                format!("the database's check value of key `{id}` is damaged"),
                "restore the database from a backup".into(),
            ));
        }
        match self.open("key-check", stored) {
            Ok(v) if v == CHECK => Ok(()),
            _ => Err((
                format!(
                    "key `{id}` in storage.key_file is not the key this database was sealed with"
                ),
                format!("restore the original key `{id}` in storage.key_file (from its backup)"),
            )),
        }
    }
}

fn split(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix(PREFIX)?.split_once(':')
}

/// The key id a stored value is sealed with; `None` for a value in clear.
pub fn key_id(stored: &str) -> Option<&str> {
    split(stored).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn keys(text: &str) -> Result<Keys, SealError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        Keys::load(&p)
    }

    #[test]
    fn sealed_values_open_only_in_their_row_and_under_their_key() {
        let k = keys(&(new_key_line("k1").unwrap() + &new_key_line("k2").unwrap())).unwrap();
        assert_eq!(k.newest(), "k2");
        let a = k.seal("k2", "refresh:s1", "Atzr|secret").unwrap();
        let b = k.seal("k2", "refresh:s1", "Atzr|secret").unwrap();
        assert_ne!(a, b, "a random nonce each time");
        assert!(!a.contains("Atzr"));
        assert_eq!(key_id(&a), Some("k2"));
        assert_eq!(k.open("refresh:s1", &a).unwrap(), "Atzr|secret");
        assert!(k.open("refresh:s2", &a).is_err(), "moved to another row");
        assert_eq!(k.open("x", "Atzr|clear").unwrap(), "Atzr|clear");
        let other = keys(&new_key_line("k2").unwrap()).unwrap();
        let e = other.open("refresh:s1", &a).unwrap_err();
        assert!(e.0.contains("does not open"), "{e:?}");
        let e = keys(&new_key_line("k9").unwrap())
            .unwrap()
            .open("refresh:s1", &a)
            .unwrap_err();
        assert!(e.0.contains("lacks"), "{e:?}");
        let check = k.check_value("k1").unwrap();
        k.verify_check("k1", &check).unwrap();
        assert!(
            keys(&new_key_line("k1").unwrap())
                .unwrap()
                .verify_check("k1", &check)
                .is_err()
        );
    }

    #[test]
    fn bad_key_files_are_refused_with_the_line() {
        for (text, want) in [
            ("", "is empty"),
            ("# only a comment\n", "holds no key"),
            ("k1\n", "line 1: no key"),
            ("k1 c2hvcnQ=\n", "line 1: the key is 5 bytes"),
            ("k/1 AAAA\n", "line 1: the key id"),
        ] {
            let e = keys(text).unwrap_err();
            assert!(e.0.contains(want), "{text:?}: {e:?}");
        }
        let line = new_key_line("k1").unwrap();
        let e = keys(&format!("{line}{line}")).unwrap_err();
        assert!(e.0.contains("line 2: key id `k1` appears twice"), "{e:?}");
    }
}
