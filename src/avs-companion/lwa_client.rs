//! Calls to LWA's token endpoint (protocol §A.4): the code exchange and the
//! refresh, form-encoded with the client secret in the body.

use std::time::Duration;

use serde::Deserialize;

use super::config::CompanionConfig;
use kit::secret::Secret;

/// Why a token call failed.
#[derive(Debug, thiserror::Error)]
pub enum LwaError {
    /// LWA answered with an OAuth error (a 4xx): retrying will not help.
    #[error("LWA refused the request: {error} (HTTP {status})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The OAuth error code, e.g. `invalid_grant`.
        error: String,
    },
    /// LWA could not be reached or answered 5xx or nonsense: retry later.
    #[error("LWA unavailable: {0}")]
    Unavailable(String),
}

impl LwaError {
    /// Whether the grant (code or refresh token) is dead: re-link the user.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, LwaError::Rejected { error, .. } if error == "invalid_grant")
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LwaError::Unavailable(_))
    }
}

/// Tokens LWA issued.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Access token.
    pub access: Secret,
    /// Seconds it is valid.
    pub expires_in: u64,
    /// Refresh token (possibly a new one: LWA rotates them).
    pub refresh: Secret,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<Secret>,
    refresh_token: Option<Secret>,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
}

/// The largest token-endpoint answer read; a real one is about 1 KiB.
/// Anything longer is refused unread, so a hostile or broken endpoint
/// cannot make the service buffer gigabytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The body of `resp`, at most [`MAX_BODY`] bytes.
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, LwaError> {
    let too_big = || LwaError::Unavailable(format!("LWA's answer is larger than {MAX_BODY} bytes"));
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| LwaError::Unavailable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A client for the token endpoint.
#[derive(Clone)]
pub struct LwaClient {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    redirect_uri: String,
}

impl LwaClient {
    /// Build from config; `ca_file` adds a trusted CA (for a stand-in).
    pub fn new(config: &CompanionConfig, client_secret: Secret) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.lwa.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("avs-companion/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.lwa.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("lwa.ca_file {}: cannot read: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("lwa.ca_file {}: not PEM certificates: {e}", ca.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTPS client for LWA: {e}"))?;
        Ok(Self {
            http,
            token_url: config.lwa.token_url.clone(),
            client_id: config.lwa.client_id.clone(),
            client_secret,
            redirect_uri: config.lwa.redirect_uri.clone(),
        })
    }

    /// Exchange an authorization code (with its PKCE verifier).
    pub async fn exchange_code(&self, code: &str, verifier: &Secret) -> Result<Granted, LwaError> {
        self.post(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose()),
            ("code_verifier", verifier.expose()),
        ])
        .await
    }

    /// Get a new access token (and usually a new refresh token).
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<Granted, LwaError> {
        self.post(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose()),
        ])
        .await
    }

    async fn post(&self, form: &[(&str, &str)]) -> Result<Granted, LwaError> {
        // reqwest's errors may quote the URL but never the form body.
        let resp = self
            .http
            .post(&self.token_url)
            .form(form)
            .send()
            .await
            .map_err(|e| LwaError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        let body = read_bounded(resp).await?;
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(LwaError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            let error = serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .and_then(|b| b.error)
                .unwrap_or_else(|| "unknown_error".into());
            // Only a known OAuth code is worth keeping; anything else could
            // echo what we sent.
            let error = if error.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                error
            } else {
                "unknown_error".into()
            };
            return Err(LwaError::Rejected {
                status: status.as_u16(),
                error,
            });
        }
        let t: TokenBody = serde_json::from_slice(&body)
            .map_err(|_| LwaError::Unavailable("LWA sent a 200 that is not token JSON".into()))?;
        // The AVS Device SDK treats these as failures too.
        match (t.access_token, t.refresh_token, t.token_type, t.expires_in) {
            (Some(a), Some(r), Some(tt), Some(exp))
                if !a.is_empty()
                    && !r.is_empty()
                    && tt.eq_ignore_ascii_case("bearer")
                    && exp > 0 =>
            {
                Ok(Granted {
                    access: a,
                    expires_in: exp,
                    refresh: r,
                })
            }
            _ => Err(LwaError::Unavailable(
                "LWA sent an incomplete token response".into(),
            )),
        }
    }
}
