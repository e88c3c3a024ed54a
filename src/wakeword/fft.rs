//! The 16-bit fixed-point real FFT the TFLite-Micro front end uses (KISS FFT
//! built with `FIXED_POINT=16`). The models were trained on its exact output,
//! rounding included, so this reproduces its arithmetic step by step: every
//! stage divides by its radix, products round to nearest, sums wrap at 16
//! bits. Only radix-4 and radix-2 stages exist here, enough for the
//! power-of-two sizes the front end uses.

/// A complex number of two 16-bit fixed-point parts.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Cpx {
    pub(crate) re: i16,
    pub(crate) im: i16,
}

const FRAC_BITS: u32 = 15;
const SAMP_MAX: i32 = 32767;

/// Rounds a Q30 product back to Q15 (to nearest, halves up), then wraps to
/// 16 bits as the C cast does.
fn round_q15(x: i32) -> i16 {
    (x.wrapping_add(1 << (FRAC_BITS - 1)) >> FRAC_BITS) as i16
}

fn mul(a: Cpx, b: Cpx) -> Cpx {
    let (ar, ai, br, bi) = (a.re as i32, a.im as i32, b.re as i32, b.im as i32);
    Cpx {
        re: round_q15((ar * br).wrapping_sub(ai * bi)),
        im: round_q15((ar * bi).wrapping_add(ai * br)),
    }
}

/// Divides both parts by `k` the fixed-point way: times `32767 / k`, rounded.
fn fixdiv(c: Cpx, k: i32) -> Cpx {
    let f = SAMP_MAX / k;
    Cpx {
        re: round_q15(c.re as i32 * f),
        im: round_q15(c.im as i32 * f),
    }
}

fn add(a: Cpx, b: Cpx) -> Cpx {
    Cpx {
        re: a.re.wrapping_add(b.re),
        im: a.im.wrapping_add(b.im),
    }
}

fn sub(a: Cpx, b: Cpx) -> Cpx {
    Cpx {
        re: a.re.wrapping_sub(b.re),
        im: a.im.wrapping_sub(b.im),
    }
}

/// A unit phasor in Q15, rounded the way the reference builds its tables.
fn phasor(phase: f64) -> Cpx {
    let q = |v: f64| (0.5 + SAMP_MAX as f64 * v).floor() as i16;
    Cpx {
        re: q(phase.cos()),
        im: q(phase.sin()),
    }
}

/// A forward real FFT of a fixed power-of-two size; all buffers are made
/// once, so [`RealFft::run`] does not allocate.
pub(crate) struct RealFft {
    /// Size of the complex FFT inside (half the real size).
    n: usize,
    /// Radix of each stage, outermost first.
    radices: Vec<usize>,
    twiddles: Vec<Cpx>,
    super_twiddles: Vec<Cpx>,
    packed: Vec<Cpx>,
    spectrum: Vec<Cpx>,
}

impl RealFft {
    /// An FFT of `size` real samples; `size` is a power of two ≥ 4.
    pub(crate) fn new(size: usize) -> RealFft {
        assert!(
            size.is_power_of_two() && size >= 4,
            "FFT size {size} must be a power of two"
        );
        let n = size / 2;
        // Powers of four first, then one two if left: the reference's order.
        let mut radices = Vec::new();
        let mut rest = n;
        while rest > 1 {
            let p = if rest.is_multiple_of(4) { 4 } else { 2 };
            radices.push(p);
            rest /= p;
        }
        let pi = std::f64::consts::PI;
        let twiddles = (0..n)
            .map(|i| phasor(-2.0 * pi * i as f64 / n as f64))
            .collect();
        let super_twiddles = (0..n / 2)
            .map(|i| phasor(-pi * ((i + 1) as f64 / n as f64 + 0.5)))
            .collect();
        RealFft {
            n,
            radices,
            twiddles,
            super_twiddles,
            packed: vec![Cpx::default(); n],
            spectrum: vec![Cpx::default(); n + 1],
        }
    }

    /// Transforms `input` (exactly the FFT size) and returns the `size/2+1`
    /// bins, each scaled down by the size as the fixed-point stages do.
    pub(crate) fn run(&mut self, input: &[i16]) -> &[Cpx] {
        debug_assert_eq!(input.len(), 2 * self.n);
        let mut packed = std::mem::take(&mut self.packed);
        self.complex(&mut packed, input, 0, 1, 0);
        let n = self.n;
        let dc = fixdiv(packed[0], 2);
        self.spectrum[0] = Cpx {
            re: dc.re.wrapping_add(dc.im),
            im: 0,
        };
        self.spectrum[n] = Cpx {
            re: dc.re.wrapping_sub(dc.im),
            im: 0,
        };
        for k in 1..=n / 2 {
            let fpk = fixdiv(packed[k], 2);
            let mirror = packed[n - k];
            let fpnk = fixdiv(
                Cpx {
                    re: mirror.re,
                    im: mirror.im.wrapping_neg(),
                },
                2,
            );
            let f1 = add(fpk, fpnk);
            let f2 = sub(fpk, fpnk);
            let tw = mul(f2, self.super_twiddles[k - 1]);
            // The halving works on the full-width sum, before the 16-bit cast.
            let half = |x: i32| (x >> 1) as i16;
            let (f1r, f1i, twr, twi) = (f1.re as i32, f1.im as i32, tw.re as i32, tw.im as i32);
            self.spectrum[k] = Cpx {
                re: half(f1r + twr),
                im: half(f1i + twi),
            };
            self.spectrum[n - k] = Cpx {
                re: half(f1r - twr),
                im: half(twi - f1i),
            };
        }
        self.packed = packed;
        &self.spectrum
    }

    /// One decimation-in-time stage: `out[..len]` becomes the DFT of the
    /// complex input read from `input` (real pairs) at `start + j*stride`.
    fn complex(&self, out: &mut [Cpx], input: &[i16], start: usize, stride: usize, stage: usize) {
        let p = self.radices[stage];
        let m = out.len() / p;
        if m == 1 {
            for (q, o) in out.iter_mut().enumerate() {
                let at = 2 * (start + q * stride);
                *o = Cpx {
                    re: input[at],
                    im: input[at + 1],
                };
            }
        } else {
            for q in 0..p {
                self.complex(
                    &mut out[q * m..(q + 1) * m],
                    input,
                    start + q * stride,
                    stride * p,
                    stage + 1,
                );
            }
        }
        match p {
            4 => self.butterfly4(out, stride, m),
            _ => self.butterfly2(out, stride, m),
        }
    }

    fn butterfly2(&self, out: &mut [Cpx], stride: usize, m: usize) {
        for k in 0..m {
            let a = fixdiv(out[k], 2);
            let b = fixdiv(out[k + m], 2);
            let t = mul(b, self.twiddles[k * stride]);
            out[k + m] = sub(a, t);
            out[k] = add(a, t);
        }
    }

    fn butterfly4(&self, out: &mut [Cpx], stride: usize, m: usize) {
        for k in 0..m {
            let a0 = fixdiv(out[k], 4);
            let a1 = fixdiv(out[k + m], 4);
            let a2 = fixdiv(out[k + 2 * m], 4);
            let a3 = fixdiv(out[k + 3 * m], 4);
            let s0 = mul(a1, self.twiddles[k * stride]);
            let s1 = mul(a2, self.twiddles[2 * k * stride]);
            let s2 = mul(a3, self.twiddles[3 * k * stride]);
            let s5 = sub(a0, s1);
            let a0 = add(a0, s1);
            let s3 = add(s0, s2);
            let s4 = sub(s0, s2);
            out[k + 2 * m] = sub(a0, s3);
            out[k] = add(a0, s3);
            out[k + m] = Cpx {
                re: s5.re.wrapping_add(s4.im),
                im: s5.im.wrapping_sub(s4.re),
            };
            out[k + 3 * m] = Cpx {
                re: s5.re.wrapping_sub(s4.im),
                im: s5.im.wrapping_add(s4.re),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pure tone lands in its bin with the expected fixed-point size: the
    /// stages scale the sum by 1/size, so amplitude A gives about A/2 there.
    #[test]
    fn a_tone_lands_in_its_bin() {
        let size = 512;
        let bin = 37;
        let input: Vec<i16> = (0..size)
            .map(|i| {
                let ph = 2.0 * std::f64::consts::PI * bin as f64 * i as f64 / size as f64;
                (16000.0 * ph.cos()).round() as i16
            })
            .collect();
        let mut fft = RealFft::new(size);
        let out = fft.run(&input).to_vec();
        let mag = |c: Cpx| ((c.re as f64).powi(2) + (c.im as f64).powi(2)).sqrt();
        assert!((mag(out[bin]) - 8000.0).abs() < 40.0, "{:?}", out[bin]);
        let others = out
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != bin)
            .map(|(_, c)| mag(*c));
        assert!(others.fold(0.0, f64::max) < 8.0);
    }
}
