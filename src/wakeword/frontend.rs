//! The audio front end microWakeWord models were trained on (TFLite-Micro's
//! `experimental/microfrontend`): 30 ms Hann windows every 10 ms, a 512-bin
//! fixed-point FFT, 40 mel channels, noise reduction, PCAN gain control and a
//! fixed-point log. All integer maths, reproduced bit for bit so a model sees
//! the features it was trained on; fed in chunks of any size without
//! allocating.

use crate::fft::RealFft;
use crate::filterbank::Filterbank;

/// The only sample rate the models take.
pub const SAMPLE_RATE: u32 = 16_000;

/// The front end's settings. [`Default`] is what microWakeWord trains with
/// (and pymicro-features and ESPHome use); the model JSON gives only the
/// step, as `feature_step_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontendConfig {
    /// Window length in ms.
    pub window_ms: u32,
    /// Step between windows in ms (one feature frame per step).
    pub step_ms: u32,
    /// Mel channels, i.e. features per frame.
    pub channels: usize,
    /// Lowest frequency in Hz.
    pub lower_hz: f32,
    /// Highest frequency in Hz.
    pub upper_hz: f32,
    /// Extra precision bits of the noise estimate.
    pub smoothing_bits: u32,
    /// Noise estimate smoothing on even channels.
    pub even_smoothing: f32,
    /// Noise estimate smoothing on odd channels.
    pub odd_smoothing: f32,
    /// The share of the signal noise reduction always leaves.
    pub min_signal_remaining: f32,
    /// PCAN strength (the exponent of the gain).
    pub pcan_strength: f32,
    /// PCAN offset.
    pub pcan_offset: f32,
    /// PCAN gain precision bits.
    pub pcan_gain_bits: u32,
    /// Output scale of the log, in bits.
    pub log_scale_shift: u32,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            window_ms: 30,
            step_ms: 10,
            channels: 40,
            lower_hz: 125.0,
            upper_hz: 7500.0,
            smoothing_bits: 10,
            even_smoothing: 0.025,
            odd_smoothing: 0.06,
            min_signal_remaining: 0.05,
            pcan_strength: 0.95,
            pcan_offset: 80.0,
            pcan_gain_bits: 21,
            log_scale_shift: 6,
        }
    }
}

const WINDOW_BITS: u32 = 12;
const NOISE_BITS: u32 = 14;
const PCAN_SNR_BITS: u32 = 12;
const PCAN_OUTPUT_BITS: u32 = 6;
/// Bits the filterbank weights add, of which half survive the square root.
const FILTERBANK_BITS: i32 = 12;
const LOG_SCALE_BITS: u32 = 16;
const LOG_SEGMENTS_BITS: u32 = 7;
/// ln(2) in Q16.
const LOG_COEFF: u64 = 45426;

/// Streaming feature extraction: push samples, get a frame of `channels`
/// values every `step` samples once a window is full.
pub struct Frontend {
    window: Vec<i16>,
    step: usize,
    input: Vec<i16>,
    used: usize,
    fft_input: Vec<i16>,
    fft: RealFft,
    filterbank: Filterbank,
    smoothing: [u32; 2],
    smoothing_bits: u32,
    min_signal: u32,
    noise: Vec<u32>,
    gain_lut: Vec<i16>,
    snr_shift: u32,
    correction_bits: i32,
    log_scale_shift: u32,
    log_lut: Vec<i32>,
    out: Vec<u16>,
}

impl Frontend {
    /// A front end with these settings, at [`SAMPLE_RATE`].
    pub fn new(config: &FrontendConfig) -> Frontend {
        let size = (config.window_ms * SAMPLE_RATE / 1000) as usize;
        let step = (config.step_ms * SAMPLE_RATE / 1000) as usize;
        let arg = std::f32::consts::PI * 2.0 / size as f32;
        let window = (0..size)
            .map(|i| {
                let v = 0.5 - 0.5 * (arg * (i as f32 + 0.5)).cos();
                (v * (1 << WINDOW_BITS) as f32 + 0.5).floor() as i16
            })
            .collect();
        let fft_size = size.next_power_of_two();
        let bins = fft_size / 2 + 1;
        let filterbank = Filterbank::new(
            config.channels,
            config.lower_hz,
            config.upper_hz,
            SAMPLE_RATE,
            bins,
        );
        // The log and PCAN work on the filterbank output corrected by this
        // many bits for the FFT's size.
        let correction_bits = fft_size.ilog2() as i32 - FILTERBANK_BITS / 2;
        let to_q = |v: f32| (v * (1 << NOISE_BITS) as f32) as u32;
        let input_bits = config.smoothing_bits as i32 - correction_bits;
        Frontend {
            window,
            step,
            input: vec![0; size],
            used: 0,
            fft_input: vec![0; fft_size],
            fft: RealFft::new(fft_size),
            filterbank,
            smoothing: [to_q(config.even_smoothing), to_q(config.odd_smoothing)],
            smoothing_bits: config.smoothing_bits,
            min_signal: to_q(config.min_signal_remaining),
            noise: vec![0; config.channels],
            gain_lut: gain_lut(config, input_bits),
            snr_shift: (config.pcan_gain_bits as i32 - correction_bits - PCAN_SNR_BITS as i32)
                as u32,
            correction_bits,
            log_scale_shift: config.log_scale_shift,
            log_lut: (0..=1 << LOG_SEGMENTS_BITS)
                .map(|i| {
                    let x = i as f64 / (1 << LOG_SEGMENTS_BITS) as f64;
                    // log2(1+x) - x, the correction to the linear guess.
                    (((1.0 + x).log2() - x) * (1 << LOG_SCALE_BITS) as f64).round() as i32
                })
                .collect(),
            out: vec![0; config.channels],
        }
    }

    /// Samples per frame step.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Samples in one window (the first frame needs this many).
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Forgets all audio and the noise estimate, as at start.
    pub fn reset(&mut self) {
        self.input.fill(0);
        self.used = 0;
        self.noise.fill(0);
    }

    /// Takes samples up to the end of the current window; returns how many
    /// it took and, when that completed a window, the frame's features.
    pub fn push(&mut self, samples: &[i16]) -> (usize, Option<&[u16]>) {
        let take = samples.len().min(self.input.len() - self.used);
        self.input[self.used..self.used + take].copy_from_slice(&samples[..take]);
        self.used += take;
        if self.used < self.input.len() {
            return (take, None);
        }
        self.frame();
        self.input.copy_within(self.step.., 0);
        self.used -= self.step;
        (take, Some(&self.out))
    }

    fn frame(&mut self) {
        let mut max_abs = 0i16;
        for (i, (&x, &w)) in self.input.iter().zip(&self.window).enumerate() {
            let v = ((x as i32 * w as i32) >> WINDOW_BITS) as i16;
            self.fft_input[i] = v;
            max_abs = max_abs.max(v.wrapping_abs());
        }
        // Scale the window up to use the FFT's full 16 bits.
        let shift = 15 - msb(max_abs as u32);
        for v in &mut self.fft_input[..self.input.len()] {
            *v = ((*v as u16 as u32) << shift) as u16 as i16;
        }
        let spectrum = self.fft.run(&self.fft_input);
        let signal = self.filterbank.apply(spectrum, shift);
        for (i, s) in signal.iter_mut().enumerate() {
            // Noise reduction: subtract a slow per-channel noise estimate.
            let smoothing = self.smoothing[i & 1] as u64;
            let scaled = *s << self.smoothing_bits;
            let mut estimate = ((scaled as u64 * smoothing
                + self.noise[i] as u64 * ((1 << NOISE_BITS) - smoothing))
                >> NOISE_BITS) as u32;
            self.noise[i] = estimate;
            estimate = estimate.min(scaled);
            let floor = ((*s as u64 * self.min_signal as u64) >> NOISE_BITS) as u32;
            let reduced = (scaled - estimate) >> self.smoothing_bits;
            *s = reduced.max(floor);
            // PCAN: divide by a power of the noise level (automatic gain).
            let gain = wide_dynamic(self.noise[i], &self.gain_lut) as i32 as u32;
            let snr = ((*s as u64 * gain as u64) >> self.snr_shift) as u32;
            *s = pcan_shrink(snr);
        }
        for (out, &s) in self.out.iter_mut().zip(signal.iter()) {
            let v = if self.correction_bits < 0 {
                s >> -self.correction_bits
            } else {
                s.wrapping_shl(self.correction_bits as u32)
            };
            let v = if v > 1 {
                log_q(v, self.log_scale_shift, &self.log_lut)
            } else {
                0
            };
            *out = v.min(u16::MAX as u32) as u16;
        }
    }
}

/// Position of the highest set bit, 1-based; 0 for 0.
fn msb(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// The PCAN gain for a noise level `x`, from a piecewise quadratic table.
fn wide_dynamic(x: u32, lut: &[i16]) -> i16 {
    if x <= 2 {
        return lut[x as usize];
    }
    let interval = msb(x) as i32;
    let base = (4 * interval - 6) as usize;
    let scaled = if interval < 11 {
        x << (11 - interval)
    } else {
        x >> (interval - 11)
    };
    let frac = (scaled & 0x3FF) as i32;
    let mut r = (lut[base + 2] as i32 * frac) >> 5;
    r = r.wrapping_add(((lut[base + 1] as i32 as u32) << 5) as i32);
    r = r.wrapping_mul(frac);
    r = r.wrapping_add(1 << 14) >> 15;
    r.wrapping_add(lut[base] as i32) as i16
}

fn pcan_gain(config: &FrontendConfig, input_bits: i32, x: u32) -> i16 {
    let xf = x as f32 / (1u32 << input_bits) as f32;
    let gain = (1u32 << config.pcan_gain_bits) as f32
        * (xf + config.pcan_offset).powf(-config.pcan_strength);
    if gain > i16::MAX as f32 {
        i16::MAX
    } else {
        (gain + 0.5) as i16
    }
}

/// The table [`wide_dynamic`] reads: the gain at 0 and 1, then for each
/// power of two a value and two slopes.
fn gain_lut(config: &FrontendConfig, input_bits: i32) -> Vec<i16> {
    const BITS: u32 = 32;
    let mut lut = vec![0i16; (4 * BITS - 3) as usize];
    lut[0] = pcan_gain(config, input_bits, 0);
    lut[1] = pcan_gain(config, input_bits, 1);
    for interval in 2..=BITS {
        let x0 = 1u32 << (interval - 1);
        let x1 = x0 + (x0 >> 1);
        let x2 = if interval == BITS {
            x0 + (x0 - 1)
        } else {
            2 * x0
        };
        let y0 = pcan_gain(config, input_bits, x0);
        let y1 = pcan_gain(config, input_bits, x1);
        let y2 = pcan_gain(config, input_bits, x2);
        let d1 = y1 as i32 - y0 as i32;
        let d2 = y2 as i32 - y0 as i32;
        let a1 = 4 * d1 - d2;
        let base = (4 * interval - 6) as usize;
        lut[base] = y0;
        lut[base + 1] = a1 as i16;
        lut[base + 2] = (d2 - a1) as i16;
    }
    lut
}

fn pcan_shrink(x: u32) -> u32 {
    if x < 2 << PCAN_SNR_BITS {
        (x * x) >> (2 + 2 * PCAN_SNR_BITS - PCAN_OUTPUT_BITS)
    } else {
        (x >> (PCAN_SNR_BITS - PCAN_OUTPUT_BITS)) - (1 << PCAN_OUTPUT_BITS)
    }
}

/// Fixed-point natural log of `x` (> 1), scaled by 2^`scale_shift`: log2
/// from the bit position plus a table-corrected fraction, times ln 2.
fn log_q(x: u32, scale_shift: u32, lut: &[i32]) -> u32 {
    let integer = msb(x) - 1;
    let mut frac = (x as i64 - (1i64 << integer)) as i32;
    if integer < LOG_SCALE_BITS {
        frac <<= LOG_SCALE_BITS - integer;
    } else {
        frac >>= integer - LOG_SCALE_BITS;
    }
    let seg = (frac >> (LOG_SCALE_BITS - LOG_SEGMENTS_BITS)) as usize;
    let (c0, c1) = (lut[seg], lut[seg + 1]);
    let seg_base = (seg as i32) << (LOG_SCALE_BITS - LOG_SEGMENTS_BITS);
    let rel = (c1 - c0).wrapping_mul(frac - seg_base) >> LOG_SCALE_BITS;
    let fraction = (frac + c0 + rel) as u32;
    let log2 = (integer << LOG_SCALE_BITS).wrapping_add(fraction);
    let round = 1u64 << (LOG_SCALE_BITS - 1);
    let loge = ((LOG_COEFF * log2 as u64 + round) >> LOG_SCALE_BITS) as u32;
    (loge << scale_shift).wrapping_add(round as u32) >> LOG_SCALE_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_every_step_after_the_first_window() {
        let mut fe = Frontend::new(&FrontendConfig::default());
        let audio = vec![100i16; 16_000];
        let mut frames = Vec::new();
        let mut fed = 0;
        // Odd chunk sizes: framing must not depend on them.
        for chunk in audio.chunks(77) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (took, frame) = fe.push(rest);
                fed += took;
                if frame.is_some() {
                    frames.push(fed);
                }
                rest = &rest[took..];
            }
        }
        assert_eq!(frames[0], 480);
        assert!(frames.windows(2).all(|w| w[1] - w[0] == 160));
        assert_eq!(frames.len(), (16_000 - 480) / 160 + 1);
    }

    #[test]
    fn log_is_close_to_natural_log() {
        let lut = Frontend::new(&FrontendConfig::default()).log_lut;
        for x in [2u32, 10, 1000, 123_456, 4_000_000_000] {
            let want = (x as f64).ln() * 64.0;
            let got = log_q(x, 6, &lut) as f64;
            assert!((got - want).abs() <= 1.0, "ln({x})*64: {got} vs {want}");
        }
    }
}
