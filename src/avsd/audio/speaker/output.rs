//! The speaker's output: the ALSA stream whose real-time callback runs the
//! mixer, opened for the format the config names or the device offers,
//! and the check that it still plays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cpal::SizedSample;
use cpal::traits::{DeviceTrait, StreamTrait};

use crate::audio::device::{self, SampleKind, StreamFormat};
use crate::audio::mixer::{Mixer, MixerHandle};
use crate::audio::playback::PlaybackConfig;
use crate::audio::resample::AudioSample;
use crate::audio::{AudioError, Direction};

/// ALSA period; see `device::stream_config` for why playback uses 20 ms.
const PERIOD_MS: u32 = 20;
/// A device that asks for no audio this long while something plays is gone,
/// even if ALSA never says so (a write stuck in a driver or a FIFO).
const STALL_AFTER: Duration = Duration::from_secs(5);

/// The open output.
pub(super) struct Output {
    pub(super) stream: cpal::Stream,
    pub(super) mixer: MixerHandle,
    pub(super) format: StreamFormat,
    pub(super) callbacks: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    device_error: Arc<Mutex<Option<cpal::Error>>>,
    seen_callbacks: u64,
    progress_at: Instant,
}

impl Output {
    /// The device's failure, if it failed or stalled while sources play.
    pub(super) fn failure(&mut self, name: &str, busy: bool) -> Option<AudioError> {
        if self.failed.load(Ordering::Acquire) {
            let detail = self
                .device_error
                .lock()
                .ok()
                .and_then(|mut e| e.take())
                .map_or_else(|| "the stream ended".into(), |e| e.to_string());
            return Some(AudioError::Device {
                name: name.to_string(),
                direction: Direction::Playback,
                detail,
            });
        }
        let callbacks = self.callbacks.load(Ordering::Relaxed);
        if callbacks != self.seen_callbacks || !busy {
            self.seen_callbacks = callbacks;
            self.progress_at = Instant::now();
        } else if self.progress_at.elapsed() >= STALL_AFTER {
            return Some(AudioError::Device {
                name: name.to_string(),
                direction: Direction::Playback,
                detail: format!("the device asked for no audio for {STALL_AFTER:?}"),
            });
        }
        None
    }
}

pub(super) fn open(config: &PlaybackConfig) -> Result<Output, AudioError> {
    let name = config.device.as_str();
    let host = device::alsa_host(name, Direction::Playback)?;
    let dev = device::find_device(&host, name, Direction::Playback)?;
    let ranges: Vec<_> = dev
        .supported_output_configs()
        .map_err(|e| open_error(name, e))?
        .collect();
    let format = match config.format {
        Some(f) => f,
        None => device::choose_playback_format(dev.default_output_config().ok(), &ranges)
            .ok_or_else(|| AudioError::UnsupportedFormat {
                name: name.to_string(),
                direction: Direction::Playback,
                detail: "no i16, i32 or f32 format".into(),
            })?,
    };
    let stream_config = device::stream_config(
        format,
        device::buffer_range(&ranges, format).as_ref(),
        PERIOD_MS,
    );
    let period_frames = format!("{:?}", stream_config.buffer_size);
    let output = match format.sample {
        SampleKind::I16 => build::<i16>(name, &dev, format, stream_config, config),
        SampleKind::I32 => build::<i32>(name, &dev, format, stream_config, config),
        SampleKind::F32 => build::<f32>(name, &dev, format, stream_config, config),
    }?;
    tracing::info!(device = name, format = %format, period_frames, "playback started");
    Ok(output)
}

fn build<T: SizedSample + AudioSample>(
    name: &str,
    dev: &cpal::Device,
    format: StreamFormat,
    config: cpal::StreamConfig,
    playback: &PlaybackConfig,
) -> Result<Output, AudioError> {
    let channels = usize::from(format.channels);
    let (mut mixer, handle) = Mixer::new(format.rate);
    mixer.set_master(playback.master.clone());
    let callbacks = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let device_error = Arc::new(Mutex::new(None));
    let xruns = Arc::new(AtomicU64::new(0));
    let cb_count = callbacks.clone();
    let tap = crate::audio::echo::tap();
    tap.opened(format.rate);
    // The real-time callback: the mixer only copies, sums and counts.
    let data_cb = move |out: &mut [T], _: &cpal::OutputCallbackInfo| {
        cb_count.fetch_add(1, Ordering::Relaxed);
        mixer.mix(out, channels);
        // The far end for echo cancellation (`audio::echo`).
        tap.write(out, channels);
    };
    let (err_failed, err_slot) = (failed.clone(), device_error.clone());
    let owner = thread::current();
    let err_cb = move |e: cpal::Error| {
        device::on_stream_error(e, &xruns, &err_slot, &err_failed, &owner);
    };
    let stream = dev
        .build_output_stream::<T, _, _>(config, data_cb, err_cb, None)
        .map_err(|e| open_error(name, e))?;
    stream.play().map_err(|e| open_error(name, e))?;
    Ok(Output {
        stream,
        mixer: handle,
        format,
        callbacks,
        failed,
        device_error,
        seen_callbacks: 0,
        progress_at: Instant::now(),
    })
}

fn open_error(name: &str, e: cpal::Error) -> AudioError {
    AudioError::Open {
        name: name.to_string(),
        direction: Direction::Playback,
        detail: e.to_string(),
    }
}
