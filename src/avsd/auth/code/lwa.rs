//! The device side of LWA's code-based linking: the code pair
//! (`POST /auth/o2/create/codepair`), the device-code grant and the
//! refresh grant at `POST /auth/o2/token`, form-encoded as LWA's pages
//! show. Answers are read up to [`MAX_BODY`] bytes.

use std::time::Duration;

use serde::Deserialize;

use kit::secret::Secret;

/// How long one request to LWA may take (the SDK's CBL delegate uses 1 min).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from LWA; its answers are a few kilobytes.
const MAX_BODY: usize = 64 * 1024;

/// Why a call to LWA failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LwaCallError {
    /// Network, TLS or timeout: worth retrying.
    #[error("cannot reach LWA at {url}: {reason}")]
    Unreachable {
        /// LWA's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// LWA answered an OAuth error code (`authorization_pending`,
    /// `invalid_grant`, …).
    #[error("LWA answered `{0}`")]
    Refused(String),
    /// LWA answered something else (a 5xx, a page, broken JSON).
    #[error("LWA at {url} answered HTTP {status}: {body}")]
    Unexpected {
        /// LWA's base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body, or what was wrong with it.
        body: String,
    },
}

/// The Device Authorization Response.
#[derive(Debug, Clone, Deserialize)]
pub struct CodePair {
    /// Code the user types at the verification page.
    pub user_code: String,
    /// The device's handle on the request; kept secret.
    pub device_code: Secret,
    /// Amazon's page where the user enters the code.
    pub verification_uri: String,
    /// Seconds the pair stays valid.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

/// A successful token answer (device-code or refresh grant).
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token to keep. LWA's pages do not say whether a refresh
    /// without a client secret always carries one; without it the saved
    /// one is kept (refresh tokens stay valid until the user unlinks).
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds the access token stays valid.
    pub expires_in: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// An HTTPS client of LWA for one security profile.
#[derive(Debug, Clone)]
pub struct LwaClient {
    base: String,
    client_id: String,
    http: reqwest::Client,
}

impl LwaClient {
    /// Build the client for `base` (e.g. `https://api.amazon.com`), with
    /// `ca` (PEM) as the only trust anchor when given.
    pub fn new(base: &str, client_id: &str, ca: Option<&[u8]>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("avsd/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("cannot use auth.ca_file: {e}; fix the path"))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up HTTPS to LWA: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            http,
        })
    }

    /// LWA's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The security profile's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Ask for a code pair for this product and serial.
    pub async fn code_pair(&self, product_id: &str, dsn: &str) -> Result<CodePair, LwaCallError> {
        let scope_data = serde_json::json!({
            "alexa:all": {
                "productID": product_id,
                "productInstanceAttributes": { "deviceSerialNumber": dsn },
            }
        })
        .to_string();
        self.post(
            "/auth/o2/create/codepair",
            &[
                ("response_type", "device_code"),
                ("client_id", &self.client_id),
                ("scope", "alexa:all"),
                ("scope_data", &scope_data),
            ],
        )
        .await
    }

    /// One device-code poll.
    pub async fn device_token(
        &self,
        device_code: &Secret,
        user_code: &str,
    ) -> Result<Tokens, LwaCallError> {
        self.post(
            "/auth/o2/token",
            &[
                ("grant_type", "device_code"),
                ("device_code", device_code.expose()),
                ("user_code", user_code),
            ],
        )
        .await
    }

    /// Exchange the refresh token for new tokens.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<Tokens, LwaCallError> {
        self.post(
            "/auth/o2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
                ("client_id", &self.client_id),
            ],
        )
        .await
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<T, LwaCallError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let unreachable = |e: reqwest::Error| LwaCallError::Unreachable {
            url: self.base.clone(),
            reason: describe(&e),
        };
        let mut resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let unexpected = |body: String| LwaCallError::Unexpected {
            url: self.base.clone(),
            status: status.as_u16(),
            body,
        };
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(unexpected(format!(
                "an answer of more than {MAX_BODY} bytes"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(unexpected(format!(
                    "an answer of more than {MAX_BODY} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            // The error names the field, never echoes the body (it holds tokens).
            return serde_json::from_slice(&bytes)
                .map_err(|e| unexpected(format!("not the JSON LWA documents ({e})")));
        }
        if status.is_client_error()
            && let Ok(err) = serde_json::from_slice::<ErrorBody>(&bytes)
        {
            return Err(LwaCallError::Refused(err.error));
        }
        let text = String::from_utf8_lossy(&bytes);
        Err(unexpected(text.chars().take(200).collect()))
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
