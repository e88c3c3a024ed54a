//! Access tokens the stand-ins issue and check. They look like LWA's
//! (`Atza|…`, at least 350 characters) and carry a signed payload, so a
//! separate AVS stand-in sharing the key file can verify them offline.
//!
//! Shape: `Atza|` + base64url(JSON claims) + `.` + base64url(HMAC-SHA256).
//!
//! A signature alone cannot say that LWA took a token back early, which
//! Amazon's AVS learns from LWA. The two stand-ins share that knowledge the
//! way they share the key: a revocation list next to the key file
//! ([`revocation_list`]), where `avs-sim lwa` appends the grants it revoked
//! and the tokens it expired early, and which `avs-sim avs` reads on every
//! request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// LWA documents access tokens of at least 350 characters.
pub const MIN_TOKEN_LEN: usize = 350;
const PREFIX: &str = "Atza|";

/// What a stand-in access token says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The LWA client the token was issued to.
    pub client_id: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// The grant (one user's consent for one device) the token was issued
    /// under; revoking the grant revokes its tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub grant: String,
    /// Filler that brings the token to LWA's length; covered by the MAC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the `Atza|payload.mac` shape or not decodable.
    #[error("the token is malformed")]
    Malformed,
    /// The MAC does not match: forged, altered, or signed with another key.
    #[error("the token signature does not match (altered, or made with another key file)")]
    BadSignature,
    /// Past its `exp`.
    #[error("the token expired at {exp} (now {now})")]
    Expired {
        /// When it expired.
        exp: u64,
        /// The time it was checked at.
        now: u64,
    },
}

pub use kit::clock::unix_now;

/// Issue a token for `client_id`, valid for `lifetime` from now.
pub fn issue_access_token(key: &[u8], client_id: &str, lifetime: Duration) -> String {
    issue_access_token_at(key, client_id, unix_now(), lifetime)
}

/// Issue a token as if the time were `now` (the stand-in's own clock).
pub fn issue_access_token_at(key: &[u8], client_id: &str, now: u64, lifetime: Duration) -> String {
    issue_grant_token_at(key, client_id, "", now, lifetime).0
}

/// Issue a token under `grant` as if the time were `now`; also its `jti`.
pub fn issue_grant_token_at(
    key: &[u8],
    client_id: &str,
    grant: &str,
    now: u64,
    lifetime: Duration,
) -> (String, String) {
    let mut jti = [0u8; 16];
    rand::rng().fill_bytes(&mut jti);
    let mut claims = Claims {
        client_id: client_id.to_string(),
        exp: now.saturating_add(lifetime.as_secs()),
        jti: B64.encode(jti),
        grant: grant.to_string(),
        pad: String::new(),
    };
    let unpadded = encode(key, &claims);
    if unpadded.len() < MIN_TOKEN_LEN {
        // `,"pad":""` adds 9 bytes of JSON; base64 grows it by 4/3.
        let missing = MIN_TOKEN_LEN - unpadded.len();
        claims.pad = "x".repeat(missing * 3 / 4 + 4);
    }
    (encode(key, &claims), claims.jti)
}

fn encode(key: &[u8], claims: &Claims) -> String {
    // Serializing a struct of strings and an integer cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = B64.encode(json);
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), payload.as_bytes());
    format!("{PREFIX}{payload}.{}", B64.encode(mac.as_ref()))
}

/// Check a token's signature and expiry at Unix time `now`.
pub fn verify_access_token(key: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    let body = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (payload, mac) = body.split_once('.').ok_or(TokenError::Malformed)?;
    let mac = B64.decode(mac).map_err(|_| TokenError::Malformed)?;
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        payload.as_bytes(),
        &mac,
    )
    .map_err(|_| TokenError::BadSignature)?;
    let json = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if now >= claims.exp {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now,
        });
    }
    Ok(claims)
}

/// The revocation list the stand-ins sharing `key_file` share:
/// `KEY_FILE.revoked`, one entry a line: `grant ID` or `token JTI`.
pub fn revocation_list(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_os_string();
    name.push(".revoked");
    PathBuf::from(name)
}

/// What LWA took back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Every token of a grant (the user removed the device).
    Grant(String),
    /// One access token, before its `exp` (LWA expired it early).
    Token(String),
}

/// Append `entries` to the revocation list `list`.
pub fn revoke(list: &Path, entries: &[Revoked]) -> std::io::Result<()> {
    let mut text = String::new();
    for e in entries {
        match e {
            Revoked::Grant(g) if !g.is_empty() => text.push_str(&format!("grant {g}\n")),
            Revoked::Token(j) if !j.is_empty() => text.push_str(&format!("token {j}\n")),
            _ => {}
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)?;
    f.write_all(text.as_bytes())
}

/// Why `claims` are revoked in `list`, if they are. A missing list revokes
/// nothing.
pub fn revoked(list: &Path, claims: &Claims) -> Option<&'static str> {
    let text = std::fs::read_to_string(list).ok()?;
    text.lines().find_map(|line| match line.split_once(' ') {
        Some(("grant", g)) if !claims.grant.is_empty() && g == claims.grant => {
            Some("LWA revoked the grant it was issued under")
        }
        Some(("token", j)) if j == claims.jti => Some("LWA expired it early"),
        _ => None,
    })
}

/// The shared signing key: read from `path`, or 32 random bytes without one.
pub fn load_or_generate_key(path: Option<&Path>) -> Result<Vec<u8>, String> {
    match path {
        Some(p) => {
            let key = std::fs::read(p)
                .map_err(|e| format!("{}: cannot read the token key file: {e}", p.display()))?;
            if key.len() < 32 {
                return Err(format!(
                    "{}: the token key file holds {} bytes; fix: put at least 32 random bytes in it (head -c 32 /dev/urandom > FILE)",
                    p.display(),
                    key.len()
                ));
            }
            Ok(key)
        }
        None => {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            Ok(key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_token_is_lwa_shaped_and_verifies() {
        let t = issue_access_token_at(KEY, "client-1", 1000, Duration::from_secs(3600));
        assert!(t.starts_with("Atza|"));
        assert!(t.len() >= MIN_TOKEN_LEN, "{}", t.len());
        assert!(t.len() < 2048);
        let c = verify_access_token(KEY, &t, 1000).unwrap();
        assert_eq!((c.client_id.as_str(), c.exp), ("client-1", 4600));
    }

    #[test]
    fn revoked_grants_and_early_expiry_are_shared_through_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let list = revocation_list(&dir.path().join("token.key"));
        assert!(list.ends_with("token.key.revoked"));
        let (a, ja) = issue_grant_token_at(KEY, "c", "g1", 1000, Duration::from_secs(60));
        let (b, jb) = issue_grant_token_at(KEY, "c", "g2", 1000, Duration::from_secs(60));
        let ca = verify_access_token(KEY, &a, 1000).unwrap();
        let cb = verify_access_token(KEY, &b, 1000).unwrap();
        assert_eq!((ca.jti.as_str(), ca.grant.as_str()), (ja.as_str(), "g1"));
        assert_eq!(revoked(&list, &ca), None);
        revoke(&list, &[Revoked::Grant("g1".into())]).unwrap();
        assert!(revoked(&list, &ca).unwrap().contains("grant"));
        assert_eq!(revoked(&list, &cb), None);
        revoke(&list, &[Revoked::Token(jb)]).unwrap();
        assert!(revoked(&list, &cb).unwrap().contains("early"));
        // A token of no grant is never caught by an empty grant entry.
        let plain = verify_access_token(
            KEY,
            &issue_access_token_at(KEY, "c", 1000, Duration::from_secs(60)),
            1000,
        )
        .unwrap();
        revoke(&list, &[Revoked::Grant(String::new())]).unwrap();
        assert_eq!(revoked(&list, &plain), None);
    }

    #[test]
    fn expired_token_is_refused() {
        let t = issue_access_token_at(KEY, "c", 1000, Duration::from_secs(60));
        assert!(verify_access_token(KEY, &t, 1059).is_ok());
        assert_eq!(
            verify_access_token(KEY, &t, 1060),
            Err(TokenError::Expired {
                exp: 1060,
                now: 1060
            })
        );
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let t = issue_access_token_at(KEY, "c", 1000, Duration::from_secs(60));
        let (head, mac) = t.split_once('.').unwrap();
        // Re-encode the claims with a later expiry but keep the old MAC.
        let payload = head.strip_prefix("Atza|").unwrap();
        let mut claims: Claims = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        claims.exp += 10_000;
        let forged = format!(
            "Atza|{}.{mac}",
            B64.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(
            verify_access_token(KEY, &forged, 1000),
            Err(TokenError::BadSignature)
        );
        let other = b"another key, another key, another";
        assert_eq!(
            verify_access_token(other, &t, 1000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_access_token(KEY, "Atzr|abc", 1000),
            Err(TokenError::Malformed)
        );
        assert!(verify_access_token(KEY, &t[..t.len() - 1], 1000).is_err());
    }
}
