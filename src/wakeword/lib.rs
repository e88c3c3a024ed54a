//! The wake-word engine of avsd: runs a microWakeWord model ("alexa",
//! "okay_nabu", …: a `.tflite` file and its JSON) over 16 kHz mono audio, in
//! Rust, with no Python or C++ at run time.
//!
//! [`WakeWord::process`] takes samples in chunks of any size (a capture
//! thread's periods) and allocates nothing per chunk. Every 10 ms it makes a
//! frame of features ([`frontend`], the TFLite-Micro front end the models
//! were trained on); every few frames it runs the model ([`graph`], a small
//! int8 interpreter with the model's streaming state) and averages the last
//! probabilities as pymicro-wakeword and ESPHome do. A [`Detection`] is
//! reported when that average first rises above the model's cutoff.

mod fft;
mod filterbank;
mod flatbuf;
pub mod frontend;
pub mod graph;
mod manifest;
mod ops;
mod plan;
mod tflite;

use std::path::Path;

pub use frontend::{Frontend, FrontendConfig, SAMPLE_RATE};
pub use graph::Graph;
pub use manifest::{Error, Manifest};

/// What one model call saw: reported with [`Event::Inference`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// Samples fed since start (or [`WakeWord::reset`]) up to the end of the
    /// last frame the model saw: where the word ends, give or take a frame.
    pub end_sample: u64,
    /// The averaged probability that crossed the cutoff (0..1).
    pub score: f64,
}

/// What [`WakeWord::process`] reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A 10 ms frame of features, as the front end's integers.
    Features {
        /// Samples fed up to the end of this frame's window.
        end_sample: u64,
        /// One value per mel channel.
        values: &'a [u16],
    },
    /// A model call.
    Inference {
        /// Samples fed up to the end of the last frame the model saw.
        end_sample: u64,
        /// The model's probability for this call.
        probability: f32,
        /// The mean of the last `sliding_window_size` probabilities, once
        /// there are that many.
        mean: Option<f64>,
    },
    /// The mean rose above the cutoff.
    Detected(Detection),
}

/// A wake-word detector for one model.
pub struct WakeWord {
    manifest: Manifest,
    frontend: Frontend,
    graph: Graph,
    /// Frames per model call and features per frame.
    stride: usize,
    channels: usize,
    pending: usize,
    input_scale: f64,
    input_zero_point: f64,
    recent: Vec<f32>,
    recent_at: usize,
    recent_len: usize,
    samples: u64,
    above: bool,
}

impl WakeWord {
    /// Loads a model from its microWakeWord JSON (or from its `.tflite`
    /// with the JSON beside it under the same name).
    pub fn open(path: &Path) -> Result<WakeWord, Error> {
        let (manifest, bytes) = Manifest::load(path)?;
        let graph = Graph::load(&bytes).map_err(|e| manifest.corrupt(e))?;
        let config = FrontendConfig {
            step_ms: manifest.feature_step_ms,
            ..FrontendConfig::default()
        };
        let shape = graph.input_shape().to_vec();
        let [1, stride, channels] = shape[..] else {
            return Err(manifest.unsupported(format!(
                "its input has shape {shape:?}, not [1, frames, features]"
            )));
        };
        if channels != config.channels || stride == 0 {
            return Err(manifest.unsupported(format!(
                "it takes {channels} features per frame; the front end makes {}",
                config.channels
            )));
        }
        let (scale, zp) = graph.input_quant();
        Ok(WakeWord {
            frontend: Frontend::new(&config),
            graph,
            stride,
            channels,
            pending: 0,
            input_scale: scale as f64,
            input_zero_point: zp as f64,
            recent: vec![0.0; manifest.sliding_window_size],
            recent_at: 0,
            recent_len: 0,
            samples: 0,
            above: false,
            manifest,
        })
    }

    /// The model's description (wake word, cutoff, window).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model's interpreter (to look at its tensors).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Forgets all audio and state, as just after [`WakeWord::open`];
    /// sample counting starts again at 0.
    pub fn reset(&mut self) {
        self.frontend.reset();
        self.graph.reset();
        self.pending = 0;
        self.recent_len = 0;
        self.recent_at = 0;
        self.samples = 0;
        self.above = false;
    }

    /// Feeds 16 kHz mono samples; `on` hears every frame, model call and
    /// detection they complete. Allocates nothing.
    pub fn process(&mut self, samples: &[i16], mut on: impl FnMut(Event<'_>)) {
        let mut rest = samples;
        while !rest.is_empty() {
            let (took, frame) = self.frontend.push(rest);
            rest = &rest[took..];
            self.samples += took as u64;
            let Some(values) = frame else { continue };
            on(Event::Features {
                end_sample: self.samples,
                values,
            });
            let input =
                &mut self.graph.input_mut()[self.pending * self.channels..][..self.channels];
            for (q, &v) in input.iter_mut().zip(values) {
                // pymicro-wakeword's float path: the value as the front end's
                // float feature, divided by the input scale, rounded half to
                // even. Out-of-range values saturate, as ESPHome does.
                let f = v as f64 * 0.0390625;
                *q = (f / self.input_scale + self.input_zero_point)
                    .round_ties_even()
                    .clamp(-128.0, 127.0) as i8;
            }
            self.pending += 1;
            if self.pending < self.stride {
                continue;
            }
            self.pending = 0;
            let probability = self.graph.invoke();
            let window = self.recent.len();
            self.recent[self.recent_at] = probability;
            self.recent_at = (self.recent_at + 1) % window;
            self.recent_len = (self.recent_len + 1).min(window);
            let mean = (self.recent_len == window)
                .then(|| self.recent.iter().map(|&p| p as f64).sum::<f64>() / window as f64);
            on(Event::Inference {
                end_sample: self.samples,
                probability,
                mean,
            });
            let above = mean.is_some_and(|m| m > self.manifest.probability_cutoff);
            if above && !self.above {
                on(Event::Detected(Detection {
                    end_sample: self.samples,
                    score: mean.unwrap_or(0.0),
                }));
            }
            self.above = above;
        }
    }
}
