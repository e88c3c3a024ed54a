//! The companion client against a tiny HTTPS responder (also used by the
//! actor's tests): the requests it sends and the answers it refuses.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::*;
use https::http as h;

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
    https::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = https::certs::LocalCa::new("test CA").unwrap();
    let server = ca.server(&["127.0.0.1".into()]).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("ca.crt"), &ca.pem.cert).unwrap();
    std::fs::write(p("s.crt"), &server.cert).unwrap();
    std::fs::write(p("s.key"), &server.key).unwrap();
    let tls = https::server_config(&p("s.crt"), &p("s.key"), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let stop = CancellationToken::new();
    tokio::spawn(https::serve(
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

/// A CA file of text or DER read as "no certificates", and pinning the
/// client to none failed every request with UnknownIssuer, never naming
/// the key: it is refused at set-up, by key.
#[test]
fn a_ca_file_that_is_not_pem_is_refused_by_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let err = CompanionClient::new(&CompanionClientConfig {
        url: "https://127.0.0.1:1".into(),
        ca_file: Some(ca),
        ..CompanionClientConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("companion.ca_file") && err.contains("no PEM block"),
        "{err}"
    );
}
