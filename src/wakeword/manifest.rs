//! The microWakeWord model JSON (the "manifest" beside each `.tflite`) and
//! the errors of loading a model: each names the file, what is wrong with
//! it and how to fix it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A model that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("wake-word model {}: {problem}; {fix}", path.display())]
pub struct Error {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
    /// What to do about it.
    pub fix: &'static str,
}

const FIX_MISSING: &str = "install the model (the avsd package puts alexa.json and alexa.tflite in \
    /usr/share/avsd/; in a source tree run scripts/wakeword-model) or point the model path at a \
    microWakeWord .json beside its .tflite";
const FIX_CORRUPT: &str = "the file is damaged or is not a microWakeWord model: reinstall it \
    (scripts/wakeword-model fetches a fresh copy) or point the model path at a microWakeWord .json";
const FIX_UNSUPPORTED: &str = "this engine runs microWakeWord v2 streaming models (alexa, okay_nabu, \
    hey_jarvis, hey_mycroft); use one of those";

/// What the model JSON says.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The wake word as written, e.g. "Alexa".
    pub wake_word: String,
    /// The `.tflite` file.
    pub model: PathBuf,
    /// A detection needs the mean probability above this.
    pub probability_cutoff: f64,
    /// Number of model calls averaged.
    pub sliding_window_size: usize,
    /// Feature step in ms.
    pub feature_step_ms: u32,
}

#[derive(Deserialize)]
struct Json {
    #[serde(rename = "type")]
    kind: String,
    wake_word: String,
    model: String,
    micro: Micro,
}

#[derive(Deserialize)]
struct Micro {
    probability_cutoff: f64,
    sliding_window_size: usize,
    feature_step_size: u32,
}

impl Manifest {
    /// Reads the JSON at `path` (or the JSON beside a `.tflite` at `path`)
    /// and the model bytes it names.
    pub fn load(path: &Path) -> Result<(Manifest, Vec<u8>), Error> {
        let json_path = if path.extension().is_some_and(|e| e == "tflite") {
            path.with_extension("json")
        } else {
            path.to_path_buf()
        };
        let err = |problem: String, fix| Error {
            path: json_path.clone(),
            problem,
            fix,
        };
        let text = std::fs::read_to_string(&json_path)
            .map_err(|e| err(format!("cannot read it: {e}"), FIX_MISSING))?;
        let json: Json = serde_json::from_str(&text)
            .map_err(|e| err(format!("not a microWakeWord model JSON: {e}"), FIX_CORRUPT))?;
        if json.kind != "micro" {
            return Err(err(
                format!("its type is {:?}, not \"micro\"", json.kind),
                FIX_UNSUPPORTED,
            ));
        }
        let m = &json.micro;
        if !(0.0..=1.0).contains(&m.probability_cutoff)
            || m.sliding_window_size == 0
            || m.feature_step_size == 0
        {
            return Err(err(
                "probability_cutoff must be in 0..1, sliding_window_size and feature_step_size above 0".into(),
                FIX_CORRUPT,
            ));
        }
        let model = json_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&json.model);
        let manifest = Manifest {
            wake_word: json.wake_word,
            model,
            probability_cutoff: m.probability_cutoff,
            sliding_window_size: m.sliding_window_size,
            feature_step_ms: m.feature_step_size,
        };
        let bytes = std::fs::read(&manifest.model).map_err(|e| Error {
            path: manifest.model.clone(),
            problem: format!("cannot read it: {e}"),
            fix: FIX_MISSING,
        })?;
        Ok((manifest, bytes))
    }

    pub(crate) fn corrupt(&self, problem: String) -> Error {
        let fix = if problem.contains("not supported") {
            FIX_UNSUPPORTED
        } else {
            FIX_CORRUPT
        };
        Error {
            path: self.model.clone(),
            problem,
            fix,
        }
    }

    pub(crate) fn unsupported(&self, problem: String) -> Error {
        Error {
            path: self.model.clone(),
            problem,
            fix: FIX_UNSUPPORTED,
        }
    }
}
