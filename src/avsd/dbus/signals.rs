//! PropertiesChanged for every transition an actor publishes, in order:
//! one signal per transition, with all the properties that moved in it, so
//! a client never sees `State=waiting-for-user` before the `LoginUrl` that
//! goes with it, and sees `listening` even when `idle` follows within
//! milliseconds (a `watch` of the latest value lost that; see
//! `kit::published`).
//!
//! The caller takes the first snapshot before it owns the bus name: a
//! client that reads the properties as soon as the name appears must see
//! every later change announced, even one made before these tasks first
//! run (CI caught a login's `waiting-for-user` never announced that way).
//!
//! `LoginUrl` and `UserCode` are announced by invalidation only (name, no
//! value): a signal goes to every listener on the bus, and the login code
//! is for root and group `avsd` only (see `authorization`).

use std::borrow::Cow;
use std::collections::HashMap;

use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;

use super::OBJECT_PATH;
use crate::auth::AuthStatus;
use crate::avs::connection::ConnectionState;
use crate::avs::connection::Reconnect;
use crate::dialog::DialogStatus;
use kit::published::Transitions;

const AUTHORIZATION: &str = "org.avsd.Avs1.Authorization";
const DIALOG: &str = "org.avsd.Avs1.Dialog";

/// One signal's worth: values, and names announced without a value.
#[derive(Default)]
struct Changes {
    changed: HashMap<&'static str, Value<'static>>,
    invalidated: Vec<&'static str>,
}

/// The Authorization properties that moved from `old` to `new`.
fn auth_changes(old: &AuthStatus, new: &AuthStatus) -> Changes {
    let mut c = Changes::default();
    if new.state != old.state {
        c.changed
            .insert("State", Value::from(new.state.as_str().to_string()));
    }
    if new.login_url != old.login_url {
        c.invalidated.push("LoginUrl");
    }
    if new.user_code != old.user_code {
        c.invalidated.push("UserCode");
    }
    if new.token_expires_at != old.token_expires_at {
        c.changed
            .insert("TokenExpiresAt", Value::from(new.token_expires_at));
    }
    if new.last_error != old.last_error {
        c.changed
            .insert("LastError", Value::from(new.last_error.clone()));
    }
    if new.last_error_reason != old.last_error_reason {
        c.changed.insert(
            "LastErrorReason",
            Value::from(new.last_error_reason.as_str()),
        );
    }
    c
}

/// The Dialog properties (State, LastError) that moved from `old` to `new`.
fn dialog_changes(old: &DialogStatus, new: &DialogStatus) -> Changes {
    let mut c = Changes::default();
    if new.state != old.state {
        c.changed
            .insert("State", Value::from(new.state.as_str().to_string()));
    }
    if new.last_error != old.last_error {
        c.changed
            .insert("LastError", Value::from(new.last_error.clone()));
    }
    if new.last_error_reason != old.last_error_reason {
        c.changed.insert(
            "LastErrorReason",
            Value::from(new.last_error_reason.as_str()),
        );
    }
    c
}

/// The back-off properties that moved from `old` to `new`.
fn reconnect_changes(old: &Reconnect, new: &Reconnect) -> Changes {
    let mut c = Changes::default();
    if new.attempt != old.attempt {
        c.changed
            .insert("ReconnectAttempt", Value::from(new.attempt));
    }
    let at = unix_secs(new.next_try_at);
    if at != unix_secs(old.next_try_at) {
        c.changed.insert("NextReconnectAt", Value::from(at));
    }
    c
}

/// `NextReconnectAt`'s value: Unix seconds, rounded up so that a client
/// never reads a time before the try; 0 for none.
pub(super) fn unix_secs(at: Option<std::time::SystemTime>) -> u64 {
    at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(0)
}

/// Announce every auth transition after `old`, the snapshot `rx` was
/// taken with.
pub(super) async fn forward_auth(
    conn: zbus::Connection,
    mut rx: Transitions<AuthStatus>,
    mut old: AuthStatus,
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    loop {
        let new = tokio::select! {
            _ = shutdown.cancelled() => return,
            v = rx.recv() => match v {
                Some(v) => v,
                None => return,
            },
        };
        emit(&emitter, AUTHORIZATION, auth_changes(&old, &new)).await;
        old = new;
    }
}

/// Announce every dialog, connection and back-off transition after `old`,
/// `old_link` and `old_backoff`, the snapshots `rx`, `link` and `backoff`
/// were taken with. Each queue is announced in its own order; the three
/// are independent publishers.
pub(super) async fn forward_dialog(
    conn: zbus::Connection,
    (mut old, mut rx): (DialogStatus, Transitions<DialogStatus>),
    (mut old_link, mut link): (ConnectionState, Transitions<ConnectionState>),
    (mut old_backoff, mut backoff): (Reconnect, Transitions<Reconnect>),
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    loop {
        let changes = tokio::select! {
            _ = shutdown.cancelled() => return,
            v = rx.recv() => {
                let Some(new) = v else { return };
                let c = dialog_changes(&old, &new);
                old = new;
                c
            }
            v = link.recv() => {
                let Some(new) = v else { return };
                let mut c = Changes::default();
                if new != old_link {
                    c.changed.insert("Connection", Value::from(new.as_str()));
                }
                old_link = new;
                c
            }
            v = backoff.recv() => {
                let Some(new) = v else { return };
                let c = reconnect_changes(&old_backoff, &new);
                old_backoff = new;
                c
            }
        };
        emit(&emitter, DIALOG, changes).await;
    }
}

async fn emit(emitter: &SignalEmitter<'_>, interface: &'static str, c: Changes) {
    if c.changed.is_empty() && c.invalidated.is_empty() {
        return;
    }
    let name = InterfaceName::from_static_str_unchecked(interface);
    if let Err(e) =
        Properties::properties_changed(emitter, name, c.changed, Cow::Owned(c.invalidated)).await
    {
        tracing::warn!("cannot announce a {interface} property change: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthState;

    #[test]
    fn the_login_code_is_announced_without_its_value() {
        let old = AuthStatus::default();
        let new = AuthStatus {
            state: AuthState::WaitingForUser,
            login_url: "https://companion.example/provision/ABC123".into(),
            user_code: "ABC123".into(),
            ..AuthStatus::default()
        };
        let c = auth_changes(&old, &new);
        assert_eq!(c.invalidated, ["LoginUrl", "UserCode"]);
        assert_eq!(c.changed.len(), 1, "only State carries a value");
        for v in c.changed.values() {
            let text = format!("{v:?}");
            assert!(!text.contains("ABC123"), "{text}");
        }
    }
}
