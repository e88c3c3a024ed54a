//! `org.avsd.Avs1.Speaker`: a facade over the volume's owner. `Volume` and
//! `Muted` are read by anyone and set by root and group `avsd` (the bus
//! policy allows `Properties.Set` only to them); each change, whatever made
//! it, is announced with PropertiesChanged (see `signals`).

use std::borrow::Cow;
use std::collections::HashMap;

use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::interface;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;

use super::{AvsError, OBJECT_PATH};
use crate::volume::{Source, Volume, VolumeError, VolumeHandle};
use kit::published::Transitions;

const SPEAKER: &str = "org.avsd.Avs1.Speaker";

/// The Speaker interface object.
pub struct Speaker {
    volume: VolumeHandle,
}

impl Speaker {
    /// Wrap a handle to the volume's owner.
    pub fn new(volume: VolumeHandle) -> Self {
        Self { volume }
    }
}

impl From<VolumeError> for AvsError {
    fn from(e: VolumeError) -> Self {
        match e {
            // AdjustVolume clamps, so this is never out of range.
            VolumeError::OutOfRange(_) => Self::ZBus(zbus::Error::Failure(e.to_string())),
            VolumeError::Actor(a) => a.into(),
        }
    }
}

impl From<VolumeError> for zbus::fdo::Error {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::OutOfRange(_) => Self::InvalidArgs(e.to_string()),
            VolumeError::Actor(a) => Self::Failed(a.to_string()),
        }
    }
}

#[interface(name = "org.avsd.Avs1.Speaker")]
impl Speaker {
    /// Move the volume by `delta` (e.g. +10 or -10); the result is clamped
    /// to 0..=100. A change of volume unmutes.
    async fn adjust_volume(
        &self,
        #[zbus(header)] _header: Header<'_>,
        delta: i32,
    ) -> Result<(), AvsError> {
        self.volume.adjust(i64::from(delta), Source::Local).await?;
        Ok(())
    }

    /// The volume, 0 to 100 (Alexa's scale). Root and group avsd may set
    /// it (above 100 is refused with InvalidArgs); setting it unmutes.
    #[zbus(property)]
    fn volume(&self) -> u8 {
        self.volume.state().borrow().volume
    }

    // The setter's doc would be a second comment in the introspection XML.
    #[zbus(property)]
    async fn set_volume(&self, volume: u8) -> Result<(), zbus::fdo::Error> {
        self.volume.set(i64::from(volume), Source::Local).await?;
        Ok(())
    }

    /// Whether the speaker is muted; root and group avsd may set it.
    #[zbus(property)]
    fn muted(&self) -> bool {
        self.volume.state().borrow().muted
    }

    #[zbus(property)]
    async fn set_muted(&self, muted: bool) -> Result<(), zbus::fdo::Error> {
        self.volume.set_muted(muted, Source::Local).await?;
        Ok(())
    }
}

/// Announce every volume transition after `old`, the snapshot `rx` was
/// taken with (before the bus name was owned, as in `signals`): one
/// PropertiesChanged with what moved, in order.
pub(super) async fn forward(
    conn: zbus::Connection,
    (mut old, mut rx): (Volume, Transitions<Volume>),
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    let name = InterfaceName::from_static_str_unchecked(SPEAKER);
    loop {
        let new = tokio::select! {
            _ = shutdown.cancelled() => return,
            v = rx.recv() => match v {
                Some(v) => v,
                None => return,
            },
        };
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        if new.volume != old.volume {
            changed.insert("Volume", Value::from(new.volume));
        }
        if new.muted != old.muted {
            changed.insert("Muted", Value::from(new.muted));
        }
        old = new;
        if changed.is_empty() {
            continue;
        }
        if let Err(e) =
            Properties::properties_changed(&emitter, name.clone(), changed, Cow::Owned(Vec::new()))
                .await
        {
            tracing::warn!("cannot announce a {SPEAKER} property change: {e}");
        }
    }
}
