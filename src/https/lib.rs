//! The HTTPS server side that `avs-companion` and the stand-ins share:
//! loading PEM files into a rustls server config (optionally asking
//! browsers and devices for a client certificate), the accept loop with its
//! limits, request and response helpers ([`http`]), the page frame
//! ([`page`]), and making a local CA with server and device certificates.

pub mod certs;
pub mod check;
pub mod http;
pub mod page;
pub(crate) mod plain;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use serve::{Limits, Peer, serve, serve_with};

/// What went wrong setting up TLS; every variant names the file and a fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{file}: {problem}; fix: {fix}")]
    File {
        /// The file that was read.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS setup with {file} failed: {source}; fix: {fix}")]
    Rustls {
        /// The file involved.
        file: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
        /// What to do about it.
        fix: &'static str,
    },
    /// The client-certificate verifier could not be built from the CA file.
    #[error(
        "device CA {file}: {problem}; fix: use a PEM file holding the CA that signed the device certificates"
    )]
    ClientCa {
        /// The CA file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A certificate or key file holds the wrong thing (see [`check`]).
    #[error("{}; fix: {}", .0.message, .0.fix)]
    Content(check::FileProblem),
    /// Certificate generation failed.
    #[error("making certificates failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The one crypto provider of the project (ring; no aws-lc-rs anywhere).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install ring as the process-wide provider; every binary and TLS test
/// calls this first because rustls has no default provider in this build.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Read every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    check::certificates(path).map_err(TlsError::Content)
}

/// Read the private key from a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check::private_key(path).map_err(TlsError::Content)
}

/// A root store holding every certificate of a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Rustls {
            file: path.to_path_buf(),
            source: e,
            fix: "the file must hold CA certificates",
        })?;
    }
    Ok(roots)
}

/// A server config from a certificate chain and key, speaking h2 and
/// HTTP/1.1. With `client_ca`, clients may present a certificate signed by
/// that CA; clients without one are still let in (browsers have none), and
/// the routes that need one check [`Peer::cert_names`].
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls {
            file: cert.to_path_buf(),
            source: e,
            fix: "this build's crypto provider lacks TLS 1.2/1.3 (a build problem)",
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    file: ca.to_path_buf(),
                    problem: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Rustls {
            file: cert.to_path_buf(),
            source: e,
            fix: "the key must belong to the first certificate, and the certificate must be signed by a CA (not self-signed)",
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The names a client certificate carries: its subject common names and its
/// subject alternative names (DNS, URI, email). Empty if it cannot be parsed.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    names.push((*s).to_string())
                }
                _ => {}
            }
        }
    }
    names
}

/// Compare secrets without leaking, through timing, where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
