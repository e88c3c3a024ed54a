//! The mel filterbank of the TFLite-Micro front end: triangular channels on
//! the FFT's energy with 12-bit weights, summed in 64 bits, then an integer
//! square root. The weights come from single-precision maths as in the
//! reference, so the same bins get the same integers.

use crate::fft::Cpx;

const WEIGHT_BITS: u32 = 12;

fn freq_to_mel(freq: f32) -> f32 {
    1127.0 * (freq / 700.0).ln_1p()
}

/// One band: the first FFT bin it reads and its weights (the rising side
/// for this channel, `1 - weight` for the next one).
struct Band {
    start: usize,
    weights: Vec<u64>,
    unweights: Vec<u64>,
}

pub(crate) struct Filterbank {
    bands: Vec<Band>,
    /// The bins any band reads: `first..end`.
    first: usize,
    end: usize,
    energy: Vec<i32>,
    work: Vec<u64>,
    out: Vec<u32>,
}

impl Filterbank {
    /// `channels` mel channels between `lower` and `upper` Hz on a spectrum
    /// of `bins` bins at `sample_rate`.
    pub(crate) fn new(
        channels: usize,
        lower: f32,
        upper: f32,
        sample_rate: u32,
        bins: usize,
    ) -> Self {
        // One band more than channels: the first only feeds the second's
        // falling side and is dropped at the end.
        let n = channels + 1;
        let mel_low = freq_to_mel(lower);
        let spacing = (freq_to_mel(upper) - mel_low) / n as f32;
        let centers: Vec<f32> = (0..n).map(|i| mel_low + spacing * (i + 1) as f32).collect();
        let hz_per_bin = 0.5 * sample_rate as f32 / (bins as f32 - 1.0);
        // The DC bin is never used.
        let first = (1.5 + lower / hz_per_bin) as usize;
        let mut bands = Vec::with_capacity(n);
        let mut start = first;
        for (chan, &center) in centers.iter().enumerate() {
            let mut end = start;
            while freq_to_mel(end as f32 * hz_per_bin) <= center {
                end += 1;
            }
            let below = if chan == 0 {
                mel_low
            } else {
                centers[chan - 1]
            };
            let (mut weights, mut unweights) = (Vec::new(), Vec::new());
            for bin in start..end {
                let w = (center - freq_to_mel(bin as f32 * hz_per_bin)) / (center - below);
                let q = |v: f32| (v * (1 << WEIGHT_BITS) as f32 + 0.5).floor() as i16 as i64 as u64;
                weights.push(q(w));
                unweights.push(q(1.0 - w));
            }
            bands.push(Band {
                start,
                weights,
                unweights,
            });
            start = end;
        }
        let end = bands
            .iter()
            .map(|b| b.start + b.weights.len())
            .max()
            .unwrap_or(first);
        assert!(
            end < bins,
            "filterbank reaches past the spectrum: upper band limit too high"
        );
        Filterbank {
            bands,
            first,
            end,
            energy: vec![0; bins],
            work: vec![0; n],
            out: vec![0; channels],
        }
    }

    /// The channel amplitudes of one spectrum, shifted down by `shift`.
    pub(crate) fn apply(&mut self, spectrum: &[Cpx], shift: u32) -> &mut [u32] {
        let bins = self.first..self.end;
        for (energy, c) in self.energy[bins.clone()].iter_mut().zip(&spectrum[bins]) {
            let (re, im) = (c.re as i32, c.im as i32);
            // Squared magnitudes wrap into a signed 32-bit slot as in the
            // reference (only ±32768 on both parts can reach the sign bit).
            *energy = (re * re).wrapping_add(im * im);
        }
        let mut carried = 0u64;
        for (band, work) in self.bands.iter().zip(self.work.iter_mut()) {
            let mut acc = carried;
            let mut next = 0u64;
            for (j, (&w, &u)) in band.weights.iter().zip(&band.unweights).enumerate() {
                let e = self.energy[band.start + j] as i64 as u64;
                acc = acc.wrapping_add(w.wrapping_mul(e));
                next = next.wrapping_add(u.wrapping_mul(e));
            }
            *work = acc;
            carried = next;
        }
        for (out, &work) in self.out.iter_mut().zip(&self.work[1..]) {
            *out = sqrt64(work) >> shift;
        }
        &mut self.out
    }
}

/// The reference's rounded integer square root: rounds up when the
/// remainder exceeds the root, unless that would overflow its width; values
/// below 2^32 take the 16-bit path.
fn sqrt64(num: u64) -> u32 {
    if num >> 32 == 0 {
        let num = num as u32;
        let root = num.isqrt();
        let rem = num - root * root;
        return if rem > root && root != 0xFFFF {
            root + 1
        } else {
            root
        };
    }
    let root = num.isqrt();
    let rem = num - root * root;
    (if rem > root && root != 0xFFFF_FFFF {
        root + 1
    } else {
        root
    }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_roots_round_to_nearest() {
        assert_eq!(sqrt64(0), 0);
        assert_eq!(sqrt64(16), 4);
        assert_eq!(sqrt64(20), 4); // 4.47
        assert_eq!(sqrt64(21), 5); // 4.58
        assert_eq!(sqrt64(1 << 40), 1 << 20);
        assert_eq!(sqrt64(u32::MAX as u64), 0xFFFF);
    }

    #[test]
    fn bands_tile_the_spectrum_in_order() {
        let fb = Filterbank::new(40, 125.0, 7500.0, 16000, 257);
        assert_eq!(fb.bands.len(), 41);
        assert_eq!(
            fb.first, 5,
            "125 Hz at 31.25 Hz per bin, rounded up past DC"
        );
        for pair in fb.bands.windows(2) {
            assert_eq!(pair[0].start + pair[0].weights.len(), pair[1].start);
        }
        assert!(fb.end <= 241, "7500 Hz is bin 240");
    }
}
