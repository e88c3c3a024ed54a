//! Sample conversion, downmixing and streaming resampling (rubato).
//!
//! Everything here runs on avsd's own audio threads, never in a cpal callback:
//! it allocates while warming up and may take longer than a period.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters,
    WindowFunction,
};

/// Above this many input frames per FFT block (`rate_in / gcd(rate_in,
/// rate_out)`), odd rate pairs use the sinc resampler instead of the FFT one,
/// whose block (and memory) would grow with the awkward ratio.
const MAX_FFT_BLOCK: u32 = 4_800;

/// A device sample type avsd converts to and from `f32` in `[-1, 1)`.
///
/// Integer conversions scale by 2^(bits-1) and round, so an `i16` survives
/// `to_f32` then `from_f32` unchanged: a 16 kHz mono i16 microphone reaches
/// AVS byte for byte.
pub trait AudioSample: Copy + Send + Default + 'static {
    /// To float.
    fn to_f32(self) -> f32;
    /// From float, clamped to the type's range.
    fn from_f32(v: f32) -> Self;
}

impl AudioSample for i16 {
    fn to_f32(self) -> f32 {
        f32::from(self) / 32_768.0
    }
    fn from_f32(v: f32) -> Self {
        (v * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
    }
}

impl AudioSample for i32 {
    fn to_f32(self) -> f32 {
        (f64::from(self) / 2_147_483_648.0) as f32
    }
    fn from_f32(v: f32) -> Self {
        (f64::from(v) * 2_147_483_648.0)
            .round()
            .clamp(-2_147_483_648.0, 2_147_483_647.0) as i32
    }
}

impl AudioSample for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v.clamp(-1.0, 1.0)
    }
}

/// Appends the mono mix of interleaved `frames` (the average of the channels)
/// to `out`. Averaging, not summing, so a full-scale stereo signal stays in range.
pub fn downmix_into<T: AudioSample>(interleaved: &[T], channels: usize, out: &mut Vec<f32>) {
    let channels = channels.max(1);
    if channels == 1 {
        out.extend(interleaved.iter().map(|s| s.to_f32()));
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().map(|s| s.to_f32()).sum::<f32>() * scale),
    );
}

/// A streaming mono resampler: feed any number of samples at a time, get out
/// every sample the input implies, with the filter delay removed so output
/// sample `n` lines up with input time `n / rate_out`.
///
/// Equal rates pass samples straight through. Otherwise rubato resamples
/// chunks of 10 ms of input: its synchronous FFT resampler for the usual rate
/// pairs (the ratio is fixed, and it costs about a tenth of the sinc
/// resampler, which matters on a Pi and in debug builds), its sinc resampler
/// for odd pairs. Latency is one chunk (it waits for a full one) plus
/// [`delay_frames`](Self::delay_frames) output frames: 5 ms for 48 → 16 kHz
/// and 24 → 48 kHz. After
/// [`flush`](Self::flush) the total output is `round(input × rate_out / rate_in)`
/// frames: nothing is dropped and nothing invented.
pub struct MonoResampler {
    ratio: f64,
    consumed: u64,
    produced: u64,
    inner: Option<Engine>,
}

struct Engine {
    rs: Box<dyn Resampler<f32>>,
    chunk: usize,
    input: Vec<f32>,
    output: Vec<f32>,
    to_trim: usize,
    delay: usize,
}

impl MonoResampler {
    /// A resampler from `rate_in` to `rate_out` Hz. Fails only on absurd rates.
    pub fn new(rate_in: u32, rate_out: u32) -> Result<Self, String> {
        if rate_in == 0 || rate_out == 0 {
            return Err(format!("invalid sample rates {rate_in} -> {rate_out} Hz"));
        }
        let ratio = f64::from(rate_out) / f64::from(rate_in);
        let inner = if rate_in == rate_out {
            None
        } else {
            let chunk = (rate_in / 100).max(1) as usize;
            let fail = |e: rubato::ResamplerConstructionError| {
                format!("resampler {rate_in} -> {rate_out} Hz: {e}")
            };
            let rs: Box<dyn Resampler<f32>> = if rate_in / gcd(rate_in, rate_out) <= MAX_FFT_BLOCK {
                Box::new(
                    Fft::<f32>::new(
                        rate_in as usize,
                        rate_out as usize,
                        chunk,
                        1,
                        FixedSync::Input,
                    )
                    .map_err(fail)?,
                )
            } else {
                let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2);
                Box::new(
                    Async::<f32>::new_sinc(ratio, 1.0, &params, chunk, 1, FixedAsync::Input)
                        .map_err(fail)?,
                )
            };
            let delay = rs.output_delay();
            let output = vec![0.0; rs.output_frames_max()];
            Some(Engine {
                chunk,
                input: Vec::with_capacity(chunk),
                output,
                to_trim: delay,
                delay,
                rs,
            })
        };
        Ok(Self {
            ratio,
            consumed: 0,
            produced: 0,
            inner,
        })
    }

    /// Output rate / input rate.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The resampler's filter delay in output frames (0 when passing through).
    pub fn delay_frames(&self) -> usize {
        self.inner.as_ref().map_or(0, |s| s.delay)
    }

    /// Resamples `input`, appending what is ready to `out`.
    pub fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        self.consumed += input.len() as u64;
        let Some(s) = self.inner.as_mut() else {
            self.produced += input.len() as u64;
            out.extend_from_slice(input);
            return Ok(());
        };
        while !input.is_empty() {
            let take = (s.chunk - s.input.len()).min(input.len());
            s.input.extend_from_slice(&input[..take]);
            input = &input[take..];
            if s.input.len() == s.chunk {
                self.produced += s.run(None, out, u64::MAX)?;
                s.input.clear();
            }
        }
        Ok(())
    }

    /// Ends the stream: pushes the held input through the filter and appends
    /// the rest of the output, so that the total is the exact expected length.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), String> {
        let expected = (self.consumed as f64 * self.ratio).round() as u64;
        let Some(s) = self.inner.as_mut() else {
            return Ok(());
        };
        let mut partial = s.input.len();
        s.input.resize(s.chunk, 0.0);
        // Pump silence until the delayed tail has come out; bounded because each
        // round yields at least one frame once the delay is trimmed.
        let mut rounds = 0;
        while self.produced < expected && rounds < 1_000 {
            self.produced += s.run(Some(partial), out, expected - self.produced)?;
            partial = 0;
            rounds += 1;
        }
        s.input.clear();
        Ok(())
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

impl Engine {
    /// Runs one chunk; returns how many frames it appended (at most `limit`).
    fn run(
        &mut self,
        partial: Option<usize>,
        out: &mut Vec<f32>,
        limit: u64,
    ) -> Result<u64, String> {
        let input =
            InterleavedSlice::new(&self.input[..], 1, self.chunk).map_err(|e| e.to_string())?;
        let frames_out = self.output.len();
        let mut output = InterleavedSlice::new_mut(&mut self.output[..], 1, frames_out)
            .map_err(|e| e.to_string())?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (_, n) = self
            .rs
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| e.to_string())?;
        let skip = self.to_trim.min(n);
        self.to_trim -= skip;
        let avail = (n - skip) as u64;
        let take = avail.min(limit) as usize;
        out.extend_from_slice(&self.output[skip..skip + take]);
        Ok(take as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(rate_in: u32, rate_out: u32, input: &[f32], pieces: &[usize]) -> Vec<f32> {
        let mut r = MonoResampler::new(rate_in, rate_out).expect("resampler");
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = pieces[i % pieces.len()].clamp(1, rest.len());
            r.process(&rest[..n], &mut out).expect("process");
            rest = &rest[n..];
            i += 1;
        }
        r.flush(&mut out).expect("flush");
        out
    }

    #[test]
    fn i16_round_trips_through_f32() {
        for v in [i16::MIN, -12_345, -1, 0, 1, 12_345, i16::MAX] {
            assert_eq!(i16::from_f32(v.to_f32()), v);
        }
    }

    #[test]
    fn downmix_averages_channels() {
        let mut out = Vec::new();
        downmix_into(&[0.5f32, -0.5, 1.0, 0.0], 2, &mut out);
        assert_eq!(out, vec![0.0, 0.5]);
    }

    #[test]
    fn equal_rates_pass_through() {
        let input: Vec<f32> = (0..1000).map(|i| (i as f32 / 1000.0) - 0.5).collect();
        assert_eq!(run(16_000, 16_000, &input, &[7, 160]), input);
    }

    #[test]
    fn tone_keeps_its_frequency_and_phase() {
        // 440 Hz at 48 kHz down to 16 kHz: the output must be the same tone,
        // aligned in time (the filter delay is trimmed).
        let tone = |rate: f32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate).sin())
                .collect()
        };
        let out = run(48_000, 16_000, &tone(48_000.0, 48_000), &[480]);
        let want = tone(16_000.0, 16_000);
        assert_eq!(out.len(), want.len());
        // Within a sample of alignment (rubato reports its delay in whole
        // output frames) and at full level.
        let (a, b) = (&out[200..15_800], &want[200..15_800]);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let ea: f32 = a.iter().map(|x| x * x).sum();
        let eb: f32 = b.iter().map(|x| x * x).sum();
        let corr = dot / (ea * eb).sqrt();
        assert!(corr > 0.99, "correlation {corr}");
        assert!((ea / eb - 1.0).abs() < 0.05, "energy ratio {}", ea / eb);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn output_length_is_input_times_ratio(
            rates in prop::sample::select(vec![
                (48_000u32, 16_000u32), (44_100, 16_000), (16_000, 48_000),
                (24_000, 48_000), (22_050, 44_100), (8_000, 16_000), (16_000, 16_000),
                (22_050, 48_000), (44_100, 47_999),
            ]),
            len in 0usize..20_000,
            pieces in prop::collection::vec(1usize..2_000, 1..8),
        ) {
            let input: Vec<f32> = (0..len).map(|i| ((i * 7919) % 200) as f32 / 200.0 - 0.5).collect();
            let out = run(rates.0, rates.1, &input, &pieces);
            let expected = (len as f64 * f64::from(rates.1) / f64::from(rates.0)).round() as i64;
            prop_assert!((out.len() as i64 - expected).abs() <= 1,
                "{} in -> {} out, expected {}", len, out.len(), expected);
        }
    }
}
