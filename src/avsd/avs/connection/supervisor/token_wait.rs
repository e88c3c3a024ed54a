//! Waiting for a usable access token before connecting: one other than
//! the token AVS refused last, said in the log while it takes long.

use std::time::Duration;

use tokio::time::Instant;

use crate::auth::{AuthHandle, AuthState, AuthStatus};
use kit::published::Subscriber;
use kit::secret::Secret;

/// How often a long wait for a token says it is still waiting.
const WAITING_NOTE: Duration = Duration::from_secs(10);

/// Wait until the auth actor holds a valid token other than `rejected`,
/// saying in the log what it waits for every [`WAITING_NOTE`]. A refused
/// token is renewed by the auth actor, which announces the new one on
/// `token_changes` (the status may not change: same state, same expiry
/// second).
pub(super) async fn wait_for_token(auth: AuthHandle, rejected: Option<Secret>) {
    let mut status: Subscriber<AuthStatus> = auth.status();
    let mut tokens = auth.token_changes();
    let since = Instant::now();
    loop {
        tokens.borrow_and_update();
        let state = status.borrow_and_update().state;
        if state == AuthState::Authorized {
            match auth.access_token().await {
                Ok(t) if Some(&t.value) != rejected.as_ref() => {
                    if rejected.is_some() {
                        tracing::info!(
                            "a new access token arrived after {} ms; connecting",
                            since.elapsed().as_millis()
                        );
                    }
                    return;
                }
                _ => {}
            }
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() {
                std::future::pending::<()>().await;
            },
            Ok(()) = tokens.changed() => {}
            () = tokio::time::sleep(WAITING_NOTE) => {
                let what = if rejected.is_some() {
                    "a new access token (AVS refused the last one)"
                } else {
                    "a valid access token (see Authorization.State and LastError)"
                };
                tracing::info!(
                    "not connecting to AVS yet: waiting {} s so far for {what}",
                    since.elapsed().as_secs()
                );
            }
        }
    }
}
