//! The software mixer behind the one output stream: several mono sources at
//! the device rate, each with its own gain, summed into the device buffer.
//!
//! ```text
//! decoder thread ─SourceFeed (rtrb ring of f32)─▶ Mixer::mix (cpal callback) ─▶ ALSA
//! speaker thread ─MixerHandle::add (rtrb ring of sources)─▶ Mixer
//!                ◀─retired sources (rtrb ring)─ Mixer
//! control: SourceControl atomics (gain, pause, stop) ─▶ Mixer ─▶ counters, ended
//! ```
//!
//! [`Mixer::mix`] runs on the real-time audio thread, so it never allocates,
//! frees, blocks or logs: the sources and their rings are made on the
//! control side and moved in through a ring; a finished source is moved back
//! out through another ring to be freed there; scratch space is allocated
//! once. A gain change is ramped linearly over [`RAMP_MS`] so that ducking
//! does not click. The sum is clamped to full scale, so two loud sources
//! clip instead of wrapping around in integer formats.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

use super::resample::AudioSample;

/// Sources playing at once (Alexa's voice, an alarm, music, one spare).
pub const MAX_SOURCES: usize = 4;
/// The gain of a ducked source: about -20 dB.
pub const DUCKED_GAIN: f32 = 0.1;
/// How long a gain change takes.
pub const RAMP_MS: u32 = 15;
/// Frames mixed per pass; longer device buffers take several passes.
const BLOCK_FRAMES: usize = 2048;

/// The master gain of the whole mix (the Speaker volume), set by the
/// volume's owner and read by [`Mixer::mix_mono`] on the audio thread: one
/// atomic, so the callback never waits for it. Cheap to clone; every clone
/// is the same gain. The mixer ramps to a new value over [`RAMP_MS`], so a
/// volume step does not click.
#[derive(Debug, Clone)]
pub struct MasterGain(Arc<AtomicU32>);

impl Default for MasterGain {
    fn default() -> Self {
        Self(Arc::new(AtomicU32::new(1.0f32.to_bits())))
    }
}

/// Two handles are equal when they are the same gain.
impl PartialEq for MasterGain {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MasterGain {}

impl MasterGain {
    /// Sets the gain (1.0 unchanged, 0.0 silent); negative reads as 0.
    pub fn set(&self, gain: f32) {
        self.0.store(gain.max(0.0).to_bits(), Ordering::Relaxed);
    }

    /// The gain last set.
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// The control side's handle on one source: gain, pause and stop in, how
/// much was played and whether it ended out. All atomics, shared with the
/// mixer on the audio thread.
#[derive(Debug)]
pub struct SourceControl {
    gain: AtomicU32,
    paused: AtomicBool,
    stop: AtomicBool,
    /// The feed will push nothing more.
    finished: AtomicBool,
    /// The mixer let go of the source: everything played, or stopped.
    ended: AtomicBool,
    played: AtomicU64,
    underruns: AtomicU64,
    /// Wakes whoever waits in [`SourceControl::stopped`] (a decoder waiting
    /// for MP3 bytes). Never touched by the audio callback.
    stop_notify: Notify,
}

impl SourceControl {
    fn new(gain: f32) -> Self {
        Self {
            gain: AtomicU32::new(gain.to_bits()),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            played: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
            stop_notify: Notify::new(),
        }
    }

    /// Sets the gain (1.0 is unchanged, [`DUCKED_GAIN`] ducked); the mixer
    /// ramps to it over [`RAMP_MS`].
    pub fn set_gain(&self, gain: f32) {
        self.gain.store(gain.max(0.0).to_bits(), Ordering::Relaxed);
    }

    /// The gain last set.
    pub fn gain(&self) -> f32 {
        f32::from_bits(self.gain.load(Ordering::Relaxed))
    }

    /// Paused: ramped down, then its samples stay in its ring until resumed.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Whether it is paused (by focus: an alert over music).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Drops the source from the mix at the next buffer, without a ramp
    /// (stop means now; the ramp would add sound after it).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.stop_notify.notify_waiters();
    }

    /// Resolves once [`SourceControl::stop`] has been called. Needs no
    /// runtime: the decoder threads wait on it.
    pub async fn stopped(&self) {
        loop {
            let mut notified = pin!(self.stop_notify.notified());
            // Registered before the flag is read, so a stop in between
            // still wakes this.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Whether [`SourceControl::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The mixer has let go: every sample was mixed (or it was stopped).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether the feed said it has pushed everything.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Frames of this source mixed into the output so far.
    pub fn played_frames(&self) -> u64 {
        self.played.load(Ordering::Relaxed)
    }

    /// Buffers in which the source had started but had too little audio.
    pub fn underruns(&self) -> u64 {
        self.underruns.load(Ordering::Relaxed)
    }
}

/// The writing end of a source: mono `f32` samples at the device rate.
pub struct SourceFeed {
    producer: rtrb::Producer<f32>,
    control: Arc<SourceControl>,
}

impl SourceFeed {
    /// Copies as many of `samples` as there is room for; returns how many.
    /// Never blocks.
    pub fn push(&mut self, samples: &[f32]) -> usize {
        let n = self.producer.slots().min(samples.len());
        if n > 0
            && let Ok(chunk) = self.producer.write_chunk_uninit(n)
        {
            chunk.fill_from_iter(samples[..n].iter().copied());
        }
        n
    }

    /// No more samples will come: once the ring is played, the source ends.
    pub fn finish(&self) {
        self.control.finished.store(true, Ordering::Release);
    }

    /// The source's control, shared with the mixer.
    pub fn control(&self) -> &Arc<SourceControl> {
        &self.control
    }

    /// The mixer will never take more: the source was stopped, or the
    /// output (and with it the mixer) is gone.
    pub fn is_closed(&self) -> bool {
        self.control.is_stopped() || self.control.ended() || self.producer.is_abandoned()
    }
}

impl Drop for SourceFeed {
    fn drop(&mut self) {
        // A feed dropped early (a decode error) still lets the source end.
        self.finish();
    }
}

/// A source as the mixer holds it.
struct Source {
    consumer: rtrb::Consumer<f32>,
    control: Arc<SourceControl>,
    /// The gain applied to the last sample.
    current: f32,
    /// Where the running ramp goes, its step per frame and frames left.
    target: f32,
    step: f32,
    ramp_left: u32,
}

/// The mixer's control side: adds sources, frees the finished ones.
pub struct MixerHandle {
    incoming: rtrb::Producer<Source>,
    retired: rtrb::Consumer<Source>,
    live: usize,
}

/// The mixer is full: [`MAX_SOURCES`] sources are playing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerFull;

impl MixerHandle {
    /// Adds a source with `gain`, whose ring holds `capacity` samples.
    /// It is heard from the next buffer on.
    pub fn add(&mut self, capacity: usize, gain: f32) -> Result<SourceFeed, MixerFull> {
        self.collect();
        if self.live >= MAX_SOURCES {
            return Err(MixerFull);
        }
        let (producer, consumer) = rtrb::RingBuffer::new(capacity.max(1));
        let control = Arc::new(SourceControl::new(gain));
        let source = Source {
            consumer,
            control: control.clone(),
            current: gain,
            target: gain,
            step: 0.0,
            ramp_left: 0,
        };
        // Every ring holds MAX_SOURCES and at most that many are alive.
        self.incoming.push(source).map_err(|_| MixerFull)?;
        self.live += 1;
        Ok(SourceFeed { producer, control })
    }

    /// Frees the sources the mixer has let go of (their rings), here rather
    /// than on the audio thread. Returns how many are still alive.
    pub fn collect(&mut self) -> usize {
        while let Ok(source) = self.retired.pop() {
            drop(source);
            self.live -= 1;
        }
        self.live
    }
}

/// The real-time half; lives in the output callback.
pub struct Mixer {
    slots: [Option<Source>; MAX_SOURCES],
    incoming: rtrb::Consumer<Source>,
    retired: rtrb::Producer<Source>,
    scratch: Box<[f32]>,
    ramp_frames: u32,
    master: MasterGain,
    /// The master gain applied to the last frame.
    master_now: f32,
}

impl Mixer {
    /// A mixer for an output at `rate` Hz, and its control handle.
    pub fn new(rate: u32) -> (Mixer, MixerHandle) {
        let (in_tx, in_rx) = rtrb::RingBuffer::new(MAX_SOURCES);
        let (out_tx, out_rx) = rtrb::RingBuffer::new(MAX_SOURCES);
        let mixer = Mixer {
            slots: Default::default(),
            incoming: in_rx,
            retired: out_tx,
            scratch: vec![0.0; BLOCK_FRAMES].into_boxed_slice(),
            ramp_frames: (rate * RAMP_MS / 1000).max(1),
            master: MasterGain::default(),
            master_now: 1.0,
        };
        let handle = MixerHandle {
            incoming: in_tx,
            retired: out_rx,
            live: 0,
        };
        (mixer, handle)
    }

    /// The mix is scaled by `master` (the volume), from the next buffer on.
    pub fn set_master(&mut self, master: MasterGain) {
        self.master_now = master.get();
        self.master = master;
    }

    /// Fills `out` (interleaved, `channels` per frame) with the mix, the
    /// mono mix copied to every channel. Real-time safe.
    pub fn mix<T: AudioSample>(&mut self, out: &mut [T], channels: usize) {
        let channels = channels.max(1);
        let mut scratch = std::mem::take(&mut self.scratch);
        for block in out.chunks_mut(scratch.len() * channels) {
            let frames = block.len() / channels;
            self.mix_mono(&mut scratch[..frames]);
            for (frame, s) in block.chunks_exact_mut(channels).zip(scratch.iter()) {
                frame.fill(T::from_f32(*s));
            }
            // A partial frame at the end (never from cpal) stays silent.
            for s in &mut block[frames * channels..] {
                *s = T::default();
            }
        }
        self.scratch = scratch;
    }

    /// Whether any source is in the mix (the output plays silence otherwise).
    pub fn is_idle(&self) -> bool {
        self.slots.iter().all(Option::is_none) && self.incoming.is_empty()
    }

    /// Mixes into `out`, one mono frame per sample.
    pub fn mix_mono(&mut self, out: &mut [f32]) {
        for slot in self.slots.iter_mut().filter(|s| s.is_none()) {
            match self.incoming.pop() {
                Ok(source) => *slot = Some(source),
                Err(_) => break,
            }
        }
        out.fill(0.0);
        let ramp_frames = self.ramp_frames;
        for slot in &mut self.slots {
            let Some(source) = slot else { continue };
            let done = source.mix_into(out, ramp_frames);
            if done && let Some(source) = slot.take() {
                source.control.ended.store(true, Ordering::Release);
                if let Err(rtrb::PushError::Full(source)) = self.retired.push(source) {
                    // Never happens (see MixerHandle::add); keep it rather
                    // than free it here.
                    *slot = Some(source);
                }
            }
        }
        // The volume: ramped per frame like a source's gain, at most
        // RAMP_MS from one value to the next.
        let master = self.master.get();
        let step = 1.0 / ramp_frames as f32;
        for s in out.iter_mut() {
            if self.master_now != master {
                let d = master - self.master_now;
                self.master_now = if d.abs() <= step {
                    master
                } else {
                    self.master_now + step.copysign(d)
                };
            }
            *s = (*s * self.master_now).clamp(-1.0, 1.0);
        }
    }
}

impl Source {
    /// Adds this source's next samples to `out`; true once it has ended.
    fn mix_into(&mut self, out: &mut [f32], ramp_frames: u32) -> bool {
        let control = &*self.control;
        if control.stop.load(Ordering::Acquire) {
            return true;
        }
        let paused = control.paused.load(Ordering::Relaxed);
        let wanted = if paused { 0.0 } else { control.gain() };
        if wanted != self.target {
            self.target = wanted;
            self.ramp_left = ramp_frames;
            self.step = (wanted - self.current) / ramp_frames as f32;
        }
        if paused && self.ramp_left == 0 {
            // Faded out: leave the rest in the ring for the resume.
            return false;
        }
        // Checked before the ring, so samples pushed just before `finish`
        // are seen.
        let finished = control.finished.load(Ordering::Acquire);
        let want = if paused {
            // Only the fade-out; the rest waits.
            out.len().min(self.ramp_left as usize)
        } else {
            out.len()
        };
        let n = self.consumer.slots().min(want);
        if let Ok(chunk) = self.consumer.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            for (o, s) in out.iter_mut().zip(a.iter().chain(b.iter())) {
                if self.ramp_left > 0 {
                    self.ramp_left -= 1;
                    self.current = if self.ramp_left == 0 {
                        self.target
                    } else {
                        self.current + self.step
                    };
                }
                *o += s * self.current;
            }
            chunk.commit_all();
        }
        let before = control.played.fetch_add(n as u64, Ordering::Relaxed);
        if n < want {
            if finished {
                return true;
            }
            if before + n as u64 > 0 {
                control.underruns.fetch_add(1, Ordering::Relaxed);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
