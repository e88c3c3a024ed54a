//! The authorization actor against a stand-in companion: refusals renew at
//! once, a refused token handed back is asked for again, reset revokes.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::companion_client::tests::{Answers, Seen, responder};
use super::*;

fn token_body(token: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"access_token\":\"{token}\",\"token_type\":\"bearer\",\"expires_in\":3600}}"
    ))
}

/// An actor whose saved session is linked, talking to a responder that
/// answers token requests with `answers`.
async fn linked_actor(
    answers: Answers,
) -> (AuthHandle, Seen, CancellationToken, Vec<tempfile::TempDir>) {
    let (client, seen, stop, dir) = responder(answers).await;
    let state = tempfile::tempdir().unwrap();
    session::save(
        state.path(),
        &session::Session {
            companion_url: client.base().to_string(),
            product_id: "p".into(),
            dsn: "d".into(),
            session_id: Secret::new("s-1"),
            linked: true,
            login_url: String::new(),
            user_code: String::new(),
            code_expires_at: 0,
            interval: 1,
        },
    )
    .unwrap();
    let settings = Settings {
        companion: Ok(client),
        product_id: "p".into(),
        dsn: "d".into(),
        state_dir: state.path().to_path_buf(),
        register_on_start: false,
        renew_before: Duration::from_secs(600),
    };
    // The actor stops when its handles are dropped; `stop` is the
    // responder's.
    let auth = spawn(settings, &TaskTracker::new(), CancellationToken::new());
    (auth, seen, stop, vec![dir, state])
}

/// Wait until the actor holds `want`.
async fn holds(auth: &AuthHandle, want: &str) {
    let mut status = auth.token_changes();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if auth
                .access_token()
                .await
                .is_ok_and(|t| t.value.expose() == want)
            {
                return;
            }
            let _ = status.changed().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the actor never held {want}"));
}

fn refusals(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, v)| v["refusedToken"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_refused_token_is_renewed_at_once_with_the_refusal() {
    // The companion refreshes when told which token AVS refused.
    let answers: Answers = Arc::new(|_, body| match body["refusedToken"].as_str() {
        Some("Atza|a") => (StatusCode::OK, token_body("Atza|b")),
        _ => (StatusCode::OK, token_body("Atza|a")),
    });
    let (auth, seen, stop, _dirs) = linked_actor(answers).await;
    holds(&auth, "Atza|a").await;
    auth.token_rejected(Secret::new("Atza|a")).await.unwrap();
    holds(&auth, "Atza|b").await;
    assert_eq!(refusals(&seen), ["Atza|a"]);
    // A refusal of a token no longer held asks the companion nothing.
    auth.token_rejected(Secret::new("Atza|a")).await.unwrap();
    auth.ping(Duration::from_secs(5)).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    stop.cancel();
}

#[tokio::test]
async fn the_refused_token_handed_back_is_asked_for_again_not_waited_on() {
    // An older companion ignores the refusal and answers the cached
    // token: avsd keeps asking (with back-off), never waits silently.
    let answers: Answers = Arc::new(|_, _| (StatusCode::OK, token_body("Atza|a")));
    let (auth, seen, stop, _dirs) = linked_actor(answers).await;
    holds(&auth, "Atza|a").await;
    auth.token_rejected(Secret::new("Atza|a")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), async {
        while refusals(&seen).len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the refusal was reported again and again");
    stop.cancel();
}

#[tokio::test]
async fn reset_revokes_the_session_at_the_companion_and_forgets_it_here() {
    let answers: Answers = Arc::new(|path, _| match path {
        "/provision/revoke" => (StatusCode::OK, Bytes::from_static(b"{}")),
        _ => (StatusCode::OK, token_body("Atza|a")),
    });
    let (auth, seen, stop, dirs) = linked_actor(answers).await;
    holds(&auth, "Atza|a").await;
    let words = auth.reset_report().await.unwrap();
    assert_eq!(words, "the session was revoked at the companion");
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last,
        (
            "/provision/revoke".to_string(),
            serde_json::json!({"sessionId": "s-1"})
        )
    );
    assert!(session::load(dirs[1].path()).unwrap().is_none());
    assert_eq!(auth.status().borrow().state, AuthState::Unregistered);
    stop.cancel();
}

#[tokio::test]
async fn reset_without_the_companion_forgets_here_and_says_so() {
    // A companion that cannot revoke now (unreachable ones time out
    // after REVOKE_TIMEOUT, within the call's reply timeout).
    let answers: Answers = Arc::new(|path, _| match path {
        "/provision/revoke" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"{\"error\":\"temporarily_unavailable\"}"),
        ),
        _ => (StatusCode::OK, token_body("Atza|a")),
    });
    let (auth, _seen, stop, dirs) = linked_actor(answers).await;
    holds(&auth, "Atza|a").await;
    let words = auth.reset_report().await.unwrap();
    assert!(
        words.starts_with("the session was forgotten on this device only"),
        "{words}"
    );
    assert!(session::load(dirs[1].path()).unwrap().is_none());
    assert_eq!(auth.status().borrow().state, AuthState::Unregistered);
    stop.cancel();
}
