//! Microphone capture: any ALSA capture format in, AVS chunks out.
//!
//! ```text
//! ALSA ─cpal callback─▶ rtrb ring (device samples) ─"avsd-capture" thread─▶
//!     downmix ▶ resample to 16 kHz ▶ i16 LE ▶ 320-byte chunks ─tokio mpsc─▶ next_chunk()
//! ```
//!
//! The `avsd-capture` thread is started with the first capture and kept for
//! the process's life: each [`Capture`] is one job for it (open the device,
//! convert until stopped, close the device), so dialogs do not start
//! threads, and glibc does not hand each new thread a malloc arena of its
//! own. The device itself is open only while a capture runs: no stale audio
//! waits in it between dialogs, and the microphone is really off then.
//! (cpal runs each open stream on a thread of its own, ended when the
//! stream closes; that one cannot outlive the device.)
//!
//! Latency: ALSA hands over a 10 ms period (the fixed buffer avsd asks for)
//! once it is full. A 16 kHz device's period then leaves as a chunk at once;
//! with resampling the FFT resampler adds its 5 ms filter delay, so the first
//! chunk waits for a second period, and later chunks leave 5 ms after their
//! period. Measured through ALSA's file plugin (tests/audio.rs): under 1 ms
//! from a complete period to its chunk at 16 kHz, 11 to 15 ms at 48 kHz.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cpal::SizedSample;
use cpal::traits::{DeviceTrait, StreamTrait};
use tokio::sync::{mpsc, oneshot};

use super::device::{self, SampleKind, StreamFormat};
use super::echo::{self, EchoCanceller};
use super::resample::{AudioSample, MonoResampler, downmix_into};
use super::{AVS_CHUNK_BYTES, AVS_SAMPLE_RATE, AudioError, DEFAULT_DEVICE, Direction};

/// How much device audio the ring holds: enough to ride out a busy converter
/// thread (a slow SD card, a burst of TLS work) without losing samples.
const RING_SECONDS: u32 = 1;
/// Chunks queued for the async side before the converter waits (1 s).
const CHANNEL_CHUNKS: usize = 100;
/// ALSA period: one AVS chunk, so a chunk can leave as soon as it is captured.
const PERIOD_MS: u32 = 10;
/// How long opening may take, including the wait for the previous capture
/// to close on the shared thread. Opening takes milliseconds; this only
/// keeps a hung driver from hanging the dialog with it.
const OPEN_LIMIT: Duration = Duration::from_secs(10);

/// Where and how to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// ALSA PCM name (`default`, `hw:1,0`, `plughw:CARD=Mic`, a name from asound.conf).
    pub device: String,
    /// Open the device with exactly this format instead of choosing one with
    /// [`choose_capture_format`](super::choose_capture_format). For devices
    /// that misreport what they take, and for tests: ALSA's `file` plugin
    /// accepts any format, so the test picks the one its raw file holds.
    pub format: Option<StreamFormat>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.to_string(),
            format: None,
        }
    }
}

impl CaptureConfig {
    /// Capture from `device` in the format chosen automatically.
    pub fn device(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            format: None,
        }
    }
}

/// State shared by the cpal callbacks, the converter thread and [`Capture`].
struct Shared {
    stop: AtomicBool,
    failed: AtomicBool,
    overruns: AtomicU64,
    /// Device frames captured, and when the last callback brought them
    /// (`echo::now_ns`): when each microphone sample was heard, for
    /// pairing it with what the speaker played then.
    captured: AtomicU64,
    captured_at: AtomicU64,
    /// The first fatal error, kept as cpal gave it: moving it in does not
    /// allocate on the audio thread, formatting it later does.
    error: Mutex<Option<cpal::Error>>,
}

/// One capture for the worker thread: open, convert until stopped, close.
struct Job {
    config: CaptureConfig,
    shared: Arc<Shared>,
    tx: Chunks,
    ready: Ready,
    /// Sent once the device is closed again.
    closed: oneshot::Sender<()>,
}

/// The capture worker: its job queue and its thread (which the cpal
/// callback and a stop wake). `None` until the first capture, and again
/// if the thread ever died (a panic), so the next capture starts a new one.
static WORKER: Mutex<Option<(std::sync::mpsc::Sender<Job>, Thread)>> = Mutex::new(None);

/// Hands `job` to the worker thread, starting it if there is none; returns
/// the thread, to wake it.
fn submit(job: Job) -> Result<Thread, AudioError> {
    let mut worker = WORKER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let job = match worker.as_ref() {
        Some((jobs, thread)) => match jobs.send(job) {
            Ok(()) => return Ok(thread.clone()),
            // The thread is gone (it panicked); start another below.
            Err(std::sync::mpsc::SendError(job)) => job,
        },
        None => job,
    };
    // Unbounded, yet never long: a dialog runs one capture at a time and
    // waits for it to be ready before it can start another.
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    let handle = thread::Builder::new()
        .name("avsd-capture".into())
        .spawn(move || {
            // Kept from one capture to the next: the room stays the same.
            let mut echo = EchoCanceller::new();
            for job in queue {
                run(job.config, job.shared, job.tx, job.ready, &mut echo);
                // Sent after the cpal stream is gone: the device is free again.
                let _ = job.closed.send(());
            }
        })
        .map_err(|e| AudioError::Thread(format!("cannot start the capture thread: {e}")))?;
    let thread = handle.thread().clone();
    jobs.send(job)
        .map_err(|_| AudioError::Thread("the capture thread died at its start".into()))?;
    *worker = Some((jobs, thread.clone()));
    Ok(thread)
}

/// A running capture. Dropping it (or [`stop`](Self::stop)) closes the device.
///
/// ```no_run
/// # async fn f() -> Result<(), avsd::audio::AudioError> {
/// use avsd::audio::{Capture, CaptureConfig};
/// let mut mic = Capture::start(CaptureConfig::device("default")).await?;
/// while let Some(chunk) = mic.next_chunk().await {
///     let pcm = chunk?; // 320 bytes: 10 ms of 16 kHz s16le mono
///     # let _ = pcm; break;
/// }
/// mic.stop();
/// # Ok(()) }
/// ```
pub struct Capture {
    chunks: mpsc::Receiver<Result<Bytes, AudioError>>,
    shared: Arc<Shared>,
    format: StreamFormat,
    thread: Thread,
    closed: Option<oneshot::Receiver<()>>,
}

impl Capture {
    /// Opens the ALSA capture device and starts streaming.
    ///
    /// The device work (enumeration, opening, ALSA's blocking calls) happens
    /// on the `avsd-capture` thread, kept from one capture to the next; this
    /// only awaits its answer.
    /// A device that does not exist gives [`AudioError::NoDevice`] listing
    /// the devices that do.
    pub async fn start(config: CaptureConfig) -> Result<Capture, AudioError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            overruns: AtomicU64::new(0),
            captured: AtomicU64::new(0),
            captured_at: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        let (tx, chunks) = mpsc::channel(CHANNEL_CHUNKS);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (closed_tx, closed) = oneshot::channel();
        let name = config.device.clone();
        let thread = submit(Job {
            config,
            shared: shared.clone(),
            tx,
            ready: ready_tx,
            closed: closed_tx,
        })?;
        let Ok(ready) = tokio::time::timeout(OPEN_LIMIT, ready_rx).await else {
            // The job may still run once the thread is free: it then finds
            // nobody waiting and closes the device at once.
            shared.stop.store(true, Ordering::Release);
            return Err(AudioError::Open {
                name,
                direction: Direction::Capture,
                detail: format!(
                    "not open after {OPEN_LIMIT:?}: the device, or closing the previous \
                     capture, hangs in its driver"
                ),
            });
        };
        match ready {
            Ok(Ok(format)) => Ok(Capture {
                chunks,
                shared,
                format,
                thread,
                closed: Some(closed),
            }),
            // The worker holds no device and waits for the next job.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AudioError::Thread("the capture thread died".into())),
        }
    }

    /// The next 320-byte chunk (10 ms of 16 kHz s16le mono), an error when the
    /// device failed or went away (after the audio captured before it), and
    /// `None` after that error or once stopped. Cancel-safe: use it in
    /// `tokio::select!` next to a stop command or a timeout.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, AudioError>> {
        self.chunks.recv().await
    }

    /// How many times the device or the ring lost samples because the
    /// consumer fell behind (ALSA xruns included).
    pub fn overruns(&self) -> u64 {
        self.shared.overruns.load(Ordering::Relaxed)
    }

    /// The format the device was opened with.
    pub fn device_format(&self) -> StreamFormat {
        self.format
    }

    /// Stops capturing at once. The capture thread closes the device shortly
    /// after (within a period or so); this never blocks. Use
    /// [`close`](Self::close) to wait until the device is free again.
    pub fn stop(self) {
        drop(self);
    }

    /// Stops capturing and waits until the ALSA device is closed, so that it
    /// can be opened again at once (a `hw:` device is exclusive: reopening it
    /// for `ExpectSpeech` right after `StopCapture` would otherwise race).
    pub async fn close(mut self) {
        self.signal_stop();
        if let Some(closed) = self.closed.take() {
            let _ = closed.await;
        }
    }

    fn signal_stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Unblocks the converter if it waits for room in the channel.
        self.chunks.close();
        self.thread.unpark();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Not waited for: closing an ALSA device can take a period or more
        // and this may run on an async worker. The worker closes it and
        // moves on to the next job on its own.
        self.signal_stop();
    }
}

type Ready = oneshot::Sender<Result<StreamFormat, AudioError>>;
type Chunks = mpsc::Sender<Result<Bytes, AudioError>>;

/// One capture on the worker thread: open the device, then convert until
/// told to stop.
fn run(
    config: CaptureConfig,
    shared: Arc<Shared>,
    tx: Chunks,
    ready: Ready,
    echo: &mut EchoCanceller,
) {
    let name = config.device.clone();
    let opened = (|| {
        let host = device::alsa_host(&name, Direction::Capture)?;
        let dev = device::find_device(&host, &name, Direction::Capture)?;
        let ranges: Vec<_> = match dev.supported_input_configs() {
            Ok(r) => r.collect(),
            Err(e) => return Err(open_error(&name, e)),
        };
        let format = match config.format {
            Some(f) => f,
            None => device::choose_capture_format(&ranges).ok_or_else(|| {
                AudioError::UnsupportedFormat {
                    name: name.clone(),
                    direction: Direction::Capture,
                    detail: format!("offered: {}", describe(&ranges)),
                }
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
    match format.sample {
        SampleKind::I16 => {
            stream::<i16>(&name, dev, format, stream_config, shared, (tx, ready), echo)
        }
        SampleKind::I32 => {
            stream::<i32>(&name, dev, format, stream_config, shared, (tx, ready), echo)
        }
        SampleKind::F32 => {
            stream::<f32>(&name, dev, format, stream_config, shared, (tx, ready), echo)
        }
    }
}

fn describe(ranges: &[cpal::SupportedStreamConfigRange]) -> String {
    if ranges.is_empty() {
        return "nothing".into();
    }
    let mut seen: Vec<String> = ranges
        .iter()
        .map(|r| format!("{:?}", r.sample_format()))
        .collect();
    seen.dedup();
    seen.join("/")
}

fn open_error(name: &str, e: cpal::Error) -> AudioError {
    AudioError::Open {
        name: name.to_string(),
        direction: Direction::Capture,
        detail: e.to_string(),
    }
}

fn stream<T: SizedSample + AudioSample>(
    name: &str,
    dev: cpal::Device,
    format: StreamFormat,
    config: cpal::StreamConfig,
    shared: Arc<Shared>,
    (tx, ready): (Chunks, Ready),
    echo: &mut EchoCanceller,
) {
    // Starts the shared clock here, not in the callback.
    let _ = echo::now_ns();
    let channels = usize::from(format.channels);
    // A whole number of frames, so the ring never splits a frame across its
    // wrap point and a partial write can never shift the channel order.
    let capacity = (format.rate * RING_SECONDS) as usize * channels;
    let (mut producer, consumer) = rtrb::RingBuffer::<T>::new(capacity);
    let converter: Thread = thread::current();

    let cb_shared = shared.clone();
    let cb_converter = converter.clone();
    // The real-time callback: copy, count, wake. No locks, no allocation, no logging.
    let data_cb = move |data: &[T], _: &cpal::InputCallbackInfo| {
        let room = producer.slots() / channels * channels;
        let n = room.min(data.len());
        let _ = producer.push_partial_slice(&data[..n]);
        if n < data.len() {
            cb_shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        cb_shared
            .captured_at
            .store(echo::now_ns(), Ordering::Relaxed);
        cb_shared
            .captured
            .fetch_add((data.len() / channels) as u64, Ordering::Release);
        // unpark is a futex wake: it never blocks.
        cb_converter.unpark();
    };
    let err_shared = shared.clone();
    let err_converter = converter.clone();
    let err_cb = move |e: cpal::Error| {
        let s = &err_shared;
        device::on_stream_error(e, &s.overruns, &s.error, &s.failed, &err_converter);
    };

    let stream = match dev.build_input_stream::<T, _, _>(config, data_cb, err_cb, None) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(open_error(name, e)));
            return;
        }
    };
    if let Err(e) = stream.play() {
        let _ = ready.send(Err(open_error(name, e)));
        return;
    }
    let resampler = match MonoResampler::new(format.rate, AVS_SAMPLE_RATE) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(AudioError::UnsupportedFormat {
                name: name.to_string(),
                direction: Direction::Capture,
                detail: e,
            }));
            return;
        }
    };
    tracing::info!(
        device = name,
        format = %format,
        period_frames = ?config.buffer_size,
        resampler_delay_frames = resampler.delay_frames(),
        "capture started"
    );
    if ready.send(Ok(format)).is_err() {
        return;
    }
    echo.restart();
    let rate = format.rate;
    convert(
        name,
        consumer,
        channels,
        resampler,
        &shared,
        &tx,
        (echo, rate),
    );
    // Dropping the stream joins cpal's ALSA thread; done here, off the async side.
    drop(stream);
    tracing::debug!(device = name, "capture closed");
}

/// The microphone in 10 ms blocks, each with its number and when its last
/// sample was heard.
struct Blocks {
    rate: f64,
    filling: [f32; aec::BLOCK],
    len: usize,
    index: i64,
    pending: VecDeque<([f32; aec::BLOCK], i64, u64)>,
}

impl Blocks {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            filling: [0.0; aec::BLOCK],
            len: 0,
            index: 0,
            pending: VecDeque::with_capacity(CHANNEL_CHUNKS),
        }
    }

    fn push(&mut self, sample: f32, shared: &Shared) {
        self.filling[self.len] = sample;
        self.len += 1;
        if self.len < aec::BLOCK {
            return;
        }
        self.len = 0;
        // The block's last sample as a device frame, and the time the
        // callback that brought the newest frame ran.
        let frame =
            ((self.index + 1) * aec::BLOCK as i64) as f64 * self.rate / f64::from(AVS_SAMPLE_RATE);
        let at = shared.captured_at.load(Ordering::Relaxed);
        let captured = shared.captured.load(Ordering::Acquire) as f64;
        let age_ns = ((captured - frame).max(0.0) / self.rate * 1e9) as u64;
        self.pending
            .push_back((self.filling, self.index, at.saturating_sub(age_ns)));
        self.index += 1;
    }
}

/// Drains the ring into AVS chunks until stopped, failed or unwanted.
fn convert<T: AudioSample>(
    name: &str,
    mut consumer: rtrb::Consumer<T>,
    channels: usize,
    mut resampler: MonoResampler,
    shared: &Shared,
    tx: &Chunks,
    (echo, rate): (&mut EchoCanceller, u32),
) {
    let mut block = Blocks::new(rate);
    let mut device_samples: Vec<T> = vec![T::default(); consumer.buffer().capacity()];
    let mut mono = Vec::new();
    let mut resampled = Vec::new();
    let mut chunk = BytesMut::with_capacity(AVS_CHUNK_BYTES);
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        // Read `failed` before draining: the audio captured before the failure
        // is still delivered, and then the error, even if a broken device
        // keeps calling back with data.
        let failed = shared.failed.load(Ordering::Acquire);
        let frames = consumer.slots() / channels;
        if frames > 0 {
            let n = frames * channels;
            let (got, _) = consumer.pop_partial_slice(&mut device_samples[..n]);
            mono.clear();
            downmix_into(got, channels, &mut mono);
            resampled.clear();
            if let Err(e) = resampler.process(&mono, &mut resampled) {
                let _ = tx.blocking_send(Err(AudioError::Thread(e)));
                return;
            }
            for s in &resampled {
                block.push(*s, shared);
            }
        }
        // Out once the far end of their moment is known (at once when
        // nothing plays), echo removed.
        while let Some((samples, index, at)) = block.pending.front_mut() {
            if !echo.process(samples, *index, *at) {
                break;
            }
            for s in samples.iter() {
                chunk.put_i16_le(i16::from_f32(*s));
            }
            block.pending.pop_front();
            let full = chunk.split().freeze();
            if tx.blocking_send(Ok(full)).is_err() {
                return; // Capture dropped.
            }
            chunk.reserve(AVS_CHUNK_BYTES);
        }
        if failed {
            let detail = shared
                .error
                .lock()
                .ok()
                .and_then(|mut e| e.take())
                .map_or_else(|| "the stream ended".into(), |e| e.to_string());
            tracing::warn!(device = name, %detail, "capture device failed");
            let _ = tx.blocking_send(Err(AudioError::Device {
                name: name.to_string(),
                direction: Direction::Capture,
                detail,
            }));
            return;
        }
        if frames == 0 || !block.pending.is_empty() {
            // Woken by the callback each period; the timeout only bounds how
            // late a stop request is noticed.
            thread::park_timeout(Duration::from_millis(50));
        }
    }
}
