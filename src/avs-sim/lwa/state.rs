//! The stand-in's memory and rules: what LWA checks at `/ap/oa` and at the
//! token endpoint, and the knobs tests turn. Pure logic under one mutex;
//! the HTTP side in `routes.rs` only parses and formats.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use serde_json::{Value, json};

use crate::token;
use kit::secret::Secret;

/// An LWA error: the `error` code, a description, and its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwaError {
    /// HTTP status (400, or 401 for `invalid_client`).
    pub status: u16,
    /// The OAuth error code.
    pub error: &'static str,
    /// A human description.
    pub description: String,
}

impl LwaError {
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = if error == "invalid_client" { 401 } else { 400 };
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    /// The JSON body LWA sends.
    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// A refused `/ap/oa` request: where it may be sent back to (redirect URI
/// and the client's `state`), if anywhere, and why.
pub type Refusal = (Option<(String, Option<String>)>, LwaError);

/// What the stand-in was started with.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The one registered client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
    /// The "Allowed Return URLs", matched exactly.
    pub redirect_uris: Vec<String>,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Lifetime of authorization codes.
    pub code_lifetime: Duration,
    /// Key that signs access tokens.
    pub token_key: Vec<u8>,
    /// The revocation list shared with `avs-sim avs` (next to the key
    /// file); without one, revocations stay inside this stand-in.
    pub revocations: Option<std::path::PathBuf>,
    /// What a superseded refresh token does when it comes back.
    pub rotation: super::rotation::RotationMode,
}

/// A consent request waiting for Allow or Deny.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Where to send the browser back.
    pub redirect_uri: String,
    /// The client's `state`, echoed back.
    pub state: Option<String>,
    /// PKCE challenge and method, if sent.
    pub challenge: Option<(String, String)>,
    /// Product being authorized.
    pub product_id: String,
    /// Device serial being authorized.
    pub dsn: String,
}

#[derive(Debug)]
struct Code {
    redirect_uri: String,
    challenge: Option<(String, String)>,
    expires_at: u64,
    used: bool,
}

#[derive(Debug)]
struct Refresh {
    family: String,
    grant: String,
}

/// Access tokens remembered for `/_sim/expire` (the newest ones).
const REMEMBERED_ACCESS: usize = 1024;

/// Counters tests read through `/_sim/counters`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counters {
    /// `/ap/oa` requests.
    pub authorize: u64,
    /// Consents given.
    pub allowed: u64,
    /// Consents refused.
    pub denied: u64,
    /// Calls to the token endpoint (including failed ones).
    pub token_calls: u64,
    /// Successful code exchanges.
    pub code_grants: u64,
    /// Successful refreshes.
    pub refresh_grants: u64,
    /// Calls failed on purpose by the `fail` knob.
    pub injected_failures: u64,
    /// Grants revoked (`/_sim/revoke`).
    pub grants_revoked: u64,
    /// Access tokens expired early (`/_sim/expire`).
    pub expired_early: u64,
    /// Superseded refresh tokens presented again (RFC 9700 reuse).
    pub reused_refresh_tokens: u64,
    /// Grants revoked for such a reuse (`--rotate-refresh-tokens strict`;
    /// also counted in `grants_revoked`).
    pub reuse_revocations: u64,
    /// Token-endpoint errors by code.
    pub errors: HashMap<String, u64>,
    /// Token calls being answered right now (a gauge, filled in when read):
    /// zero while every call fails on purpose means no refresh token can
    /// rotate any more until the knob is turned back.
    pub token_calls_in_progress: u64,
}

/// The stand-in's whole state.
#[derive(Debug)]
pub struct SimState {
    /// Configuration.
    pub rules: Rules,
    pending: HashMap<String, Pending>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
    issued_refresh: Vec<String>,
    /// (jti, grant) of recent access tokens, oldest first.
    issued_access: std::collections::VecDeque<(String, String)>,
    /// Counters for tests.
    pub counters: Counters,
    /// Seconds added to the wall clock (`/_sim/advance`).
    pub clock_offset: u64,
    /// Fail the next this-many token calls…
    pub fail_next: u32,
    /// …with this status.
    pub fail_status: u16,
    /// After those, fail this share of token calls (0 to 1) at random.
    pub fail_ratio: f64,
    /// Refresh-token rotation and reuse detection.
    pub rotation: super::rotation::Rotation,
    /// Delay the next this-many token calls…
    pub delay_next: u32,
    /// …by this long.
    pub delay: Duration,
}

/// Random URL-safe text from `n` bytes.
pub fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

impl SimState {
    /// Fresh state under `rules`.
    pub fn new(rules: Rules) -> Self {
        Self {
            rotation: super::rotation::Rotation::new(rules.rotation),
            rules,
            pending: HashMap::new(),
            codes: HashMap::new(),
            refresh: HashMap::new(),
            issued_refresh: Vec::new(),
            issued_access: std::collections::VecDeque::new(),
            counters: Counters::default(),
            clock_offset: 0,
            fail_next: 0,
            fail_status: 503,
            fail_ratio: 0.0,
            delay_next: 0,
            delay: Duration::ZERO,
        }
    }

    /// The stand-in's clock (wall clock plus the test offset).
    pub fn now(&self) -> u64 {
        token::unix_now() + self.clock_offset
    }

    /// Check an `/ap/oa` request. `Err((None, e))` must be shown on a page
    /// (client or redirect URI untrusted); `Err((Some(uri), e))` may be sent
    /// back to the client's redirect URI.
    pub fn authorize(&mut self, q: &HashMap<String, String>) -> Result<String, Refusal> {
        self.counters.authorize += 1;
        let client = q.get("client_id").map(String::as_str).unwrap_or("");
        if client != self.rules.client_id {
            return Err((None, LwaError::new("invalid_client", "unknown client_id")));
        }
        let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
        if !self.rules.redirect_uris.contains(&redirect) {
            return Err((
                None,
                LwaError::new(
                    "invalid_request",
                    "redirect_uri is not an Allowed Return URL of this security profile",
                ),
            ));
        }
        let state = q.get("state").cloned();
        let back = |e: LwaError| (Some((redirect.clone(), state.clone())), e);
        if q.get("response_type").map(String::as_str) != Some("code") {
            return Err(back(LwaError::new(
                "unsupported_response_type",
                "response_type must be code",
            )));
        }
        if q.get("scope").map(String::as_str) != Some("alexa:all") {
            return Err(back(LwaError::new(
                "invalid_scope",
                "scope must be alexa:all",
            )));
        }
        let (product_id, dsn) = parse_scope_data(q.get("scope_data").map(String::as_str))
            .map_err(|d| back(LwaError::new("invalid_request", d)))?;
        let challenge = match (q.get("code_challenge"), q.get("code_challenge_method")) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(back(LwaError::new(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                )));
            }
            (Some(c), m) => {
                let m = m.cloned().unwrap_or_else(|| "plain".to_string());
                if m != "S256" && m != "plain" {
                    return Err(back(LwaError::new(
                        "invalid_request",
                        "code_challenge_method must be S256 or plain",
                    )));
                }
                if !(43..=128).contains(&c.len()) {
                    return Err(back(LwaError::new(
                        "invalid_request",
                        "code_challenge must be 43 to 128 characters",
                    )));
                }
                Some((c.clone(), m))
            }
        };
        let id = random(16);
        self.pending.insert(
            id.clone(),
            Pending {
                redirect_uri: redirect,
                state,
                challenge,
                product_id,
                dsn,
            },
        );
        Ok(id)
    }

    /// The consent request `id`, if still open.
    pub fn pending(&self, id: &str) -> Option<&Pending> {
        self.pending.get(id)
    }

    /// The user's answer to consent request `id`: the redirect URL to send
    /// the browser to, or `None` if the request is unknown or answered.
    pub fn decide(&mut self, id: &str, allow: bool) -> Option<String> {
        let p = self.pending.remove(id)?;
        let mut url = url::Url::parse(&p.redirect_uri).ok()?;
        {
            let mut q = url.query_pairs_mut();
            if allow {
                self.counters.allowed += 1;
                let code = random(15);
                self.codes.insert(
                    code.clone(),
                    Code {
                        redirect_uri: p.redirect_uri.clone(),
                        challenge: p.challenge.clone(),
                        expires_at: self.now() + self.rules.code_lifetime.as_secs(),
                        used: false,
                    },
                );
                q.append_pair("code", &code);
                q.append_pair("scope", "alexa:all");
            } else {
                self.counters.denied += 1;
                q.append_pair("error", "access_denied");
                q.append_pair("error_description", "The user denied the request");
            }
            if let Some(s) = &p.state {
                q.append_pair("state", s);
            }
        }
        Some(url.to_string())
    }

    /// The token endpoint after client authentication: `form` holds the
    /// request fields (client credentials already checked and removed);
    /// `cbl_client` says the caller is the code-based-linking client (its
    /// grants refresh only for it, the web client's only for the web client).
    pub fn token(
        &mut self,
        form: &HashMap<String, String>,
        cbl_client: bool,
    ) -> Result<Value, LwaError> {
        let field = |k: &str| {
            form.get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| LwaError::new("invalid_request", format!("missing {k}")))
        };
        let (family, grant) = match field("grant_type")?.as_str() {
            "authorization_code" => {
                let code = field("code")?;
                let redirect = field("redirect_uri")?;
                let now = self.now();
                let c = self
                    .codes
                    .get_mut(code.as_str())
                    .ok_or_else(|| LwaError::new("invalid_grant", "unknown authorization code"))?;
                if c.used {
                    // RFC 6749 §4.1.2: a replayed code revokes what it gave.
                    let family = code.clone();
                    self.refresh.retain(|_, r| r.family != family);
                    return Err(LwaError::new(
                        "invalid_grant",
                        "authorization code already used",
                    ));
                }
                if now >= c.expires_at {
                    return Err(LwaError::new("invalid_grant", "authorization code expired"));
                }
                if *redirect != c.redirect_uri {
                    return Err(LwaError::new(
                        "invalid_grant",
                        "redirect_uri differs from the one the code was issued for",
                    ));
                }
                if let Some((challenge, method)) = &c.challenge {
                    let verifier = form.get("code_verifier").ok_or_else(|| {
                        LwaError::new("invalid_grant", "code_verifier required (PKCE)")
                    })?;
                    if !pkce_matches(verifier, challenge, method) {
                        return Err(LwaError::new(
                            "invalid_grant",
                            "code_verifier does not match",
                        ));
                    }
                }
                c.used = true;
                self.counters.code_grants += 1;
                (code.clone(), random(12))
            }
            "refresh_token" => {
                let old = field("refresh_token")?;
                let theirs = self
                    .refresh
                    .get(old.as_str())
                    .is_some_and(|r| r.family.starts_with(super::cbl::FAMILY_PREFIX) == cbl_client);
                if !theirs && !cbl_client {
                    self.check_reuse(old)?;
                }
                // Another client's token is refused and left as it is.
                if !theirs {
                    return Err(LwaError::new(
                        "invalid_grant",
                        "refresh token is invalid, rotated, revoked or another client's",
                    ));
                }
                let r = if cbl_client {
                    // LWA's refresh-token page: refresh tokens stay valid
                    // until the user removes the device. A code-pair grant
                    // keeps the token just used (and no older one) beside the
                    // new one, so a device that died before saving the new
                    // token is not unlinked.
                    let r = self.refresh.get(old.as_str()).map(|r| Refresh {
                        family: r.family.clone(),
                        grant: r.grant.clone(),
                    });
                    if let Some(r) = &r {
                        self.refresh
                            .retain(|k, x| x.grant != r.grant || k == old.as_str());
                    }
                    r
                } else {
                    let r = self.refresh.remove(old.as_str());
                    if let Some(r) = &r {
                        self.rotation
                            .rotated(old, &r.grant, std::time::Instant::now());
                    }
                    r
                };
                let r = r.ok_or_else(|| LwaError::new("invalid_grant", "refresh token unknown"))?;
                self.counters.refresh_grants += 1;
                (r.family, r.grant)
            }
            "device_code" => {
                return Err(LwaError::new(
                    "unauthorized_client",
                    "this client is not enabled for code-based linking",
                ));
            }
            other => {
                return Err(LwaError::new(
                    "unsupported_grant_type",
                    format!("grant_type {other} is not supported"),
                ));
            }
        };
        Ok(self.issue(family, grant))
    }

    /// Issue an access token and a refresh token for `grant` (of refresh
    /// family `family`): the answer of every successful grant.
    pub fn issue(&mut self, family: String, grant: String) -> Value {
        let refresh = format!("Atzr|{}", random(96));
        self.refresh.insert(
            refresh.clone(),
            Refresh {
                family,
                grant: grant.clone(),
            },
        );
        self.issued_refresh.push(refresh.clone());
        let lifetime = self.rules.token_lifetime;
        let (access, jti) = token::issue_grant_token_at(
            &self.rules.token_key,
            &self.rules.client_id,
            &grant,
            self.now(),
            lifetime,
        );
        if self.issued_access.len() == REMEMBERED_ACCESS {
            self.issued_access.pop_front();
        }
        self.issued_access.push_back((jti, grant));
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": lifetime.as_secs(),
        })
    }

    /// Revoke one refresh token's grant, or every grant when `token` is
    /// `None`, as when the user removes the device in their Amazon account:
    /// the refresh token then gets `invalid_grant`, and the grant's access
    /// tokens are refused by `avs-sim avs` (through the revocation list).
    /// Returns how many refresh tokens were revoked.
    pub fn revoke(&mut self, token: Option<&str>) -> Result<usize, String> {
        match token {
            Some(t) => match self.refresh.get(t).map(|r| r.grant.clone()) {
                Some(grant) => self.revoke_grant(&grant),
                None => Ok(0),
            },
            None => {
                let gone = self.refresh.drain().map(|(_, r)| r).collect();
                self.revoked(gone)
            }
        }
    }

    /// Revoke `grant`: every refresh token of it (a code-pair grant may
    /// hold two) and its access tokens; how many refresh tokens went.
    pub(super) fn revoke_grant(&mut self, grant: &str) -> Result<usize, String> {
        let keys: Vec<String> = self
            .refresh
            .iter()
            .filter(|(_, r)| r.grant == grant)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone: Vec<Refresh> = keys.iter().filter_map(|k| self.refresh.remove(k)).collect();
        let n = gone.len();
        if gone.is_empty() {
            // Its access tokens still go, even with no refresh token left.
            gone.push(Refresh {
                family: String::new(),
                grant: grant.to_string(),
            });
        }
        self.revoked(gone).map(|_| n)
    }

    fn revoked(&mut self, gone: Vec<Refresh>) -> Result<usize, String> {
        let mut grants: Vec<token::Revoked> = Vec::new();
        for r in &gone {
            let g = token::Revoked::Grant(r.grant.clone());
            if !grants.contains(&g) {
                grants.push(g);
            }
        }
        self.counters.grants_revoked += grants.len() as u64;
        self.publish(&grants)?;
        Ok(gone.len())
    }

    /// Expire every access token issued so far before its time, as LWA
    /// may: refresh tokens stay good. Returns how many were expired.
    pub fn expire_access_tokens(&mut self) -> Result<usize, String> {
        let tokens: Vec<token::Revoked> = self
            .issued_access
            .drain(..)
            .map(|(jti, _)| token::Revoked::Token(jti))
            .collect();
        self.counters.expired_early += tokens.len() as u64;
        self.publish(&tokens)?;
        Ok(tokens.len())
    }

    fn publish(&self, entries: &[token::Revoked]) -> Result<(), String> {
        match &self.rules.revocations {
            Some(list) if !entries.is_empty() => token::revoke(list, entries)
                .map_err(|e| format!("{}: cannot write the revocation list: {e}", list.display())),
            _ => Ok(()),
        }
    }

    /// Every refresh token ever issued (for leak checks in tests).
    pub fn issued_refresh_tokens(&self) -> &[String] {
        &self.issued_refresh
    }
}

fn pkce_matches(verifier: &str, challenge: &str, method: &str) -> bool {
    let computed = if method == "S256" {
        B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ))
    } else {
        verifier.to_string()
    };
    https::ct_eq(computed.as_bytes(), challenge.as_bytes())
}

/// `scope_data` must be `{"alexa:all":{"productID":…,"productInstanceAttributes":{"deviceSerialNumber":…}}}`.
pub fn parse_scope_data(raw: Option<&str>) -> Result<(String, String), String> {
    let raw = raw.ok_or("scope_data is required for alexa:all")?;
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("scope_data is not JSON: {e}"))?;
    let all = v
        .get("alexa:all")
        .ok_or("scope_data has no alexa:all object")?;
    let product = all
        .get("productID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("scope_data lacks alexa:all.productID")?;
    let dsn = all
        .get("productInstanceAttributes")
        .and_then(|p| p.get("deviceSerialNumber"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("scope_data lacks productInstanceAttributes.deviceSerialNumber")?;
    Ok((product.to_string(), dsn.to_string()))
}
