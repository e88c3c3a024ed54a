//! `org.avsd.Avs1.WakeWord`: a facade over the wake word. `Enabled` is read
//! by anyone and set by root and group `avsd` (the bus policy allows
//! `Properties.Set` only to them); each detection is announced with the
//! `Detected` signal.

use std::borrow::Cow;
use std::collections::HashMap;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::interface;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;

use super::OBJECT_PATH;
use crate::wakeword::{Detected, Wake};
use kit::published::Transitions;

const WAKEWORD: &str = "org.avsd.Avs1.WakeWord";

/// The WakeWord interface object.
pub struct WakeWord {
    wake: Wake,
}

impl WakeWord {
    /// Wrap the wake word's shared parts.
    pub fn new(wake: Wake) -> Self {
        Self { wake }
    }
}

#[interface(name = "org.avsd.Avs1.WakeWord")]
impl WakeWord {
    /// Whether avsd listens for the wake word while idle (the microphone
    /// then stays open unless Microphone.Muted). Root and group avsd may
    /// set it; it survives restarts. `wakeword.enabled` in avsd.toml is the
    /// value until it is set, and wins again once that key is changed.
    #[zbus(property)]
    fn enabled(&self) -> bool {
        self.wake.enabled.is_on()
    }

    #[zbus(property)]
    async fn set_enabled(&self, enabled: bool) {
        self.wake.enabled.set(enabled);
    }

    /// The model file (`wakeword.model`); when it cannot be used,
    /// Dialog.LastError says why once the wake word is enabled.
    #[zbus(property)]
    fn model(&self) -> String {
        self.wake.model.display().to_string()
    }

    /// The wake word was heard: where it lies in the Recognize's audio (in
    /// samples at 16 kHz, end exclusive) and the engine's score (0..1).
    #[zbus(signal)]
    async fn detected(
        emitter: &SignalEmitter<'_>,
        start_index: u64,
        end_index: u64,
        score: f64,
    ) -> zbus::Result<()>;
}

/// Announce `Enabled` changes and every detection.
pub(super) async fn forward(
    conn: zbus::Connection,
    (mut old, mut rx): (bool, Transitions<bool>),
    mut detected: broadcast::Receiver<Detected>,
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    let name = InterfaceName::from_static_str_unchecked(WAKEWORD);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            v = rx.recv() => {
                let Some(new) = v else { return };
                if new == old {
                    continue;
                }
                old = new;
                let changed = HashMap::from([("Enabled", Value::from(new))]);
                if let Err(e) = Properties::properties_changed(
                    &emitter,
                    name.clone(),
                    changed,
                    Cow::Owned(Vec::new()),
                )
                .await
                {
                    tracing::warn!("cannot announce a {WAKEWORD} property change: {e}");
                }
            }
            d = detected.recv() => match d {
                Ok(d) => {
                    if let Err(e) = WakeWord::detected(&emitter, d.start, d.end, d.score).await {
                        tracing::warn!("cannot send {WAKEWORD}.Detected: {e}");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
