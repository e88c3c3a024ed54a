//! PropertiesChanged for every change an actor publishes. All properties
//! that moved in one update go out in one signal, so a client never sees
//! `State=waiting-for-user` before the `LoginUrl` that goes with it.
//!
//! The caller takes the first snapshot before it owns the bus name: a
//! client that reads the properties as soon as the name appears must see
//! every later change announced, even one made before these tasks first
//! run (CI caught a login's `waiting-for-user` never announced that way).

use std::borrow::Cow;
use std::collections::HashMap;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;

use super::OBJECT_PATH;
use crate::auth::AuthStatus;
use crate::dialog::{ConnectionState, DialogStatus};

const AUTHORIZATION: &str = "org.avsd.Avs1.Authorization";
const DIALOG: &str = "org.avsd.Avs1.Dialog";

/// Announce auth changes after `old`, the snapshot `rx` was last marked
/// seen at.
pub(super) async fn forward_auth(
    conn: zbus::Connection,
    mut rx: watch::Receiver<AuthStatus>,
    mut old: AuthStatus,
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        let new = rx.borrow_and_update().clone();
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        if new.state != old.state {
            changed.insert("State", Value::from(new.state.as_str()));
        }
        if new.login_url != old.login_url {
            changed.insert("LoginUrl", Value::from(new.login_url.as_str()));
        }
        if new.user_code != old.user_code {
            changed.insert("UserCode", Value::from(new.user_code.as_str()));
        }
        if new.token_expires_at != old.token_expires_at {
            changed.insert("TokenExpiresAt", Value::from(new.token_expires_at));
        }
        if new.last_error != old.last_error {
            changed.insert("LastError", Value::from(new.last_error.as_str()));
        }
        emit(&emitter, AUTHORIZATION, changed).await;
        old = new;
    }
}

/// Announce dialog and connection changes after `old`, the snapshot `rx`
/// was last marked seen at (and `link` likewise).
pub(super) async fn forward_dialog(
    conn: zbus::Connection,
    mut rx: watch::Receiver<DialogStatus>,
    mut old: DialogStatus,
    mut link: watch::Receiver<ConnectionState>,
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    loop {
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                let new = rx.borrow_and_update().clone();
                if new.state != old.state {
                    changed.insert("State", Value::from(new.state.as_str()));
                }
                if new.last_error != old.last_error {
                    changed.insert("LastError", Value::from(new.last_error.clone()));
                }
                old = new;
            }
            r = link.changed() => {
                if r.is_err() {
                    return;
                }
                let connection = *link.borrow_and_update();
                changed.insert("Connection", Value::from(connection.as_str()));
            }
        }
        emit(&emitter, DIALOG, changed).await;
    }
}

async fn emit(
    emitter: &SignalEmitter<'_>,
    interface: &'static str,
    changed: HashMap<&str, Value<'_>>,
) {
    if changed.is_empty() {
        return;
    }
    let name = InterfaceName::from_static_str_unchecked(interface);
    if let Err(e) = Properties::properties_changed(emitter, name, changed, Cow::Borrowed(&[])).await
    {
        tracing::warn!("cannot announce a {interface} property change: {e}");
    }
}
