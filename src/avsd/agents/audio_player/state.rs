//! What the player shows the rest of the daemon: the PlaybackState of the
//! context (its offset read live from the speaker, so it is what was
//! heard, not what was decoded) and the view D-Bus publishes.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::directive::Metadata;
use crate::audio::mixer::SourceControl;
use avs_proto::message::{PlaybackState, PlayerActivity};

/// The D-Bus view: what `org.avsd.Avs1.Player` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The PlaybackState's activity.
    pub activity: PlayerActivity,
    /// The current stream's token (empty when none).
    pub token: String,
    /// Its title and artist, where known.
    pub metadata: Metadata,
}

impl View {
    /// MPRIS's PlaybackStatus: Playing, Paused or Stopped.
    pub fn playback_status(&self) -> &'static str {
        match self.activity {
            PlayerActivity::Playing | PlayerActivity::BufferUnderrun => "Playing",
            PlayerActivity::Paused => "Paused",
            _ => "Stopped",
        }
    }
}

#[derive(Default)]
struct Inner {
    token: String,
    activity: PlayerActivity,
    /// Offset of the stream's first sample played (its start offset), or
    /// the offset where it stopped.
    base_ms: u64,
    /// While a source plays: its counters and the output's rate.
    live: Option<(Arc<SourceControl>, u32)>,
}

/// Shared between the player's actor (writes) and the context reader and
/// D-Bus (read). Cheap to clone.
#[derive(Clone)]
pub struct PlayerState {
    inner: Arc<Mutex<Inner>>,
    view: watch::Sender<View>,
}

impl Default for PlayerState {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            view: watch::channel(View::default()).0,
        }
    }
}

impl PlayerState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it left plain data; carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The context entry now.
    pub fn playback_state(&self) -> PlaybackState {
        let inner = self.lock();
        PlaybackState {
            token: inner.token.clone(),
            offset_in_milliseconds: offset(&inner),
            player_activity: inner.activity,
        }
    }

    /// Milliseconds into the current stream, as heard.
    pub fn offset_ms(&self) -> u64 {
        offset(&self.lock())
    }

    /// Changes of the D-Bus view.
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// A stream starts playing (from `base_ms`) on `control`.
    pub(super) fn playing(
        &self,
        token: &str,
        base_ms: u64,
        live: Option<(Arc<SourceControl>, u32)>,
        metadata: &Metadata,
    ) {
        {
            let mut inner = self.lock();
            inner.token = token.to_string();
            inner.base_ms = base_ms;
            inner.live = live;
            inner.activity = PlayerActivity::Playing;
        }
        self.publish(Some(metadata));
    }

    /// The activity changes; a stream that ends keeps its last offset.
    pub(super) fn set(&self, activity: PlayerActivity) {
        {
            let mut inner = self.lock();
            if !matches!(
                activity,
                PlayerActivity::Playing | PlayerActivity::Paused | PlayerActivity::BufferUnderrun
            ) {
                inner.base_ms = offset(&inner);
                inner.live = None;
            }
            inner.activity = activity;
        }
        self.publish(None);
    }

    fn publish(&self, metadata: Option<&Metadata>) {
        let (token, activity) = {
            let inner = self.lock();
            (inner.token.clone(), inner.activity)
        };
        self.view.send_if_modified(|v| {
            let before = v.clone();
            v.token = token;
            v.activity = activity;
            if let Some(m) = metadata {
                v.metadata = m.clone();
            }
            *v != before
        });
    }
}

fn offset(inner: &Inner) -> u64 {
    inner.base_ms
        + inner.live.as_ref().map_or(0, |(control, rate)| {
            control.played_frames() * 1000 / u64::from((*rate).max(1))
        })
}
