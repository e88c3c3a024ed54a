//! One HTTP/2 connection to AVS (or its stand-in) over TLS with ALPN `h2`.
//! A [`Link`] opens streams; the connection manager decides when to make
//! and drop links. TCP_NODELAY is set: without it Nagle and delayed ACKs add
//! ~40 ms steps to every small request (protocol brief, field notes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use kit::secret::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The endpoint URL or CA file is unusable (a config problem).
    #[error("{0}")]
    Setup(String),
    /// TCP or TLS failed, or timed out.
    #[error("cannot connect to {authority}: {reason}")]
    Connect {
        /// host:port
        authority: String,
        /// What failed.
        reason: String,
    },
    /// The server does not speak HTTP/2.
    #[error("{0} did not agree to HTTP/2 (ALPN h2); is this really an AVS endpoint?")]
    NoH2(String),
    /// The connection is going away (GOAWAY) and takes no new streams.
    #[error("the connection is closing (GOAWAY)")]
    GoingAway,
    /// Any other HTTP/2 failure.
    #[error("HTTP/2 error: {0}")]
    H2(#[from] h2::Error),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server closed it in an orderly way (GOAWAY with NO_ERROR).
    Graceful,
    /// It broke: I/O error, protocol error, or GOAWAY with an error code.
    Broken(String),
}

/// Where to connect, with the TLS settings to use.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.authority())
    }
}

impl Endpoint {
    /// An `https://` base URL, trusting the system roots plus `ca_file`.
    pub fn new(base: &str, ca_file: Option<&Path>) -> Result<Self, LinkError> {
        let url = url::Url::parse(base).map_err(|e| LinkError::Setup(format!("`{base}`: {e}")))?;
        if url.scheme() != "https" {
            return Err(LinkError::Setup(format!("`{base}` is not an https:// URL")));
        }
        let host = url
            .host_str()
            .ok_or_else(|| LinkError::Setup(format!("`{base}` has no host")))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let extra = match ca_file {
            Some(path) => read_certs(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            host,
            port,
            tls: client_tls(extra)?,
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    // The same reading as `--check-config`: the error names the key.
    https::check::ca_file(path)
        .map_err(|p| LinkError::Setup(format!("avs.ca_file: {}; fix: {}", p.message, p.fix)))
}

fn client_tls(extra: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>, LinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| LinkError::Setup(format!("cannot load trust roots: {e}")))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| LinkError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One open HTTP/2 connection. Cloning shares it.
#[derive(Clone)]
pub struct Link {
    send: SendRequest<Bytes>,
    authority: String,
    closed: watch::Receiver<Option<Closed>>,
    /// When the last stream was opened: AVS counts a connection as idle
    /// when no new stream opens, whatever the open ones carry.
    opened: Arc<watch::Sender<tokio::time::Instant>>,
    /// Set when a stream on this connection stalled: a black-holed
    /// connection should be pinged now, not after the idle interval.
    suspect: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({})", self.authority)
    }
}

/// The largest response header block avsd takes from AVS (its headers
/// are a few hundred bytes).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// Connect: TCP (no Nagle), TLS with ALPN h2, HTTP/2 handshake. The
/// connection is driven by its own task until it closes.
pub async fn connect(endpoint: &Endpoint) -> Result<Link, LinkError> {
    let authority = endpoint.authority();
    let fail = |reason: String| LinkError::Connect {
        authority: authority.clone(),
        reason,
    };
    let work = async {
        // Looked up apart from connecting so that a DNS failure says so.
        let addrs: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| fail(format!("DNS lookup of {} failed: {e}", endpoint.host)))?
                .collect();
        let tcp = TcpStream::connect(addrs.as_slice())
            .await
            .map_err(|e| fail(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(endpoint.host.clone())
            .map_err(|e| LinkError::Setup(format!("bad host name {}: {e}", endpoint.host)))?;
        let tls = TlsConnector::from(endpoint.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let alert = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                let no_h2 =
                    rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
                if alert == Some(&no_h2) {
                    LinkError::NoH2(authority.clone())
                } else {
                    fail(format!("TLS: {e}"))
                }
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(LinkError::NoH2(authority.clone()));
        }
        // AVS never pushes; a server that tries, or sends huge header
        // blocks, must not make avsd hold memory for them.
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .enable_push(false)
            .max_header_list_size(MAX_HEADER_LIST)
            .handshake(tls)
            .await?;
        Ok((send, conn))
    };
    let (send, conn) = tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
    let (tx, closed) = watch::channel(None);
    tokio::spawn(async move {
        let how = match conn.await {
            Ok(()) => Closed::Graceful,
            Err(e) if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) => {
                Closed::Graceful
            }
            Err(e) => Closed::Broken(e.to_string()),
        };
        let _ = tx.send(Some(how));
    });
    Ok(Link {
        send,
        authority,
        closed,
        opened: Arc::new(watch::Sender::new(tokio::time::Instant::now())),
        suspect: Arc::new(tokio::sync::Notify::new()),
    })
}

impl Link {
    /// `host:port` of the peer.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Open a stream. With `body == false` the request ends with its
    /// headers (GET); otherwise the caller writes the body to the
    /// returned [`SendStream`].
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        token: &Secret,
        content_type: Option<&str>,
        body: bool,
    ) -> Result<(ResponseFuture, Option<SendStream<Bytes>>), LinkError> {
        let mut send = self.send.clone().ready().await.map_err(going_away)?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
            .header("authorization", format!("Bearer {}", token.expose()));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(())
            .map_err(|e| LinkError::Setup(format!("bad request for {path}: {e}")))?;
        let (resp, stream) = send.send_request(req, !body).map_err(going_away)?;
        self.opened.send_replace(tokio::time::Instant::now());
        Ok((resp, body.then_some(stream)))
    }

    /// When a stream was last opened on this connection.
    pub fn last_opened(&self) -> watch::Receiver<tokio::time::Instant> {
        self.opened.subscribe()
    }

    /// A GET whose response body streams (the downchannel, `/ping`).
    pub async fn get(&self, path: &str, token: &Secret) -> Result<Response<RecvStream>, LinkError> {
        let (resp, _) = self.open(Method::GET, path, token, None, false).await?;
        Ok(resp.await?)
    }

    /// A stream on this connection stalled: whoever watches the link
    /// should check that it is still alive.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// Wait until [`Link::suspect`] is called (a call made before counts).
    pub async fn suspected(&self) {
        self.suspect.notified().await;
    }

    /// Whether the connection has ended, and how.
    pub fn closed_now(&self) -> Option<Closed> {
        self.closed.borrow().clone()
    }

    /// Wait until the connection ends.
    pub async fn closed(&self) -> Closed {
        let mut rx = self.closed.clone();
        loop {
            if let Some(how) = rx.borrow_and_update().clone() {
                return how;
            }
            if rx.changed().await.is_err() {
                return Closed::Broken("connection task ended".to_string());
            }
        }
    }
}

fn going_away(e: h2::Error) -> LinkError {
    if e.is_go_away() {
        LinkError::GoingAway
    } else {
        LinkError::H2(e)
    }
}

#[cfg(test)]
mod ca_file_tests {
    /// The AVS CA file is read like `--check-config` reads it, and a bad
    /// one is named by its key, not reported as UnknownIssuer later.
    #[test]
    fn a_ca_file_that_is_not_pem_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.der");
        std::fs::write(&ca, [0x30u8, 0x82, 0x01, 0x0a]).unwrap();
        let err = super::Endpoint::new("https://127.0.0.1:1", Some(&ca)).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("avs.ca_file") && err.contains("DER"), "{err}");
    }
}
