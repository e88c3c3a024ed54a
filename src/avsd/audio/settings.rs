//! How the `[audio]` section of the config becomes the devices and formats
//! capture and playback open. The config crate knows no audio library;
//! this is where its plain values meet cpal's world.

use avsd_config::AudioConfig;

use super::{CaptureConfig, PlaybackConfig};

impl CaptureConfig {
    /// How to open the microphone, from `[audio]`.
    pub fn from_config(audio: &AudioConfig) -> Self {
        Self {
            device: audio.capture_device.clone(),
            format: audio.capture_stream_format(),
        }
    }
}

impl PlaybackConfig {
    /// How to open the speaker, from `[audio]`.
    pub fn from_config(audio: &AudioConfig) -> Self {
        Self {
            device: audio.playback_device.clone(),
            format: audio.playback_stream_format(),
            master: Default::default(),
        }
    }
}
