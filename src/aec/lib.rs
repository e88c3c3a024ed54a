//! Acoustic echo cancellation for avsd: removes the device's own playback
//! (the far end, known exactly because avsd played it) from the
//! microphone signal (the near end), so the wake-word engine can listen
//! while Alexa speaks or music plays and never hears avsd itself.
//!
//! The filter is a partitioned-block frequency-domain adaptive filter
//! (overlap-save, the "multidelay" filter of Soo and Pang that speexdsp
//! also uses): blocks of [`BLOCK`] samples (10 ms at 16 kHz, one capture
//! chunk), FFTs of twice that, and `partitions` blocks of filter, so it
//! models an echo path of up to `partitions × 10 ms` (delay and
//! reverberation). Each bin's step is normalised by the far end's power in
//! that bin, which makes it converge about as fast on music and speech
//! (coloured signals) as on white noise. One partition a block is brought
//! back to a linear (not circular) convolution, in turn, as speexdsp does.
//!
//! Adaptation stops while the near end talks over the echo (double talk):
//! the residual is then far above what the filter left of the echo so
//! far, and learning from it would unlearn the room.
//!
//! [`EchoCanceller::process`] allocates nothing and takes a fixed time:
//! everything is sized in [`EchoCanceller::new`].

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Samples per block: 10 ms at 16 kHz.
pub const BLOCK: usize = 160;
const FFT: usize = 2 * BLOCK;
const BINS: usize = BLOCK + 1;
/// The step: the fraction of the error the filter corrects each block.
const MU: f32 = 0.6;
/// Partitions brought back to a linear convolution each block.
const CONSTRAINED: usize = 1;
/// How fast each bin's far-end power follows the signal (per block).
const POWER_SMOOTHING: f32 = 0.1;
/// A block whose residual is this many times what single talk left is
/// double talk.
const DOUBLE_TALK: f32 = 4.0;
/// How fast the single-talk residual ratio follows (per block).
const RATIO_SMOOTHING: f32 = 0.05;
/// The residual ratio before anything is learnt: the echo path may be
/// louder than the far end itself.
const START_RATIO: f32 = 100.0;
/// Block power (sum of squares) taken for silence: -70 dBFS.
const SILENT: f32 = BLOCK as f32 * 1e-7;
/// Blocks in a row (100 ms) louder after the filter than before it, after
/// which the filter starts again.
const DIVERGED_LIMIT: u32 = 10;
/// Double talk longer than this (2 s) is taken for a changed room instead.
const DOUBLE_TALK_LIMIT: u32 = 200;
/// Far-end block power (sum of squares of samples in -1..1) below which
/// nothing is learnt: -70 dBFS.
const FAR_FLOOR: f32 = SILENT;

/// The adaptive echo canceller of one microphone.
pub struct EchoCanceller {
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    partitions: usize,
    /// The previous and the current far-end block.
    far: [f32; FFT],
    /// The far end's spectra, newest at `head`, then older ones.
    spectra: Vec<[Complex32; BINS]>,
    head: usize,
    /// The filter, one spectrum per partition (partition k: k blocks late).
    weights: Vec<[Complex32; BINS]>,
    /// Each bin's far-end power over the filter's reach, smoothed.
    power: [f32; BINS],
    /// Which partition is constrained next.
    constrain: usize,
    time: [f32; FFT],
    freq: [Complex32; BINS],
    error: [Complex32; BINS],
    fwd_scratch: Vec<Complex32>,
    inv_scratch: Vec<Complex32>,
    /// Far-end power over about the filter's span.
    far_long: f32,
    /// Residual over far-end power in single talk; `None` until learnt
    /// (see [`START_RATIO`]).
    ratio: Option<f32>,
    double_talk: u32,
    /// Blocks in a row whose residual was louder than the microphone.
    diverged: u32,
    stats: Stats,
}

/// What the canceller has seen, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Blocks processed.
    pub blocks: u64,
    /// Blocks where adaptation stopped for double talk.
    pub double_talk_blocks: u64,
    /// Blocks passed through as they were: the filter would have made
    /// them louder.
    pub passed: u64,
    /// Times the filter made the microphone louder for long and was
    /// started again.
    pub resets: u64,
}

impl EchoCanceller {
    /// A canceller for echo paths up to `partitions × 10 ms` long.
    pub fn new(partitions: usize) -> Self {
        let partitions = partitions.max(1);
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(FFT);
        let inverse = planner.plan_fft_inverse(FFT);
        let fwd_scratch = forward.make_scratch_vec();
        let inv_scratch = inverse.make_scratch_vec();
        let zero = [Complex32::new(0.0, 0.0); BINS];
        Self {
            forward,
            inverse,
            partitions,
            far: [0.0; FFT],
            spectra: vec![zero; partitions],
            head: 0,
            weights: vec![zero; partitions],
            power: [0.0; BINS],
            constrain: 0,
            time: [0.0; FFT],
            freq: zero,
            error: zero,
            fwd_scratch,
            inv_scratch,
            far_long: 0.0,
            ratio: None,
            double_talk: 0,
            diverged: 0,
            stats: Stats::default(),
        }
    }

    /// The longest echo path it models, in samples.
    pub fn span(&self) -> usize {
        self.partitions * BLOCK
    }

    /// Forgets the room: the next blocks learn it again.
    pub fn reset(&mut self) {
        let zero = [Complex32::new(0.0, 0.0); BINS];
        self.far = [0.0; FFT];
        self.spectra.iter_mut().for_each(|s| *s = zero);
        self.weights.iter_mut().for_each(|w| *w = zero);
        self.power = [0.0; BINS];
        self.far_long = 0.0;
        self.ratio = None;
        self.double_talk = 0;
        self.diverged = 0;
    }

    /// Forgets the far end played so far but not the room: for a far end
    /// that starts again after a pause in which blocks were not processed.
    pub fn clear_far(&mut self) {
        let zero = [Complex32::new(0.0, 0.0); BINS];
        self.far = [0.0; FFT];
        self.spectra.iter_mut().for_each(|s| *s = zero);
    }

    /// What it has seen so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Cancels the echo of `far` (what was played, aligned so that its
    /// echo reaches the microphone within the filter's span) from `near`
    /// (the microphone) into `out`. Samples are in -1..1.
    pub fn process(&mut self, far: &[f32; BLOCK], near: &[f32; BLOCK], out: &mut [f32; BLOCK]) {
        self.stats.blocks += 1;
        self.far.copy_within(BLOCK.., 0);
        self.far[BLOCK..].copy_from_slice(far);
        self.head = (self.head + self.partitions - 1) % self.partitions;
        self.time = self.far;
        self.fft_time();
        self.spectra[self.head] = self.freq;

        // The echo estimate: the sum of each partition's filter times the
        // far end it is late by.
        let mut sum = [Complex32::new(0.0, 0.0); BINS];
        for k in 0..self.partitions {
            let x = &self.spectra[(self.head + k) % self.partitions];
            for ((s, w), x) in sum.iter_mut().zip(&self.weights[k]).zip(x) {
                *s += w * x;
            }
        }
        self.freq = sum;
        self.ifft_time();
        let scale = 1.0 / FFT as f32;
        let mut residual = 0.0f32;
        let mut mic = 0.0f32;
        for i in 0..BLOCK {
            let e = near[i] - self.time[BLOCK + i] * scale;
            out[i] = e;
            residual += e * e;
            mic += near[i] * near[i];
        }
        // Never louder than the microphone: a filter that makes it louder
        // is wrong (the far end jumped, the room changed); one that stays
        // wrong is started again.
        if residual > 2.0 * mic + SILENT {
            out.copy_from_slice(near);
            self.stats.passed += 1;
            // (Into silence it is only not learnt yet: the echo of a far
            // end that just started has not come.)
            if mic > SILENT {
                self.diverged += 1;
            }
            if self.diverged >= DIVERGED_LIMIT {
                self.stats.resets += 1;
                self.reset();
            }
        } else {
            self.diverged = 0;
        }

        let far_power: f32 = far.iter().map(|v| v * v).sum();
        let long = 1.0 / self.partitions as f32;
        self.far_long += (far_power - self.far_long) * long.max(0.02);
        if !self.should_adapt(residual) {
            return;
        }

        // Each bin's power over the whole filter's reach (all partitions):
        // normalising by the newest block alone would make steps huge in a
        // pause of the far end while its echo still comes in.
        let mut reach = [0.0f32; BINS];
        for x in &self.spectra {
            for (r, x) in reach.iter_mut().zip(x) {
                *r += x.norm_sqr();
            }
        }
        // Smoothed on the way down only: at an onset after silence a
        // lagging power would make the step far too large.
        for (p, r) in self.power.iter_mut().zip(&reach) {
            *p = (*p + (r - *p) * POWER_SMOOTHING).max(*r);
        }
        self.time[..BLOCK].fill(0.0);
        self.time[BLOCK..].copy_from_slice(out);
        self.fft_time();
        self.error = self.freq;
        // Regularisation: a bin with next to no far-end power learns
        // nothing instead of blowing up.
        let floor = self.power.iter().sum::<f32>() / BINS as f32 * 1e-3
            + FFT as f32 * SILENT / BLOCK as f32 * self.partitions as f32;
        for k in 0..self.partitions {
            let x = &self.spectra[(self.head + k) % self.partitions];
            let w = &mut self.weights[k];
            for b in 0..BINS {
                let step = MU / (self.power[b] + floor);
                w[b] += x[b].conj() * self.error[b] * step;
            }
        }
        // Bring one partition back to a linear convolution: its impulse
        // response's second half (the circular wrap) set to zero.
        for _ in 0..CONSTRAINED.min(self.partitions) {
            let c = self.constrain;
            self.constrain = (c + 1) % self.partitions;
            self.freq = self.weights[c];
            self.ifft_time();
            for v in &mut self.time[..BLOCK] {
                *v *= scale;
            }
            self.time[BLOCK..].fill(0.0);
            self.fft_time();
            self.weights[c] = self.freq;
        }
    }

    /// Whether this block may teach the filter (single talk, far end on).
    fn should_adapt(&mut self, residual: f32) -> bool {
        if self.far_long < FAR_FLOOR {
            return false;
        }
        let now = residual / self.far_long;
        // Unknown at first: taken as large, so the first blocks all learn
        // and it comes down to what the filter leaves.
        let ratio = self.ratio.unwrap_or(START_RATIO);
        if now > DOUBLE_TALK * ratio && self.double_talk < DOUBLE_TALK_LIMIT {
            self.double_talk += 1;
            self.stats.double_talk_blocks += 1;
            return false;
        }
        self.double_talk = 0;
        self.ratio = Some(ratio + (now - ratio) * RATIO_SMOOTHING);
        true
    }

    fn fft_time(&mut self) {
        // Cannot fail: both buffers have the planned lengths.
        let _ = self.forward.process_with_scratch(
            &mut self.time,
            &mut self.freq,
            &mut self.fwd_scratch,
        );
    }

    fn ifft_time(&mut self) {
        // realfft wants the DC and Nyquist bins real, as they are for any
        // real signal; rounding may leave a tiny imaginary part.
        self.freq[0].im = 0.0;
        self.freq[BINS - 1].im = 0.0;
        let _ = self.inverse.process_with_scratch(
            &mut self.freq,
            &mut self.time,
            &mut self.inv_scratch,
        );
    }
}

#[cfg(test)]
mod tests;
