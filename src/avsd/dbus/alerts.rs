//! `org.avsd.Avs1.Alerts`: a facade over the alerts actor. `Alerts` lists
//! what is set, `Active` names what rings, `Stop()` silences it (no
//! network needed); each change is announced with PropertiesChanged.

use tokio_util::sync::CancellationToken;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::{AvsError, OBJECT_PATH};
use crate::agents::alerts::{AlertsHandle, AlertsView};

/// The Alerts interface object.
pub struct Alerts {
    alerts: AlertsHandle,
}

impl Alerts {
    /// Wrap a handle to the alerts actor.
    pub fn new(alerts: AlertsHandle) -> Self {
        Self { alerts }
    }
}

#[interface(name = "org.avsd.Avs1.Alerts")]
impl Alerts {
    /// Silence the ringing alert now; true if one was ringing. It is over
    /// (AVS hears AlertStopped when it can).
    async fn stop(&self, #[zbus(header)] _header: Header<'_>) -> Result<bool, AvsError> {
        Ok(self.alerts.stop().await?)
    }

    /// Every alert set: token, type (`TIMER`, `ALARM`, `REMINDER`), when
    /// it is due (Unix seconds) and its label (empty when none), earliest
    /// first.
    #[zbus(property)]
    fn alerts(&self) -> Vec<(String, String, i64, String)> {
        self.alerts
            .view()
            .borrow()
            .alerts
            .iter()
            .map(|a| (a.token.clone(), a.kind.clone(), a.due_unix, a.label.clone()))
            .collect()
    }

    /// The token of the alert sounding now; empty when none.
    #[zbus(property)]
    fn active(&self) -> String {
        self.alerts.view().borrow().active.clone()
    }
}

/// Announce each change of the alerts' view with PropertiesChanged.
pub(super) async fn forward(
    conn: zbus::Connection,
    alerts: AlertsHandle,
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    let mut rx = alerts.view();
    let mut old: AlertsView = rx.borrow_and_update().clone();
    let Ok(iface) = conn
        .object_server()
        .interface::<_, Alerts>(OBJECT_PATH)
        .await
    else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let new = rx.borrow_and_update().clone();
        let me = iface.get().await;
        if new.alerts != old.alerts
            && let Err(e) = me.alerts_changed(&emitter).await
        {
            tracing::warn!("cannot announce an Alerts property change: {e}");
        }
        if new.active != old.active
            && let Err(e) = me.active_changed(&emitter).await
        {
            tracing::warn!("cannot announce an Alerts property change: {e}");
        }
        old = new;
    }
}
