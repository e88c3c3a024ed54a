//! Audio for avsd: microphone capture in the format AVS takes, and playback of
//! the MP3 answers AVS sends, through ALSA with cpal.
//!
//! - [`Capture`] opens the configured ALSA capture device, accepts whatever
//!   format it offers and yields 10 ms chunks of 16 kHz, 16-bit little-endian
//!   mono PCM ([`AVS_CHUNK_BYTES`] = 320 bytes), ready for the audio part of a
//!   `SpeechRecognizer.Recognize` event.
//! - [`Speaker`] is the one output: opened once and kept for the daemon's
//!   life, it decodes each MP3 as it arrives (the `Speak` attachment goes
//!   straight to its decoder thread), resamples it to the device and mixes
//!   every sound playing ([`mixer`]) under audio focus ([`focus`]: Alexa's
//!   voice ducks music, an alarm pauses it). Each sound is a [`Player`],
//!   which reports [`PlayerEvent::Started`] / [`PlayerEvent::Finished`] for
//!   the `SpeechStarted` / `SpeechFinished` events and [`Player::offset_ms`]
//!   for the SpeechSynthesizer context. [`Player::start`] opens an output
//!   for one MP3 alone.
//!
//! Threading, the same for both directions: cpal calls back on its own
//! real-time thread. The callbacks only copy samples between the device
//! buffer and a preallocated lock-free ring ([`rtrb`]) and bump atomic
//! counters: they never block, allocate or log. Format conversion, resampling
//! and MP3 decoding run on dedicated `std` threads (never on tokio's async
//! workers), which talk to async code through tokio channels: a bounded one
//! for capture chunks (a slow consumer shows up as counted overruns, not as
//! memory growth), an unbounded one for the few playback events. The
//! playback threads are started once and kept.
//!
//! Devices are ALSA PCM names. Named PCMs from an asound.conf are found only
//! when they carry `hint { show on }`, because cpal looks names up among
//! ALSA's hints; `default` always works.

mod capture;
mod decode;
mod device;
pub mod echo;
pub mod focus;
pub mod media_decode;
pub mod microphone;
pub mod mixer;
mod playback;
pub mod resample;
mod settings;
mod speaker;

pub use capture::{Capture, CaptureConfig};
pub use device::{SampleKind, StreamFormat, choose_capture_format};
pub use microphone::{MicSwitch, Switch};
pub use playback::{Activity, PlaybackConfig, Player, PlayerEvent};
pub use speaker::{FocusHold, PcmSource, Speaker};

/// Sample rate AVS takes for `AUDIO_L16_RATE_16000_CHANNELS_1`, in Hz.
pub const AVS_SAMPLE_RATE: u32 = 16_000;
/// Bytes in one 10 ms chunk of AVS audio: 160 samples of 16-bit mono.
pub const AVS_CHUNK_BYTES: usize = 320;
/// The ALSA device used when the config names none.
pub use avsd_config::audio::DEFAULT_DEVICE;

/// Which way a device is used; named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A microphone (ALSA capture).
    Capture,
    /// A speaker (ALSA playback).
    Playback,
}

impl Direction {
    /// "capture" or "playback", as ALSA says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Capture => "capture",
            Direction::Playback => "playback",
        }
    }

    /// The config key that names the device for this direction.
    pub fn config_key(self) -> &'static str {
        match self {
            Direction::Capture => "audio.capture_device",
            Direction::Playback => "audio.playback_device",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong with audio. Each variant names the device and says what
/// to do about it, so the message can go straight to the log and to D-Bus.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AudioError {
    /// No ALSA device has that name.
    #[error(
        "no ALSA {direction} device named \"{name}\"; available: {}. Set {} in the config to one of these (a PCM defined in asound.conf is listed only with `hint {{ show on }}`)",
        list_or_none(.available),
        .direction.config_key()
    )]
    NoDevice {
        /// The name that was asked for.
        name: String,
        /// Capture or playback.
        direction: Direction,
        /// The device names ALSA lists for this direction.
        available: Vec<String>,
    },
    /// The device offers no format avsd can use.
    #[error(
        "ALSA {direction} device \"{name}\" offers no usable format ({detail}); pick another device in {}",
        .direction.config_key()
    )]
    UnsupportedFormat {
        /// The device.
        name: String,
        /// Capture or playback.
        direction: Direction,
        /// What the device offered or what failed.
        detail: String,
    },
    /// Opening or starting the stream failed.
    #[error(
        "cannot open ALSA {direction} device \"{name}\": {detail}; check that no other program holds it and that avsd's user is in the `audio` group"
    )]
    Open {
        /// The device.
        name: String,
        /// Capture or playback.
        direction: Direction,
        /// ALSA's or cpal's message.
        detail: String,
    },
    /// The device failed or went away while streaming.
    #[error(
        "ALSA {direction} device \"{name}\" failed while streaming: {detail}; check the device is still connected"
    )]
    Device {
        /// The device.
        name: String,
        /// Capture or playback.
        direction: Direction,
        /// ALSA's or cpal's message.
        detail: String,
    },
    /// The MP3 could not be decoded.
    #[error("cannot decode the MP3 answer: {0}")]
    Decode(String),
    /// An audio thread could not be started or died.
    #[error("audio thread failed: {0}")]
    Thread(String),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
