//! The device side of the companion's HTTP API (contract: `POST
//! /provision/regCode`, `POST /provision/accessToken`, `POST
//! /provision/revoke`), over HTTPS with an optional pinned CA and client
//! certificate. Answers are read up to [`MAX_BODY`] bytes: a companion (or
//! whatever answers in its place) cannot make avsd buffer without end.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use avsd_config::CompanionClientConfig;
use kit::secret::Secret;

/// How long one request to the companion may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `avsctl reset` waits for the companion to revoke the session:
/// short, so the D-Bus reply stays quick when the companion is down.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read from the companion; the contract's answers are a
/// few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Why the companion client could not be built (config problems).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A PEM file could not be read or parsed.
    #[error("cannot use {key} `{path}`: {reason}; fix the path in the [companion] section")]
    File {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up HTTPS to the companion: {0}")]
    Client(String),
}

/// Why a call to the companion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Network, TLS or timeout: worth retrying.
    #[error("cannot reach the companion at {url}: {reason}")]
    Unreachable {
        /// The companion's base URL.
        url: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// The companion answered with an RFC 8628-style error code.
    #[error("the companion answered `{0}`")]
    Refused(String),
    /// The companion answered something outside the contract.
    #[error("the companion at {url} answered HTTP {status}: {body}")]
    Unexpected {
        /// The companion's base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body (never contains our secrets: we sent none).
        body: String,
    },
}

/// What `POST /provision/regCode` returns.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// Short code the user types or sees.
    pub reg_code: String,
    /// Secret session id; the device's only credential.
    pub session_id: Secret,
    /// Page the user opens.
    pub login_url: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// What `POST /provision/accessToken` returns on success.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The LWA access token.
    pub access_token: Secret,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds the token stays valid.
    pub expires_in: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// An HTTPS client of one companion.
#[derive(Debug, Clone)]
pub struct CompanionClient {
    base: String,
    http: reqwest::Client,
}

impl CompanionClient {
    /// Build the client from the `[companion]` config.
    pub fn new(config: &CompanionClientConfig) -> Result<Self, SetupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("avsd/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            // Text or DER reads as no certificates at all, and pinning to
            // none failed every request with UnknownIssuer: check first.
            https::check::ca_file(ca).map_err(|p| file_err("companion.ca_file", ca, p.message))?;
            let pem = read("companion.ca_file", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| file_err("companion.ca_file", ca, e))?;
            // A companion with its own CA is pinned to it alone.
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
            let mut pem = read("companion.client_cert", cert)?;
            pem.extend(read("companion.client_key", key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| file_err("companion.client_cert", cert, e))?;
            builder = builder.identity(id);
        }
        let http = builder
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        Ok(Self {
            base: config.url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The companion's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Register this device and get a code for the user.
    pub async fn register(&self, product_id: &str, dsn: &str) -> Result<Registration, CallError> {
        let body = serde_json::json!({ "productId": product_id, "dsn": dsn });
        self.post("/provision/regCode", &body, REQUEST_TIMEOUT)
            .await
    }

    /// Ask for an access token for `session`. `refused` is the token AVS
    /// answered 403 to: the companion then refreshes at LWA at once instead
    /// of handing back its cached token.
    pub async fn access_token(
        &self,
        session: &Secret,
        refused: Option<&Secret>,
    ) -> Result<TokenResponse, CallError> {
        let mut body = serde_json::json!({ "sessionId": session.expose() });
        if let Some(t) = refused {
            body["refusedToken"] = serde_json::Value::String(t.expose().to_string());
        }
        self.post("/provision/accessToken", &body, REQUEST_TIMEOUT)
            .await
    }

    /// Revoke `session` at the companion (`avsctl reset`): it forgets the
    /// session and its refresh token, so an old copy of the session id is
    /// worth nothing. A session the companion does not know
    /// (`invalid_session`) counts as revoked already.
    pub async fn revoke(&self, session: &Secret) -> Result<(), CallError> {
        let body = serde_json::json!({ "sessionId": session.expose() });
        match self
            .post::<serde::de::IgnoredAny>("/provision/revoke", &body, REVOKE_TIMEOUT)
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Refused(code)) if code == "invalid_session" => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: reqwest::Error| CallError::Unreachable {
            url: self.base.clone(),
            reason: describe(&e),
        };
        let mut resp = self
            .http
            .post(&url)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let too_big = || CallError::Unexpected {
            url: self.base.clone(),
            status: status.as_u16(),
            body: format!(
                "an answer of more than {MAX_BODY} bytes (the contract's are a few hundred); \
                 is `companion.url` pointing at the companion?"
            ),
        };
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Unexpected {
                url: self.base.clone(),
                status: status.as_u16(),
                body: format!("not the JSON the contract promises ({e})"),
            });
        }
        if status == reqwest::StatusCode::BAD_REQUEST
            && let Ok(err) = serde_json::from_slice::<ErrorBody>(&bytes)
        {
            return Err(CallError::Refused(err.error));
        }
        let text = String::from_utf8_lossy(&bytes);
        Err(CallError::Unexpected {
            url: self.base.clone(),
            status: status.as_u16(),
            body: text.chars().take(200).collect(),
        })
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| file_err(key, path, e))
}

fn file_err(key: &'static str, path: &Path, e: impl std::fmt::Display) -> SetupError {
    SetupError::File {
        key,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// reqwest's Display hides the cause (TLS, refused, DNS); walk the chain.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[path = "companion_client_tests.rs"]
pub(crate) mod tests;
