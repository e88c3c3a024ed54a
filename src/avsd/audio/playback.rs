//! Playback of a streamed MP3 answer on an ALSA output device.
//!
//! ```text
//! push(Bytes) ─std mpsc─▶ "avsd-mp3" thread: symphonia ▶ mono f32 ▶ resample ▶
//!     device samples (mono copied to every channel) ─rtrb ring─▶ cpal callback ▶ ALSA
//! "avsd-playback" thread: owns the cpal stream, turns counters into PlayerEvents
//! ```
//!
//! Decoding starts with the first MPEG frame, so sound starts before the
//! attachment has fully arrived.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpal::SizedSample;
use cpal::traits::{DeviceTrait, StreamTrait};
use tokio::sync::{mpsc, oneshot};

use super::decode::decode;
use super::device::{self, SampleKind, StreamFormat};
use super::resample::AudioSample;
use super::{AudioError, DEFAULT_DEVICE, Direction};

/// Device audio the ring holds between decoder and callback. The decoder
/// runs far ahead of real time, so this only has to cover its scheduling gaps.
const RING_MS: u32 = 500;
/// ALSA period; see `device::stream_config` for why playback uses 20 ms.
const PERIOD_MS: u32 = 20;
/// How often the playback thread turns counters into events. Bounds how late
/// `Started` / `Finished` / `Stopped` are reported, not the audio itself.
const MONITOR_TICK: Duration = Duration::from_millis(5);
/// A device that asks for no audio this long is gone, even if ALSA never
/// says so (a write stuck in a driver or a FIFO): ten times the ring.
const STALL_AFTER: Duration = Duration::from_secs(5);

/// Where to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackConfig {
    /// ALSA PCM name (`default`, `hw:0,0`, a name from asound.conf).
    pub device: String,
    /// Open the device with exactly this format instead of its default one.
    pub format: Option<StreamFormat>,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.to_string(),
            format: None,
        }
    }
}

impl PlaybackConfig {
    /// Play on `device` in its default format.
    pub fn device(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            format: None,
        }
    }
}

/// What a [`Player`] reports, in this order: `Started`, then exactly one of
/// `Finished`, `Stopped` or `Failed`. After that the event channel closes
/// ([`Player::next_piece`] returns `None`) once the device is released.
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

/// State shared by the cpal callbacks, the decoder thread, the playback
/// thread and [`Player`]: atomics only on the audio path; the mutexes are
/// locked by the other threads, and only `try_lock`ed from the error callback.
pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    pub(super) failed: AtomicBool,
    pub(super) decoded_all: AtomicBool,
    pub(super) decode_error: Mutex<Option<AudioError>>,
    /// The first fatal device error, moved in as cpal gave it (no allocation
    /// on the audio thread).
    pub(super) device_error: Mutex<Option<cpal::Error>>,
    /// Frames the decoder put into the ring.
    pub(super) decoded_frames: AtomicU64,
    /// Real (not silence) frames the callback handed to ALSA.
    pub(super) played_frames: AtomicU64,
    /// Callback runs, to know when ALSA has taken the last period.
    pub(super) callbacks: AtomicU64,
    pub(super) underruns: AtomicU64,
}

/// Plays one MP3 answer. Create one per `Speak`.
///
/// ```no_run
/// # async fn f(parts: Vec<bytes::Bytes>) -> Result<(), avsd::audio::AudioError> {
/// use avsd::audio::{PlaybackConfig, Player, PlayerEvent};
/// let mut player = Player::start(PlaybackConfig::device("default")).await?;
/// for part in parts {
///     player.push(part); // as the attachment arrives
/// }
/// player.finish();
/// while let Some(event) = player.next_piece().await {
///     match event {
///         PlayerEvent::Started => { /* SpeechStarted */ }
///         PlayerEvent::Finished => { /* SpeechFinished */ }
///         PlayerEvent::Stopped | PlayerEvent::Failed(_) => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Player {
    input: Option<std::sync::mpsc::Sender<Bytes>>,
    events: mpsc::UnboundedReceiver<PlayerEvent>,
    shared: Arc<Shared>,
    format: StreamFormat,
    owner: Thread,
}

impl Player {
    /// Opens the ALSA output device and waits for MP3 bytes. Device errors
    /// ([`AudioError::NoDevice`] and the like) come back here; decode errors
    /// later, as [`PlayerEvent::Failed`].
    pub async fn start(config: PlaybackConfig) -> Result<Player, AudioError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            decoded_all: AtomicBool::new(false),
            decode_error: Mutex::new(None),
            device_error: Mutex::new(None),
            decoded_frames: AtomicU64::new(0),
            played_frames: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
        });
        let (input, input_rx) = std::sync::mpsc::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_shared = shared.clone();
        let handle = thread::Builder::new()
            .name("avsd-playback".into())
            .spawn(move || run(config, thread_shared, input_rx, events_tx, ready_tx))
            .map_err(|e| AudioError::Thread(format!("cannot start the playback thread: {e}")))?;
        let owner = handle.thread().clone();
        match ready_rx.await {
            Ok(Ok(format)) => Ok(Player {
                input: Some(input),
                events,
                shared,
                format,
                owner,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AudioError::Thread("the playback thread died".into())),
        }
    }

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

    /// The next event; `None` once playback is over and the device closed.
    /// Cancel-safe: use it in `tokio::select!` next to a stop command.
    pub async fn next_piece(&mut self) -> Option<PlayerEvent> {
        self.events.recv().await
    }

    /// Milliseconds of the answer played so far (`offsetInMilliseconds` of
    /// the SpeechSynthesizer context).
    pub fn offset_ms(&self) -> u64 {
        self.shared.played_frames.load(Ordering::Relaxed) * 1000 / u64::from(self.format.rate)
    }

    /// How often the device wanted audio the decoder had not delivered yet.
    pub fn underruns(&self) -> u64 {
        self.shared.underruns.load(Ordering::Relaxed)
    }

    /// The format the output device was opened with.
    pub fn output_format(&self) -> StreamFormat {
        self.format
    }

    /// Stops at once: the next device period is silence, then `Stopped`
    /// follows and the device is closed. Never blocks.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.input = None;
        self.owner.unpark();
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop();
    }
}

type Ready = oneshot::Sender<Result<StreamFormat, AudioError>>;
type Events = mpsc::UnboundedSender<PlayerEvent>;

fn run(
    config: PlaybackConfig,
    shared: Arc<Shared>,
    input: std::sync::mpsc::Receiver<Bytes>,
    events: Events,
    ready: Ready,
) {
    let name = config.device.clone();
    let opened = (|| {
        let host = device::alsa_host(&name, Direction::Playback)?;
        let dev = device::find_device(&host, &name, Direction::Playback)?;
        let ranges: Vec<_> = dev
            .supported_output_configs()
            .map_err(|e| open_error(&name, e))?
            .collect();
        let format = match config.format {
            Some(f) => f,
            None => device::choose_playback_format(dev.default_output_config().ok(), &ranges)
                .ok_or_else(|| AudioError::UnsupportedFormat {
                    name: name.clone(),
                    direction: Direction::Playback,
                    detail: "no i16, i32 or f32 format".into(),
                })?,
        };
        let stream_config = device::stream_config(
            format,
            device::buffer_range(&ranges, format).as_ref(),
            PERIOD_MS,
        );
        Ok((dev, format, stream_config))
    })();
    let (dev, format, stream_config) = match opened {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let args = (
        name.as_str(),
        dev,
        format,
        stream_config,
        shared,
        input,
        events,
        ready,
    );
    match format.sample {
        SampleKind::I16 => play::<i16>(args),
        SampleKind::I32 => play::<i32>(args),
        SampleKind::F32 => play::<f32>(args),
    }
}

fn open_error(name: &str, e: cpal::Error) -> AudioError {
    AudioError::Open {
        name: name.to_string(),
        direction: Direction::Playback,
        detail: e.to_string(),
    }
}

type PlayArgs<'a> = (
    &'a str,
    cpal::Device,
    StreamFormat,
    cpal::StreamConfig,
    Arc<Shared>,
    std::sync::mpsc::Receiver<Bytes>,
    Events,
    Ready,
);

fn play<T: SizedSample + AudioSample>(args: PlayArgs<'_>) {
    let (name, dev, format, config, shared, input, events, ready) = args;
    let channels = usize::from(format.channels);
    let capacity = (format.rate * RING_MS / 1000) as usize * channels;
    let (producer, mut consumer) = rtrb::RingBuffer::<T>::new(capacity);
    let owner = thread::current();

    let cb_shared = shared.clone();
    // The real-time callback: copy whole frames out of the ring, pad with
    // silence, count. No locks, no allocation, no logging.
    let data_cb = move |out: &mut [T], _: &cpal::OutputCallbackInfo| {
        cb_shared.callbacks.fetch_add(1, Ordering::Relaxed);
        let mut n = 0;
        if !cb_shared.stop.load(Ordering::Relaxed) {
            n = (consumer.slots() / channels * channels).min(out.len());
            let _ = consumer.pop_partial_slice(&mut out[..n]);
            let before = cb_shared
                .played_frames
                .fetch_add((n / channels) as u64, Ordering::Relaxed);
            if n < out.len() && before > 0 && !cb_shared.decoded_all.load(Ordering::Relaxed) {
                cb_shared.underruns.fetch_add(1, Ordering::Relaxed);
            }
        }
        for s in &mut out[n..] {
            *s = T::default();
        }
    };
    let err_shared = shared.clone();
    let err_owner = owner.clone();
    let err_cb = move |e: cpal::Error| {
        let s = &err_shared;
        device::on_stream_error(e, &s.underruns, &s.device_error, &s.failed, &err_owner);
    };
    let stream = match dev.build_output_stream::<T, _, _>(config, data_cb, err_cb, None) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(open_error(name, e)));
            return;
        }
    };
    // Started now, playing silence until the first frame is decoded (tens of
    // ms). Starting only once audio is ready was tried: a device with a deep
    // buffer (the file plugin behind a FIFO, some USB DACs) then pulls its
    // whole buffer at once and underruns while the decoder warms up.
    if let Err(e) = stream.play() {
        let _ = ready.send(Err(open_error(name, e)));
        return;
    }
    tracing::info!(device = name, format = %format, period_frames = ?config.buffer_size, "playback started");
    let dec_shared = shared.clone();
    let dec_owner = owner.clone();
    let decoder = thread::Builder::new()
        .name("avsd-mp3".into())
        .spawn(move || decode(input, producer, format, dec_shared, dec_owner));
    if let Err(e) = decoder {
        let _ = ready.send(Err(AudioError::Thread(format!(
            "cannot start the MP3 decoder thread: {e}"
        ))));
        return;
    }
    if ready.send(Ok(format)).is_err() {
        shared.stop.store(true, Ordering::Release);
        return;
    }
    let end = monitor(name, &shared, &events);
    // A failure is told at once: closing a stuck device can block until its
    // driver lets go. The event channel still closes only after the device
    // is released, so `None` from next_piece means the file or card has
    // everything.
    if matches!(end, PlayerEvent::Failed(_)) {
        let _ = events.send(end);
        drop(stream);
    } else {
        drop(stream);
        let _ = events.send(end);
    }
    tracing::debug!(device = name, "playback closed");
}

/// Turns the counters into events until playback ends; returns the last event.
fn monitor(name: &str, shared: &Shared, events: &Events) -> PlayerEvent {
    let mut started = false;
    let mut drained_at: Option<u64> = None;
    let mut seen_callbacks = shared.callbacks.load(Ordering::Relaxed);
    let mut progress_at = Instant::now();
    loop {
        if !started && shared.played_frames.load(Ordering::Relaxed) > 0 {
            started = true;
            let _ = events.send(PlayerEvent::Started);
        }
        if shared.stop.load(Ordering::Acquire) {
            return PlayerEvent::Stopped;
        }
        if shared.failed.load(Ordering::Acquire) {
            let detail = shared
                .device_error
                .lock()
                .ok()
                .and_then(|mut e| e.take())
                .map_or_else(|| "the stream ended".into(), |e| e.to_string());
            return PlayerEvent::Failed(AudioError::Device {
                name: name.to_string(),
                direction: Direction::Playback,
                detail,
            });
        }
        if let Some(e) = shared.decode_error.lock().ok().and_then(|mut e| e.take()) {
            return PlayerEvent::Failed(e);
        }
        let callbacks = shared.callbacks.load(Ordering::Relaxed);
        if callbacks != seen_callbacks {
            seen_callbacks = callbacks;
            progress_at = Instant::now();
        } else if progress_at.elapsed() >= STALL_AFTER {
            return PlayerEvent::Failed(AudioError::Device {
                name: name.to_string(),
                direction: Direction::Playback,
                detail: format!("the device asked for no audio for {STALL_AFTER:?}"),
            });
        }
        if shared.decoded_all.load(Ordering::Acquire)
            && shared.played_frames.load(Ordering::Relaxed)
                >= shared.decoded_frames.load(Ordering::Relaxed)
        {
            // The callback handed over the last sample; ALSA still holds up
            // to one buffer (two periods). Finished after those have gone.
            let now = shared.callbacks.load(Ordering::Relaxed);
            match drained_at {
                None => drained_at = Some(now),
                Some(at) if now >= at + 2 => {
                    if !started {
                        let _ = events.send(PlayerEvent::Started);
                    }
                    return PlayerEvent::Finished;
                }
                Some(_) => {}
            }
        }
        thread::park_timeout(MONITOR_TICK);
    }
}
