//! Hands-free listening: while the dialog is idle, the wake word is on and
//! the microphone is not muted, a watcher keeps the microphone open, feeds
//! every 10 ms chunk to the engine (`wakeword` crate) and keeps the last
//! seconds in a pre-roll ring. On a detection it hands the open capture and
//! the ring's audio from 500 ms before the word to the dialog, which streams
//! them as a Recognize with initiator WAKEWORD.
//!
//! The engine runs on the watcher task, not in the audio callback: the
//! callback only fills the capture ring (`audio::capture`), and the engine
//! allocates nothing per chunk (about 35 µs of CPU per 10 ms chunk here).

pub mod span;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::audio::{AudioError, Capture, CaptureConfig, Switch};
use avsd_config::WakeWordConfig;
use span::CHUNK_SAMPLES;

/// Audio kept before a detection: the longest word, the engine's late
/// report and the 500 ms AVS wants before the word, with room to spare.
const RING_CHUNKS: usize = 250;
/// Audio streamed before the word's start: 500 ms, as Amazon asks.
pub const PREROLL_CHUNKS: usize = 50;
/// The file in the state directory that keeps `WakeWord.Enabled` as the
/// user last set it (over D-Bus or avsctl).
pub const WAKEWORD_FILE: &str = "wakeword.json";
/// Detections queued for the D-Bus signal.
const DETECTED_QUEUE: usize = 8;

/// A loaded engine, with how many samples it has been fed (it is never
/// reset, so its counts run across watches).
pub struct Engine {
    word: wakeword::WakeWord,
    fed: u64,
}

/// What a detection reports (the D-Bus `Detected` signal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detected {
    /// The word's first sample in the streamed audio.
    pub start: u64,
    /// The sample just past the word in the streamed audio.
    pub end: u64,
    /// The engine's averaged probability (0..1).
    pub score: f64,
}

/// Everything about the wake word the dialog and D-Bus share.
#[derive(Clone)]
pub struct Wake {
    /// The engine, or why it could not be loaded (file, what, fix).
    pub engine: Result<Arc<Mutex<Engine>>, String>,
    /// `WakeWord.Enabled`: as the user last set it, saved in
    /// [`WAKEWORD_FILE`]; `wakeword.enabled` until then, or once avsd.toml
    /// changes that key.
    pub enabled: Switch,
    /// The configured model path.
    pub model: PathBuf,
    /// The Recognize profile.
    pub profile: String,
    /// Detections, for the D-Bus signal.
    pub detected: broadcast::Sender<Detected>,
}

impl Wake {
    /// Load the configured model and the saved switch from `state_dir`. A
    /// model that cannot be loaded is logged (when the wake word is on) and
    /// kept as its error: Tap still works.
    pub fn from_config(config: &WakeWordConfig, state_dir: &std::path::Path) -> Self {
        // Off when the saved switch cannot be read: listening is the side
        // that must not be turned on by a broken file.
        let enabled =
            Switch::load_over_config(state_dir, "wake word", WAKEWORD_FILE, config.enabled, false);
        let engine = match wakeword::WakeWord::open(&config.model) {
            Ok(word) => {
                tracing::info!(
                    "wake-word model {} loaded ({})",
                    config.model.display(),
                    word.manifest().wake_word
                );
                // A second engine for what avsd itself plays.
                if let Ok(far) = wakeword::WakeWord::open(&config.model) {
                    crate::audio::echo::listen_to_far_end(far);
                }
                Ok(Arc::new(Mutex::new(Engine { word, fed: 0 })))
            }
            Err(e) => {
                let msg = format!("{e} (wakeword.model in avsd.toml); Tap still works");
                if enabled.is_on() {
                    tracing::error!("the wake word is off: {msg}");
                }
                Err(msg)
            }
        };
        Self {
            engine,
            enabled,
            model: config.model.clone(),
            profile: config.profile.clone(),
            detected: broadcast::channel(DETECTED_QUEUE).0,
        }
    }
}

/// A detection: the open microphone and the audio to stream first.
pub struct Woken {
    /// The capture, still open: the Recognize goes on from it.
    pub capture: Capture,
    /// From 500 ms before the word up to now.
    pub preroll: Vec<Bytes>,
    /// Where the word lies in `preroll`, and the score.
    pub detected: Detected,
}

/// How a watch ended.
pub enum WatchEnd {
    /// The wake word was heard.
    Woken(Woken),
    /// The wake word was heard and its [`Woken`] left in the dialog's
    /// slot (see `dialog::actor::woken`).
    Heard,
    /// Told to stop (the device is closed).
    Stopped,
    /// The microphone could not be opened or failed.
    Device(AudioError),
}

/// Watch the microphone for the wake word until `stop` or a detection.
pub async fn watch(
    config: CaptureConfig,
    engine: Arc<Mutex<Engine>>,
    loud_rms: f64,
    stop: CancellationToken,
) -> WatchEnd {
    let mut capture = tokio::select! {
        _ = stop.cancelled() => return WatchEnd::Stopped,
        c = Capture::start(config) => match c {
            Ok(c) => c,
            Err(e) => return WatchEnd::Device(e),
        },
    };
    tracing::info!("listening for the wake word");
    let mut ring: VecDeque<(Bytes, bool)> = VecDeque::with_capacity(RING_CHUNKS);
    // This watch's chunk count at the ring's front, and the engine's count
    // at this watch's start.
    let mut ring_first: u64 = 0;
    let base = lock(&engine).fed;
    let mut samples = [0i16; CHUNK_SAMPLES as usize];
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.cancelled() => return WatchEnd::Stopped,
            c = capture.next_chunk() => c,
        };
        let chunk = match chunk {
            Some(Ok(c)) => c,
            Some(Err(e)) => return WatchEnd::Device(e),
            None => {
                return WatchEnd::Device(AudioError::Thread(
                    "the capture thread ended without an error".into(),
                ));
            }
        };
        let mut hit = None;
        let mut sum = 0f64;
        let mut count = 0usize;
        {
            let mut e = lock(&engine);
            for piece in chunk.chunks(samples.len() * 2) {
                let n = piece.len() / 2;
                for (s, b) in samples.iter_mut().zip(piece.chunks_exact(2)) {
                    *s = i16::from_le_bytes([b[0], b[1]]);
                    sum += f64::from(*s) * f64::from(*s);
                }
                count += n;
                e.word.process(&samples[..n], |ev| {
                    if let wakeword::Event::Detected(d) = ev {
                        hit = Some(d);
                    }
                });
                e.fed += n as u64;
            }
        }
        let loud = count > 0 && (sum / count as f64).sqrt() >= loud_rms;
        if ring.len() == RING_CHUNKS {
            ring.pop_front();
            ring_first += 1;
        }
        ring.push_back((chunk, loud));
        if hit.is_some() && crate::audio::echo::own_wake_word() {
            tracing::info!(
                "heard the wake word just after avsd itself said it: its echo, not a user; \
                 going on listening"
            );
            hit = None;
        }
        if let Some(d) = hit {
            let rel_end = d.end_sample.saturating_sub(base);
            let fired = (rel_end.saturating_sub(1) / CHUNK_SAMPLES).saturating_sub(ring_first);
            let flags: Vec<bool> = ring.iter().map(|(_, l)| *l).collect();
            let (start, end) = span::word_chunks(&flags, fired as usize);
            let first = start.saturating_sub(PREROLL_CHUNKS);
            let detected = Detected {
                start: (start - first) as u64 * CHUNK_SAMPLES,
                end: (end + 1 - first) as u64 * CHUNK_SAMPLES,
                score: d.score,
            };
            let preroll = ring.drain(first..).map(|(c, _)| c).collect();
            return WatchEnd::Woken(Woken {
                capture,
                preroll,
                detected,
            });
        }
    }
}

fn lock(engine: &Mutex<Engine>) -> std::sync::MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for WatchEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Woken(w) => write!(f, "Woken({:?})", w.detected),
            Self::Stopped => write!(f, "Stopped"),
            Self::Heard => write!(f, "Heard"),
            Self::Device(e) => write!(f, "Device({e})"),
        }
    }
}
