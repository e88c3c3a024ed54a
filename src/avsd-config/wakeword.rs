//! `[wakeword]`: hands-free listening with a microWakeWord model.

use std::path::PathBuf;

use serde::Deserialize;

use super::Invalid;

/// Where the .deb installs the "alexa" model.
pub const DEFAULT_MODEL: &str = "/usr/share/avsd/alexa.json";

/// `[wakeword]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WakeWordConfig {
    /// Listen for the wake word (the microphone then stays open).
    pub enabled: bool,
    /// The model: its JSON (with the .tflite beside it) or the .tflite.
    pub model: PathBuf,
    /// The Recognize profile for a woken request: NEAR_FIELD or FAR_FIELD.
    pub profile: String,
}

impl Default for WakeWordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: PathBuf::from(DEFAULT_MODEL),
            profile: "NEAR_FIELD".into(),
        }
    }
}

impl WakeWordConfig {
    /// Key checks. A model file that is missing or broken is not one of
    /// them: avsd still starts (Tap works) and says so on D-Bus.
    pub(crate) fn validate(&self, out: &mut Vec<Invalid>) {
        if !self.model.is_absolute() {
            out.push(Invalid::new(
                "wakeword.model",
                format!("`{}` is not an absolute path", self.model.display()),
                format!("give the full path, e.g. \"{DEFAULT_MODEL}\""),
            ));
        }
        if !["NEAR_FIELD", "FAR_FIELD"].contains(&self.profile.as_str()) {
            out.push(Invalid::new(
                "wakeword.profile",
                format!("`{}` is not a wake-word profile", self.profile),
                "use \"NEAR_FIELD\" (within 5 feet of the microphone) or \"FAR_FIELD\"",
            ));
        }
    }
}
