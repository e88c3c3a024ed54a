//! What plays on the speaker and what it reports: the output's config, the
//! [`Player`] of one sound and its [`PlayerEvent`]s, and the focus
//! [`Activity`] a sound plays as. The speaker itself is in `speaker.rs`:
//!
//! ```text
//! Speak attachment (tokio mpsc) ─▶ "avsd-mp3" thread: symphonia ▶ mono f32 ▶ resample
//!     ─rtrb ring (mixer source)─▶ Mixer in the cpal callback ▶ every channel ▶ ALSA
//! "avsd-speaker" thread: opens (and reopens) the output, adds sources under
//!     audio focus, turns their counters into PlayerEvents
//! ```
//!
//! The threads are started once, by `Speaker::new`, and kept: a thread per
//! answer would give glibc a new malloc arena each time. Decoder threads are
//! made as sounds overlap, at most `MAX_SOURCES`, and then reused. The
//! output is opened at the first sound and stays open, playing silence
//! between them, so an answer's first decoded sample goes to ALSA with the
//! next period instead of after a freshly opened device's start-up. A device
//! that fails is closed and opened again for the next sound.
//!
//! Decoding starts with the first MPEG frame, so sound starts before the
//! attachment has fully arrived.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::device::StreamFormat;
use super::focus::{Backgrounded, Channel};
use super::mixer::{MasterGain, SourceControl};
use super::{AudioError, DEFAULT_DEVICE};

/// Where to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackConfig {
    /// ALSA PCM name (`default`, `hw:0,0`, a name from asound.conf).
    pub device: String,
    /// Open the device with exactly this format instead of its default one.
    pub format: Option<StreamFormat>,
    /// The volume, applied to the whole mix (unity unless the volume's
    /// owner shares its gain here).
    pub master: MasterGain,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.to_string(),
            format: None,
            master: MasterGain::default(),
        }
    }
}

impl PlaybackConfig {
    /// Play on `device` in its default format.
    pub fn device(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            format: None,
            master: MasterGain::default(),
        }
    }
}

/// What a [`Player`] reports, in this order: `Started`, then exactly one of
/// `Finished`, `Stopped` or `Failed`. After that the event channel closes
/// ([`Player::next_event`] returns `None`).
#[derive(Debug, Clone, PartialEq)]
pub enum PlayerEvent {
    /// The first decoded sample was handed to ALSA (send `SpeechStarted`).
    Started,
    /// Every decoded sample was played (send `SpeechFinished`).
    Finished,
    /// [`Player::stop`] interrupted playback.
    Stopped,
    /// Decoding or the device failed; nothing more will play.
    Failed(AudioError),
}

/// What plays, on which focus channel, and what it wants done with it
/// when a higher channel takes the foreground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// The focus channel it plays on.
    pub channel: Channel,
    /// The AVS interface that plays it, for the log and the context.
    pub interface: &'static str,
    /// Duck, pause or stop in the background.
    pub backgrounded: Backgrounded,
    /// Its gain in the foreground (1.0: as decoded).
    pub gain: f32,
}

impl Activity {
    /// Alexa's voice: the Dialog channel, stopped if it ever lost focus.
    pub const SPEECH: Activity = Activity {
        channel: Channel::Dialog,
        interface: "SpeechSynthesizer",
        backgrounded: Backgrounded::Stop,
        gain: 1.0,
    };

    /// The microphone open (and Alexa thinking): the Dialog channel, held
    /// with no sound ([`Speaker::hold`](super::Speaker::hold)).
    pub const LISTENING: Activity = Activity {
        channel: Channel::Dialog,
        interface: "SpeechRecognizer",
        backgrounded: Backgrounded::Stop,
        gain: 1.0,
    };
}

/// One MP3 playing on the [`Speaker`](super::Speaker).
///
/// ```no_run
/// # async fn f(parts: Vec<bytes::Bytes>) -> Result<(), avsd::audio::AudioError> {
/// use avsd::audio::{PlaybackConfig, Player, PlayerEvent};
/// let mut player = Player::start(PlaybackConfig::device("default")).await?;
/// for part in parts {
///     player.push(part); // as the attachment arrives
/// }
/// player.finish();
/// while let Some(event) = player.next_event().await {
///     match event {
///         PlayerEvent::Started => { /* SpeechStarted */ }
///         PlayerEvent::Finished => { /* SpeechFinished */ }
///         PlayerEvent::Stopped | PlayerEvent::Failed(_) => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Player {
    pub(super) input: Option<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    events: mpsc::UnboundedReceiver<PlayerEvent>,
    control: Arc<SourceControl>,
    format: StreamFormat,
    /// Keeps alive the speaker a [`Player::start`] opened for it alone.
    pub(super) own: Option<Arc<()>>,
    /// Its audio focus as the speaker changes it.
    pub(super) focus: Option<tokio::sync::watch::Receiver<super::focus::FocusState>>,
}

impl Player {
    /// Adds the next piece of the MP3. Never blocks.
    pub fn push(&self, data: Bytes) {
        if let Some(tx) = &self.input {
            let _ = tx.send(data);
        }
    }

    /// Marks the end of the MP3: once it is decoded and played, `Finished` follows.
    pub fn finish(&mut self) {
        self.input = None;
    }

    /// The next event; `None` once playback is over.
    /// Cancel-safe: use it in `tokio::select!` next to a stop command.
    pub async fn next_event(&mut self) -> Option<PlayerEvent> {
        self.events.recv().await
    }

    /// Milliseconds of the answer played so far (`offsetInMilliseconds` of
    /// the SpeechSynthesizer context).
    pub fn offset_ms(&self) -> u64 {
        self.control.played_frames() * 1000 / u64::from(self.format.rate)
    }

    /// How often the device wanted audio the decoder had not delivered yet.
    pub fn underruns(&self) -> u64 {
        self.control.underruns()
    }

    /// The format the output device was opened with.
    pub fn output_format(&self) -> StreamFormat {
        self.format
    }

    /// Its audio focus (foreground, background, none) as it changes.
    pub fn focus(&self) -> Option<tokio::sync::watch::Receiver<super::focus::FocusState>> {
        self.focus.clone()
    }

    /// The source's gain and pause switches, for focus changes.
    pub fn control(&self) -> &Arc<SourceControl> {
        &self.control
    }

    /// Stops at once: the next device period goes without it, then
    /// `Stopped` follows. Never blocks.
    pub fn stop(&mut self) {
        self.control.stop();
        self.input = None;
    }
}

impl Player {
    pub(super) fn new(
        events: mpsc::UnboundedReceiver<PlayerEvent>,
        control: Arc<SourceControl>,
        format: StreamFormat,
    ) -> Player {
        Player {
            input: None,
            events,
            control,
            format,
            own: None,
            focus: None,
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop();
    }
}
