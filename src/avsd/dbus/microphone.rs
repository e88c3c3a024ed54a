//! `org.avsd.Avs1.Microphone`: a facade over the microphone privacy switch.
//! `Muted` is read by anyone and set by root and group `avsd` (the bus
//! policy allows `Properties.Set` only to them); each change is announced
//! with PropertiesChanged.

use std::borrow::Cow;
use std::collections::HashMap;

use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::interface;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;

use super::OBJECT_PATH;
use crate::audio::MicSwitch;
use kit::published::Transitions;

const MICROPHONE: &str = "org.avsd.Avs1.Microphone";

/// The Microphone interface object.
pub struct Microphone {
    mic: MicSwitch,
}

impl Microphone {
    /// Wrap the switch.
    pub fn new(mic: MicSwitch) -> Self {
        Self { mic }
    }
}

#[interface(name = "org.avsd.Avs1.Microphone")]
impl Microphone {
    /// Whether the microphone is muted (privacy switch): no capture device
    /// is open and Tap and Hold fail with MicrophoneMuted. Root and group
    /// avsd may set it; it survives restarts.
    #[zbus(property)]
    fn muted(&self) -> bool {
        self.mic.is_muted()
    }

    #[zbus(property)]
    async fn set_muted(&self, muted: bool) -> Result<(), zbus::fdo::Error> {
        let mic = self.mic.clone();
        // A small atomic file write: off the bus's executor all the same.
        tokio::task::spawn_blocking(move || mic.set_muted(muted))
            .await
            .map_err(|e| zbus::fdo::Error::Failed(format!("cannot switch the microphone: {e}")))
    }
}

/// Announce every change of the switch after `old` (the snapshot taken
/// before the bus name was owned, as in `signals`).
pub(super) async fn forward(
    conn: zbus::Connection,
    (mut old, mut rx): (bool, Transitions<bool>),
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    let name = InterfaceName::from_static_str_unchecked(MICROPHONE);
    loop {
        let new = tokio::select! {
            _ = shutdown.cancelled() => return,
            v = rx.recv() => match v {
                Some(v) => v,
                None => return,
            },
        };
        if new == old {
            continue;
        }
        old = new;
        let changed = HashMap::from([("Muted", Value::from(new))]);
        if let Err(e) =
            Properties::properties_changed(&emitter, name.clone(), changed, Cow::Owned(Vec::new()))
                .await
        {
            tracing::warn!("cannot announce a {MICROPHONE} property change: {e}");
        }
    }
}
