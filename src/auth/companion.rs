//! The device side of the companion's HTTP API (contract: `POST
//! /provision/regCode`, `POST /provision/accessToken`, `POST
//! /provision/revoke`), over HTTPS with an optional pinned CA and client
//! certificate. Answers are read up to [`MAX_BODY`] bytes: a companion (or
//! whatever answers in its place) cannot make avsd buffer without end.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::CompanionClientConfig;
use crate::secret::Secret;

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
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::companion::http as h;

    /// What the responder answers: (status, body) by request path and JSON
    /// body.
    pub(crate) type Answers =
        Arc<dyn Fn(&str, &serde_json::Value) -> (StatusCode, Bytes) + Send + Sync>;

    /// What the responder saw: (path, JSON body) of each request.
    pub(crate) type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

    /// A tiny HTTPS server with its own CA: records each request (path and
    /// JSON body) and answers what `answers` says; and a client of it.
    pub(crate) async fn responder(
        answers: Answers,
    ) -> (CompanionClient, Seen, CancellationToken, tempfile::TempDir) {
        crate::tls::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::certs::LocalCa::new("test CA").unwrap();
        let server = ca.server(&["127.0.0.1".into()]).unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.crt"), &ca.pem.cert).unwrap();
        std::fs::write(p("s.crt"), &server.cert).unwrap();
        std::fs::write(p("s.key"), &server.key).unwrap();
        let tls = crate::tls::server_config(&p("s.crt"), &p("s.key"), None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let stop = CancellationToken::new();
        tokio::spawn(crate::tls::serve(
            listener,
            tls,
            stop.clone(),
            move |req, _peer| {
                let (answers, log) = (answers.clone(), log.clone());
                async move {
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let json = serde_json::from_slice(&body).unwrap_or_default();
                    let (status, body) = answers(&path, &json);
                    log.lock().unwrap().push((path, json));
                    let mut resp = h::json(status, &serde_json::Value::Null);
                    *resp.body_mut() = http_body_util::Full::new(body);
                    resp
                }
            },
        ));
        let client = CompanionClient::new(&CompanionClientConfig {
            url: format!("https://{addr}"),
            ca_file: Some(p("ca.crt")),
            ..CompanionClientConfig::default()
        })
        .unwrap();
        (client, seen, stop, dir)
    }

    #[tokio::test]
    async fn revoke_sends_the_session_and_takes_an_unknown_session_as_revoked() {
        let answers: Answers = Arc::new(|path, _| match path {
            "/provision/revoke" => (StatusCode::OK, Bytes::from_static(b"{}")),
            _ => (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"{\"error\":\"invalid_session\"}"),
            ),
        });
        let (client, seen, stop, _dir) = responder(answers).await;
        let session = Secret::new("s-123");
        client.revoke(&session).await.unwrap();
        assert_eq!(
            seen.lock().unwrap()[0],
            (
                "/provision/revoke".to_string(),
                serde_json::json!({"sessionId": "s-123"})
            )
        );
        stop.cancel();

        let gone: Answers = Arc::new(|_, _| {
            (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"{\"error\":\"invalid_session\"}"),
            )
        });
        let (client, _, stop, _dir) = responder(gone).await;
        client.revoke(&session).await.unwrap();
        stop.cancel();

        let broken: Answers =
            Arc::new(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"{}")));
        let (client, _, stop, _dir) = responder(broken).await;
        let err = client.revoke(&session).await.unwrap_err();
        assert!(
            matches!(err, CallError::Unexpected { status: 500, .. }),
            "{err}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_token_request_carries_the_refused_token() {
        let ok: Answers = Arc::new(|_, _| {
            (
                StatusCode::OK,
                Bytes::from_static(
                    b"{\"access_token\":\"Atza|new\",\"token_type\":\"bearer\",\"expires_in\":3600}",
                ),
            )
        });
        let (client, seen, stop, _dir) = responder(ok).await;
        let session = Secret::new("s-1");
        client.access_token(&session, None).await.unwrap();
        let refused = Secret::new("Atza|old");
        let tok = client.access_token(&session, Some(&refused)).await.unwrap();
        assert_eq!(tok.access_token.expose(), "Atza|new");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].1, serde_json::json!({"sessionId": "s-1"}));
        assert_eq!(
            seen[1].1,
            serde_json::json!({"sessionId": "s-1", "refusedToken": "Atza|old"})
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_not_buffered() {
        let huge: Answers = Arc::new(|_, _| {
            let mut body = b"{\"access_token\":\"".to_vec();
            body.extend(std::iter::repeat_n(b'x', MAX_BODY));
            body.extend(b"\",\"token_type\":\"bearer\",\"expires_in\":1}");
            (StatusCode::OK, Bytes::from(body))
        });
        let (client, _, stop, _dir) = responder(huge).await;
        let err = client
            .access_token(&Secret::new("s"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than 65536 bytes"), "{err}");
        stop.cancel();
    }
}
