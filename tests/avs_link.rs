//! The HTTP/2 link against an in-test HTTP/2 server over TLS: ALPN, the
//! pinned CA, streaming bodies both ways, and GOAWAY.

use std::sync::Arc;
use std::time::Duration;

use avsd::avs::link::{self, Closed, Endpoint, LinkError};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use kit::secret::Secret;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// A server that answers `/ping` with 204 and echoes `/echo` bodies, and
/// sends GOAWAY when told to.
async fn serve(pki: &Pki, alpn: &[&[u8]]) -> (u16, mpsc::Sender<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (goaway_tx, mut goaway_rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let mut conn = h2::server::handshake(tls).await.unwrap();
        loop {
            tokio::select! {
                req = conn.accept() => {
                    let Some(Ok((req, mut respond))) = req else { break };
                    tokio::spawn(async move {
                        let auth = req.headers()["authorization"].to_str().unwrap().to_string();
                        match req.uri().path() {
                            "/ping" => {
                                let status = if auth == "Bearer good" { 204 } else { 403 };
                                let resp = Response::builder().status(status).body(()).unwrap();
                                respond.send_response(resp, true).unwrap();
                            }
                            _ => {
                                let mut body = req.into_body();
                                let resp = Response::builder().status(200).body(()).unwrap();
                                let mut out = respond.send_response(resp, false).unwrap();
                                while let Some(chunk) = body.data().await {
                                    let chunk = chunk.unwrap();
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                    out.send_data(chunk, false).unwrap();
                                }
                                out.send_data(Bytes::new(), true).unwrap();
                            }
                        }
                    });
                }
                Some(()) = goaway_rx.recv() => conn.graceful_shutdown(),
            }
        }
    });
    (port, goaway_tx)
}

fn endpoint(pki: &Pki, port: u16) -> (Endpoint, tempfile::NamedTempFile) {
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    let ep = Endpoint::new(&format!("https://localhost:{port}"), Some(ca.path())).unwrap();
    (ep, ca)
}

#[tokio::test]
async fn streams_both_ways_then_sees_goaway() {
    let pki = pki();
    let (port, goaway) = serve(&pki, &[b"h2"]).await;
    let (ep, _ca) = endpoint(&pki, port);
    let link = link::connect(&ep).await.unwrap();

    let ping = link.get("/ping", &Secret::new("good")).await.unwrap();
    assert_eq!(ping.status(), StatusCode::NO_CONTENT);
    let ping = link.get("/ping", &Secret::new("bad")).await.unwrap();
    assert_eq!(ping.status(), StatusCode::FORBIDDEN);

    // The response starts before the upload ends: what a live audio part needs.
    let (resp, body) = link
        .open(
            Method::POST,
            "/echo",
            &Secret::new("good"),
            Some("application/octet-stream"),
            true,
        )
        .await
        .unwrap();
    let mut body = body.unwrap();
    body.send_data(Bytes::from_static(b"first "), false)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut recv = resp.into_body();
    let first = recv.data().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first ");
    body.send_data(Bytes::from_static(b"second"), true).unwrap();
    let second = recv.data().await.unwrap().unwrap();
    assert_eq!(&second[..], b"second");

    goaway.send(()).await.unwrap();
    let how = tokio::time::timeout(Duration::from_secs(10), link.closed())
        .await
        .unwrap();
    assert_eq!(how, Closed::Graceful);
    let err = link.get("/ping", &Secret::new("good")).await.unwrap_err();
    assert!(
        matches!(err, LinkError::GoingAway | LinkError::H2(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn refuses_a_server_without_h2_or_with_an_unknown_ca() {
    let pki = pki();
    let (port, _g) = serve(&pki, &[b"http/1.1"]).await;
    let (ep, _ca) = endpoint(&pki, port);
    let err = link::connect(&ep).await.unwrap_err();
    assert!(matches!(err, LinkError::NoH2(_)), "{err}");

    let other = self::pki();
    let (port, _g) = serve(&pki, &[b"h2"]).await;
    let (ep, _ca) = endpoint(&other, port);
    let err = link::connect(&ep).await.unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[test]
fn endpoint_errors_name_the_problem() {
    assert!(
        Endpoint::new("http://x", None)
            .unwrap_err()
            .to_string()
            .contains("https://")
    );
    let err =
        Endpoint::new("https://x", Some(std::path::Path::new("/nonexistent.pem"))).unwrap_err();
    assert!(err.to_string().contains("/nonexistent.pem"), "{err}");
}
