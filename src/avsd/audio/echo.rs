//! The far end for echo cancellation: what the speaker played, as the
//! capture side needs it.
//!
//! ```text
//! output callback ─mono, lock-free─▶ TAP ring (+ frame count, time handed to ALSA)
//!     "avsd-capture" thread: pull ▶ resample to 16 kHz ▶ align by time ▶ aec::EchoCanceller
//! ```
//!
//! The speaker's real-time callback only stores samples into a fixed ring
//! of atomics and two counters: no lock, no allocation, never a wait. The
//! capture thread follows it: it maps each microphone block to the far-end
//! samples handed to ALSA at the same moment (both sides timestamp their
//! callbacks on one monotonic clock), less a small lead, and the adaptive
//! filter finds the rest of the delay (the output buffer, the air, the
//! capture buffer) within its span. The canceller is kept from one capture
//! to the next: the room does not change between two requests.

use std::collections::VecDeque;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::resample::{AudioSample, MonoResampler};

/// Far-end frames the ring holds (about 1.4 s at 48 kHz).
const RING: usize = 1 << 16;
/// Filter partitions of 10 ms: echo paths up to 300 ms, from the output
/// buffer (40 ms), the air and the capture buffer to the room's tail.
const PARTITIONS: usize = 30;
/// A microphone block is paired with the far end of 40 ms before its
/// moment by the clocks: an output callback that comes late makes the
/// clocks read a later far end than the one really heard, and a far end
/// paired too late cannot be cancelled (its echo would come before it).
const BIAS: i64 = 640;
/// A microphone block waits at most this long for its far end (the
/// output hands over a 20 ms period at once, the resampler holds 15 ms).
const MAX_WAIT_NS: u64 = 80_000_000;
/// Far end kept at 16 kHz: the filter's span, the lead and some slack.
const HISTORY: usize = 48_000;
/// The delay estimate: how many blocks of microphone loudness it compares
/// (2 s), how often (1 s), up to what delay (600 ms), where in the filter
/// the main echo is put (60 ms in), and how far off it must be to move.
const ESTIMATE_BLOCKS: usize = 200;
const ESTIMATE_EVERY: u32 = 100;
const MAX_LAG_BLOCKS: i64 = 60;
const TARGET_LAG_BLOCKS: i64 = 6;
const MOVE_BLOCKS: i64 = 5;
/// A speaker silent this long (no callback) is closed: nothing to cancel.
const IDLE_NS: u64 = 200_000_000;
/// Alignment drifting this far (100 ms: a lost period, an output opened
/// again) is taken again from the clocks. Less is left to the filter: the
/// streams are sample-locked once aligned, and the clocks' readings jitter by
/// tens of ms on a loaded machine.
const DRIFT_LIMIT: f64 = 1_600.0;

/// The wake-word engine that listens to the far end itself, when the
/// wake word is on (`wakeword::Wake` sets it).
static FAR_WORD: std::sync::Mutex<Option<wakeword::WakeWord>> = std::sync::Mutex::new(None);
/// Until when (`now_ns`) a detection on the microphone is avsd's own
/// voice: the far end said the word shortly before.
static OWN_WORD_UNTIL: AtomicU64 = AtomicU64::new(0);
/// How long after the far end says the wake word its echo may still wake
/// the microphone's engine (the output buffer, the room, the engine's own
/// late report).
const OWN_WORD_NS: u64 = 2_000_000_000;

/// Has a second engine listen to what avsd plays, so that the wake word
/// in avsd's own output is known and not taken for a user's (a safety net
/// under the canceller, which needs a second or two to learn a room).
pub fn listen_to_far_end(word: wakeword::WakeWord) {
    *FAR_WORD.lock().unwrap_or_else(|p| p.into_inner()) = Some(word);
}

/// Whether avsd itself said the wake word so recently that a detection on
/// the microphone now is its echo.
pub fn own_wake_word() -> bool {
    now_ns() < OWN_WORD_UNTIL.load(Ordering::Relaxed)
}

/// The played samples, written by the output callback.
pub struct Tap {
    ring: Box<[AtomicU32]>,
    /// Frames ever written.
    written: AtomicU64,
    /// When the last callback handed its frames over (ns since `EPOCH`).
    at_ns: AtomicU64,
    rate: AtomicU32,
    /// Counts outputs opened: a follower of an older one starts again.
    stream: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static TAP: LazyLock<Tap> = LazyLock::new(|| Tap {
    ring: (0..RING).map(|_| AtomicU32::new(0)).collect(),
    written: AtomicU64::new(0),
    at_ns: AtomicU64::new(0),
    rate: AtomicU32::new(0),
    stream: AtomicU64::new(0),
});

/// Nanoseconds on the one clock both sides stamp with.
pub fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// The tap. Call it first outside any audio callback (opening the output
/// does), so the ring is made there and not in the callback.
pub fn tap() -> &'static Tap {
    &TAP
}

impl Tap {
    /// Said by the speaker thread when an output opens at `rate`.
    pub fn opened(&self, rate: u32) {
        LazyLock::force(&EPOCH);
        self.rate.store(rate, Ordering::Relaxed);
        self.stream.fetch_add(1, Ordering::Release);
    }

    /// From the output callback: the interleaved samples just handed to
    /// ALSA. Stores, never waits or allocates.
    pub fn write<T: AudioSample>(&self, out: &[T], channels: usize) {
        let channels = channels.max(1);
        let start = self.written.load(Ordering::Relaxed);
        let scale = 1.0 / channels as f32;
        let mut n = 0u64;
        for frame in out.chunks_exact(channels) {
            let mono = frame.iter().map(|s| s.to_f32()).sum::<f32>() * scale;
            self.ring[((start + n) as usize) & (RING - 1)].store(mono.to_bits(), Ordering::Relaxed);
            n += 1;
        }
        self.at_ns.store(now_ns(), Ordering::Relaxed);
        self.written.store(start + n, Ordering::Release);
    }
}

/// The capture thread's side: follows the tap and cancels the echo.
pub struct EchoCanceller {
    aec: aec::EchoCanceller,
    /// The output being followed, its rate and the next frame to pull.
    stream: u64,
    rate: u32,
    next: u64,
    resampler: Option<MonoResampler>,
    /// The device frame the resampler started at.
    first_frame: u64,
    /// The 16 kHz far end, and the index of its first sample.
    history: VecDeque<f32>,
    history_start: i64,
    /// Index of the sample after the last loud one.
    sound_until: i64,
    /// Far-end index = microphone index + offset.
    offset: Option<i64>,
    drift: f64,
    pulled: Vec<f32>,
    resampled: Vec<f32>,
    /// The canceller ran on the last block (not passed through).
    active: bool,
    /// Microphone and residual power over the blocks cancelled since the
    /// last report, and how many.
    report: (f64, f64, u32),
    /// Times the pairing moved for a far end that came late.
    shifts: u32,
    /// Each recent microphone block's loudness and the far-end index it
    /// was paired with; blocks since the last estimate; the last estimate.
    loudness: VecDeque<(f32, i64)>,
    since_estimate: u32,
    last_lag: Option<i64>,
    /// The echo's delay was found in the signals: from then on they, not
    /// the clocks, keep the pairing.
    locked: bool,
}

/// Blocks cancelled between two reports of the echo removed (5 s).
const REPORT_BLOCKS: u32 = 500;

impl Default for EchoCanceller {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoCanceller {
    /// A canceller with nothing learnt yet.
    pub fn new() -> Self {
        Self {
            aec: aec::EchoCanceller::new(PARTITIONS),
            stream: u64::MAX,
            rate: 0,
            next: 0,
            resampler: None,
            first_frame: 0,
            history: VecDeque::with_capacity(HISTORY),
            history_start: 0,
            sound_until: i64::MIN,
            offset: None,
            drift: 0.0,
            pulled: Vec::with_capacity(RING),
            resampled: Vec::with_capacity(RING),
            active: false,
            report: (0.0, 0.0, 0),
            shifts: 0,
            loudness: VecDeque::with_capacity(ESTIMATE_BLOCKS),
            since_estimate: 0,
            last_lag: None,
            locked: false,
        }
    }

    /// A new capture starts: its block numbers start again at 0.
    pub fn restart(&mut self) {
        self.offset = None;
        self.locked = false;
        self.loudness.clear();
        self.active = false;
    }

    /// Cancels the echo from `block` (16 kHz, -1..1), the microphone's
    /// block number `index` of this capture, captured at `at_ns`. False
    /// (and `block` untouched) while the far end of that moment is not
    /// there yet: call again shortly (a block waits at most 80 ms).
    pub fn process(&mut self, block: &mut [f32; aec::BLOCK], index: i64, at_ns: u64) -> bool {
        let tap = tap();
        let now = now_ns();
        self.follow(tap, now);
        let Some(far_start) = self.align(tap, index, at_ns) else {
            self.active = false;
            return true;
        };
        let n = aec::BLOCK as i64;
        let span = self.aec.span() as i64;
        if self.sound_until <= far_start - span {
            // Nothing played within the filter's reach: pass through.
            self.active = false;
            return true;
        }
        let end = self.history_start + self.history.len() as i64;
        if far_start + n > end && now.saturating_sub(at_ns) < MAX_WAIT_NS {
            return false;
        }
        if !self.active {
            self.aec.clear_far();
            self.active = true;
        }
        let mut far = [0.0f32; aec::BLOCK];
        let end = self.history_start + self.history.len() as i64;
        for (i, f) in far.iter_mut().enumerate() {
            let at = far_start + i as i64;
            if at >= self.history_start && at < end {
                *f = self.history[(at - self.history_start) as usize];
            }
        }
        if far_start + n > end {
            // Waited long enough and still not there: the far end really
            // comes later than the clocks said. Pair later blocks with
            // what did come, keeping the filter.
            if let Some(o) = self.offset.as_mut() {
                *o -= far_start + n - end;
                self.shifts += 1;
            }
        } else if far_start < self.history_start {
            self.offset = None;
        }
        let near = *block;
        if self.loudness.len() == ESTIMATE_BLOCKS {
            self.loudness.pop_front();
        }
        let loud = near.iter().map(|v| v * v).sum::<f32>().sqrt();
        self.loudness.push_back((loud, far_start));
        self.since_estimate += 1;
        if self.since_estimate >= ESTIMATE_EVERY && self.loudness.len() == ESTIMATE_BLOCKS {
            self.since_estimate = 0;
            self.estimate_delay();
        }
        self.aec.process(&far, &near, block);
        let power = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        self.report.0 += power(&near);
        self.report.1 += power(&block[..]);
        self.report.2 += 1;
        if self.report.2 == REPORT_BLOCKS {
            let (mic, left, _) = std::mem::take(&mut self.report);
            tracing::debug!(
                "echo canceller: the microphone {:.1} dB weaker after it over the last 5 s \
                 (microphone at {:.1} dBFS; far end {} samples ahead, drifting {:.0}, moved {} times; {:?})",
                10.0 * (mic / left.max(1e-12)).log10(),
                10.0 * (mic / f64::from(REPORT_BLOCKS * aec::BLOCK as u32))
                    .max(1e-12)
                    .log10(),
                self.offset.unwrap_or(0),
                self.drift,
                self.shifts,
                self.aec.stats(),
            );
        }
        true
    }

    /// Finds the echo's delay from the loudness of the microphone and of
    /// the far end (10 ms blocks, normalised correlation), and moves the
    /// pairing when two estimates in a row agree that the main echo lies
    /// away from where the filter wants it: the clocks say only roughly
    /// when a sample was played or heard (buffers, a driver, a FIFO), and
    /// an echo outside the filter's reach cannot be cancelled.
    fn estimate_delay(&mut self) {
        let end = self.history_start + self.history.len() as i64;
        let n = aec::BLOCK as i64;
        let far_loudness = |start: i64| -> Option<f32> {
            if start < self.history_start || start + n > end {
                return None;
            }
            let from = (start - self.history_start) as usize;
            Some(
                self.history
                    .range(from..from + aec::BLOCK)
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt(),
            )
        };
        let mic: Vec<f32> = self.loudness.iter().map(|(l, _)| *l).collect();
        let mean = |x: &[f32]| x.iter().sum::<f32>() / x.len().max(1) as f32;
        let mic_mean = mean(&mic);
        let mut best = (0.0f32, 0i64);
        for lag in 0..=MAX_LAG_BLOCKS {
            let far: Option<Vec<f32>> = self
                .loudness
                .iter()
                .map(|(_, start)| far_loudness(start + n - lag * n))
                .collect();
            let Some(far) = far else { continue };
            let far_mean = mean(&far);
            let (mut dot, mut em, mut ef) = (0.0f32, 0.0f32, 0.0f32);
            for (m, f) in mic.iter().zip(&far) {
                let (m, f) = (m - mic_mean, f - far_mean);
                dot += m * f;
                em += m * m;
                ef += f * f;
            }
            let c = dot / (em * ef).sqrt().max(1e-12);
            if c > best.0 {
                best = (c, lag);
            }
        }
        let (corr, lag) = best;
        if corr < 0.5 {
            self.last_lag = None;
            return;
        }
        let agreed = self.last_lag.is_some_and(|l| (l - lag).abs() <= 1);
        self.last_lag = Some(lag);
        self.locked |= agreed;
        if agreed && (lag - TARGET_LAG_BLOCKS).abs() > MOVE_BLOCKS {
            tracing::debug!(
                lag_ms = lag * 10,
                correlation = corr,
                "echo canceller: the echo comes {} ms after the far end it was paired with; \
                 pairing again",
                lag * 10
            );
            if let Some(o) = self.offset.as_mut() {
                *o -= (lag - TARGET_LAG_BLOCKS) * n;
            }
            self.loudness.clear();
            self.last_lag = None;
            self.aec.reset();
        }
    }

    /// Feeds the far end's new samples to the far-end engine.
    fn far_word(&mut self) {
        if self.resampled.is_empty() {
            return;
        }
        // Never waited for: the engine is only ever set from elsewhere.
        let Ok(mut word) = FAR_WORD.try_lock() else {
            return;
        };
        let Some(word) = word.as_mut() else { return };
        let mut pcm = [0i16; aec::BLOCK];
        let mut heard = false;
        for piece in self.resampled.chunks(aec::BLOCK) {
            for (p, s) in pcm.iter_mut().zip(piece) {
                *p = (s * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
            }
            word.process(&pcm[..piece.len()], |e| {
                heard |= matches!(e, wakeword::Event::Detected(_));
            });
        }
        if heard {
            tracing::debug!("the wake word is in avsd's own output: its echo will not wake avsd");
            OWN_WORD_UNTIL.store(now_ns() + OWN_WORD_NS, Ordering::Relaxed);
        }
    }

    /// Pulls what the speaker played since last time.
    fn follow(&mut self, tap: &Tap, now: u64) {
        let stream = tap.stream.load(Ordering::Acquire);
        let written = tap.written.load(Ordering::Acquire);
        let at = tap.at_ns.load(Ordering::Relaxed);
        let rate = tap.rate.load(Ordering::Relaxed);
        let idle = now.saturating_sub(at) > IDLE_NS;
        if stream != self.stream || rate != self.rate || idle || self.resampler.is_none() {
            if idle && self.resampler.is_none() {
                return;
            }
            self.stream = stream;
            self.rate = rate;
            self.next = written;
            self.first_frame = written;
            self.resampler = if idle || rate == 0 {
                None
            } else {
                MonoResampler::new(rate, aec::BLOCK as u32 * 100).ok()
            };
            self.history.clear();
            self.history_start = 0;
            self.sound_until = i64::MIN;
            self.offset = None;
            self.locked = false;
            self.loudness.clear();
            return;
        }
        let Some(resampler) = self.resampler.as_mut() else {
            return;
        };
        if written.saturating_sub(self.next) as usize > RING / 2 {
            // Fell behind the ring (a stalled capture thread): start over.
            self.resampler = None;
            return;
        }
        self.pulled.clear();
        for f in self.next..written {
            let bits = tap.ring[(f as usize) & (RING - 1)].load(Ordering::Relaxed);
            self.pulled.push(f32::from_bits(bits));
        }
        self.next = written;
        self.resampled.clear();
        if resampler
            .process(&self.pulled, &mut self.resampled)
            .is_err()
        {
            self.resampler = None;
            return;
        }
        self.far_word();
        for &s in &self.resampled {
            if self.history.len() == HISTORY {
                self.history.pop_front();
                self.history_start += 1;
            }
            self.history.push_back(s);
            if s.abs() > 1e-4 {
                self.sound_until = self.history_start + self.history.len() as i64;
            }
        }
    }

    /// The far-end index paired with microphone block `index`, taken from
    /// the clocks when not known, checked against them now and then.
    fn align(&mut self, tap: &Tap, index: i64, at_ns: u64) -> Option<i64> {
        self.resampler.as_ref()?;
        let rate = f64::from(self.rate.max(1));
        let written = tap.written.load(Ordering::Acquire);
        let at = tap.at_ns.load(Ordering::Relaxed);
        // The device frame handed to ALSA when the block's last sample
        // was captured, then its sample at 16 kHz.
        // Never past the last callback: a late callback (a busy machine, a
        // blocking driver) would otherwise point at frames not played yet.
        let frame = written as f64 + (at_ns as f64 - at as f64).min(0.0) * 1e-9 * rate;
        // (The resampler's output is aligned with its input: it trims its
        // own delay.)
        let far = (frame - self.first_frame as f64) * 16_000.0 / rate;
        let mic_end = (index + 1) * aec::BLOCK as i64;
        let measured = far.round() as i64 - mic_end - BIAS;
        match self.offset {
            None => {
                self.offset = Some(measured);
                self.drift = 0.0;
            }
            Some(_) if self.locked => {}
            Some(offset) => {
                self.drift += ((measured - offset) as f64 - self.drift) * 0.02;
                if self.drift.abs() > DRIFT_LIMIT {
                    tracing::debug!(
                        drift_samples = self.drift,
                        "echo canceller: playback and capture drifted apart; aligning again"
                    );
                    self.offset = Some(measured);
                    self.drift = 0.0;
                    self.aec.clear_far();
                }
            }
        }
        self.offset.map(|o| index * aec::BLOCK as i64 + o)
    }
}
