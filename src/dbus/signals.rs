//! PropertiesChanged for every change an actor publishes: one task per
//! interface turns `watch` updates into signals for the fields that moved.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Authorization, Dialog, OBJECT_PATH};
use crate::auth::AuthStatus;
use crate::dialog::{ConnectionState, DialogStatus};

pub(super) async fn forward_auth(
    conn: zbus::Connection,
    mut rx: watch::Receiver<AuthStatus>,
    shutdown: CancellationToken,
) {
    let Ok(iface) = conn
        .object_server()
        .interface::<_, Authorization>(OBJECT_PATH)
        .await
    else {
        return;
    };
    let mut old = rx.borrow_and_update().clone();
    while wait(&mut rx, &shutdown).await {
        let new = rx.borrow_and_update().clone();
        let obj = iface.get().await;
        let em = iface.signal_emitter();
        let mut sent = Ok(());
        if new.state != old.state {
            sent = sent.and(obj.state_changed(em).await);
        }
        if new.login_url != old.login_url {
            sent = sent.and(obj.login_url_changed(em).await);
        }
        if new.user_code != old.user_code {
            sent = sent.and(obj.user_code_changed(em).await);
        }
        if new.token_expires_at != old.token_expires_at {
            sent = sent.and(obj.token_expires_at_changed(em).await);
        }
        if new.last_error != old.last_error {
            sent = sent.and(obj.last_error_changed(em).await);
        }
        if let Err(e) = sent {
            tracing::warn!("cannot announce an Authorization property change: {e}");
        }
        old = new;
    }
}

pub(super) async fn forward_dialog(
    conn: zbus::Connection,
    mut rx: watch::Receiver<DialogStatus>,
    mut link: watch::Receiver<ConnectionState>,
    shutdown: CancellationToken,
) {
    let Ok(iface) = conn
        .object_server()
        .interface::<_, Dialog>(OBJECT_PATH)
        .await
    else {
        return;
    };
    rx.borrow_and_update();
    link.borrow_and_update();
    loop {
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                rx.borrow_and_update();
                iface.get().await.state_changed(iface.signal_emitter()).await
            }
            r = link.changed() => {
                if r.is_err() {
                    return;
                }
                link.borrow_and_update();
                iface.get().await.connection_changed(iface.signal_emitter()).await
            }
        };
        if let Err(e) = sent {
            tracing::warn!("cannot announce a Dialog property change: {e}");
        }
    }
}

/// Wait for the next change; false when the publisher is gone or we stop.
async fn wait<T>(rx: &mut watch::Receiver<T>, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = rx.changed() => r.is_ok(),
    }
}
