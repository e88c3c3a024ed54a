//! `org.avsd.Avs1.Player`: a facade over the music player, shaped like
//! MPRIS2's `org.mpris.MediaPlayer2.Player` so desktop developers know it:
//! PlaybackStatus, Metadata (`xesam:title`, `xesam:artist`), Position (µs),
//! and the buttons Play, Pause, PlayPause, Next, Previous. A button sends
//! the PlaybackController event; AVS answers with the AudioPlayer directive
//! that acts, and PlaybackStatus follows the player.

use std::borrow::Cow;
use std::collections::HashMap;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::interface;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedValue, Value};

use super::polkit::{Gate, MEDIA};
use super::{AvsError, OBJECT_PATH};
use crate::agents::audio_player::{Button, PlayerLink, View};

const PLAYER: &str = "org.avsd.Avs1.Player";

/// The Player interface object.
pub struct Player {
    link: PlayerLink,
    gate: Gate,
}

impl Player {
    /// Wrap the player's handle; `gate` says who may press.
    pub fn new(link: PlayerLink, gate: Gate) -> Self {
        Self { link, gate }
    }

    fn press(&self, button: Button) -> Result<(), AvsError> {
        self.link.press(button).map_err(AvsError::Busy)
    }
}

#[interface(name = "org.avsd.Avs1.Player")]
impl Player {
    /// Ask Alexa to play or resume (PlaybackController.PlayCommandIssued).
    async fn play(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, MEDIA).await?;
        self.press(Button::Play)
    }

    /// Ask Alexa to pause (PlaybackController.PauseCommandIssued).
    async fn pause(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, MEDIA).await?;
        self.press(Button::Pause)
    }

    /// Pause when playing, else play.
    async fn play_pause(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, MEDIA).await?;
        self.press(Button::PlayPause)
    }

    /// Ask Alexa for the next item (PlaybackController.NextCommandIssued).
    async fn next(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, MEDIA).await?;
        self.press(Button::Next)
    }

    /// Ask Alexa for the previous item (PreviousCommandIssued).
    async fn previous(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AvsError> {
        self.gate.check(conn, &header, MEDIA).await?;
        self.press(Button::Previous)
    }

    /// `Playing`, `Paused` or `Stopped`, as in MPRIS2.
    #[zbus(property)]
    fn playback_status(&self) -> String {
        self.link
            .state
            .view()
            .borrow()
            .playback_status()
            .to_string()
    }

    /// `xesam:title` and `xesam:artist` (a list) where the Play directive
    /// gave them, and `avsd:token`, the stream's AVS token.
    #[zbus(property)]
    fn metadata(&self) -> HashMap<String, OwnedValue> {
        metadata(&self.link.state.view().borrow())
    }

    /// Microseconds into the current stream, as heard (not announced in
    /// PropertiesChanged, as in MPRIS2: read it when needed).
    #[zbus(property(emits_changed_signal = "false"))]
    fn position(&self) -> i64 {
        i64::try_from(self.link.state.offset_ms().saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

fn metadata(view: &View) -> HashMap<String, OwnedValue> {
    let mut m = HashMap::new();
    let mut put = |key: &str, value: Value<'_>| {
        if let Ok(v) = value.try_to_owned() {
            m.insert(key.to_string(), v);
        }
    };
    if !view.token.is_empty() {
        put("avsd:token", Value::from(view.token.as_str()));
    }
    if let Some(title) = &view.metadata.title {
        put("xesam:title", Value::from(title.as_str()));
    }
    if let Some(artist) = &view.metadata.artist {
        put("xesam:artist", Value::from(vec![artist.as_str()]));
    }
    m
}

/// PropertiesChanged (PlaybackStatus, Metadata) for each change of the
/// player's view.
pub(super) async fn forward(
    conn: zbus::Connection,
    mut view: watch::Receiver<View>,
    shutdown: CancellationToken,
) {
    let Ok(emitter) = SignalEmitter::new(&conn, OBJECT_PATH) else {
        return;
    };
    let mut last = view.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
        let now = view.borrow_and_update().clone();
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        if now.playback_status() != last.playback_status() {
            changed.insert(
                "PlaybackStatus",
                Value::from(now.playback_status().to_string()),
            );
        }
        if now.metadata != last.metadata || now.token != last.token {
            let m: HashMap<String, Value<'_>> = metadata(&now)
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            changed.insert("Metadata", Value::from(m));
        }
        last = now;
        if changed.is_empty() {
            continue;
        }
        let name = InterfaceName::from_static_str_unchecked(PLAYER);
        let none: &[&str] = &[];
        if let Err(e) =
            Properties::properties_changed(&emitter, name, changed, Cow::Borrowed(none)).await
        {
            tracing::debug!("cannot announce a player change: {e}");
        }
    }
}
