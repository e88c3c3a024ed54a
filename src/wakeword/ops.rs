//! The int8 kernels the microWakeWord models use, with the quantized
//! arithmetic of TensorFlow Lite's reference kernels (fixed-point
//! multipliers, rounding and clamping as they do them), which is also what
//! TFLite-Micro runs on the microcontrollers these models were made for.
//! The reference the tests compare with, TFLite 2.17 on x86, runs the
//! depthwise convolutions through XNNPACK, which rescales in single
//! precision; measured against it layer by layer, that is what matches, so
//! depthwise layers do the same here (see [`Requant`]).

/// A real multiplier as a Q31 significand and a power-of-two exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Multiplier {
    significand: i32,
    shift: i32,
}

impl Multiplier {
    /// The closest representation of `m` (≥ 0), as TFLite rounds it.
    pub(crate) fn new(m: f64) -> Multiplier {
        if m <= 0.0 || !m.is_finite() {
            return Multiplier {
                significand: 0,
                shift: 0,
            };
        }
        let (q, mut shift) = frexp(m);
        let mut fixed = (q * (1i64 << 31) as f64).round() as i64;
        if fixed == 1i64 << 31 {
            fixed /= 2;
            shift += 1;
        }
        if shift < -31 {
            return Multiplier {
                significand: 0,
                shift: 0,
            };
        }
        if shift > 30 {
            return Multiplier {
                significand: i32::MAX,
                shift: 30,
            };
        }
        Multiplier {
            significand: fixed as i32,
            shift,
        }
    }

    /// `x` times the multiplier, rounded as TFLite's two-step rounding does.
    pub(crate) fn apply(self, x: i32) -> i32 {
        let left = self.shift.max(0);
        let right = (-self.shift).max(0);
        rounding_shift_right(high_mul(x.wrapping_mul(1 << left), self.significand), right)
    }
}

/// `m = q * 2^e` with `q` in [0.5, 1), for positive normal `m`.
fn frexp(m: f64) -> (f64, i32) {
    let bits = m.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first.
        let (q, e) = frexp(m * (1u64 << 54) as f64);
        return (q, e - 54);
    }
    let q = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (q, exp - 1022)
}

/// The high half of `2 * a * b`, rounded to nearest (gemmlowp's
/// saturating rounding doubling high multiply).
fn high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    // Division truncates toward zero, as in C.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// Divides by 2^`exponent`, rounding halves away from zero.
fn rounding_shift_right(x: i32, exponent: i32) -> i32 {
    if exponent == 0 {
        return x;
    }
    let mask = (1i32 << exponent) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// The clamp a fused activation gives in the quantized domain.
pub(crate) fn activation_range(
    act: u8,
    scale: f32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> Option<(i32, i32)> {
    let q = |v: f32| zero_point + (v / scale).round() as i32;
    match act {
        0 => Some((qmin, qmax)),
        1 => Some((qmin.max(q(0.0)), qmax)),
        2 => Some((qmin.max(q(-1.0)), qmax.min(q(1.0)))),
        3 => Some((qmin.max(q(0.0)), qmax.min(q(6.0)))),
        _ => None,
    }
}

/// How a layer brings its 32-bit accumulators back to 8 bits, per output
/// channel (or one entry for all): times input scale × filter scale /
/// output scale, plus the output zero point, clamped to the activation.
pub(crate) enum Requant {
    /// TFLite's fixed-point multipliers (its own kernels: convolutions and
    /// fully connected layers).
    Fixed(Vec<Multiplier>),
    /// Single precision, rounded half to even (XNNPACK, which the reference
    /// runtime hands depthwise convolutions to).
    Float(Vec<f32>),
}

impl Requant {
    fn apply(&self, channel: usize, acc: i32, zero_point: i32, (lo, hi): (i32, i32)) -> i8 {
        match self {
            Requant::Fixed(m) => {
                (m[channel.min(m.len() - 1)].apply(acc) + zero_point).clamp(lo, hi) as i8
            }
            Requant::Float(s) => {
                let (lo, hi) = ((lo - zero_point) as f32, (hi - zero_point) as f32);
                let v = (acc as f32 * s[channel.min(s.len() - 1)]).clamp(lo, hi);
                (v.round_ties_even() as i32 + zero_point) as i8
            }
        }
    }
}

/// A 2-D convolution or depthwise convolution over NHWC int8 tensors.
pub(crate) struct Conv {
    /// Input dims: batches, height, width, channels.
    pub(crate) input: [usize; 4],
    /// Output dims: batches, height, width, channels.
    pub(crate) output: [usize; 4],
    /// Filter height and width.
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) dilation: [usize; 2],
    pub(crate) padding: [usize; 2],
    /// `Some(multiplier)` for a depthwise convolution.
    pub(crate) depthwise: Option<usize>,
    pub(crate) input_offset: i32,
    pub(crate) output_offset: i32,
    /// Per output channel (or one for all): input scale × filter scale /
    /// output scale.
    pub(crate) requant: Requant,
    pub(crate) bias: Vec<i32>,
    pub(crate) range: (i32, i32),
}

impl Conv {
    /// Runs it; `filter` is OHWI (depthwise: 1HW(I*multiplier)).
    pub(crate) fn run(&self, input: &[i8], filter: &[i8], out: &mut [i8]) {
        let [batches, in_h, in_w, in_c] = self.input;
        let [_, out_h, out_w, out_c] = self.output;
        let [k_h, k_w] = self.kernel;
        let mut o = 0;
        for b in 0..batches {
            for oy in 0..out_h {
                for ox in 0..out_w {
                    for oc in 0..out_c {
                        let mut acc = 0i32;
                        for ky in 0..k_h {
                            let Some(iy) = (oy * self.stride[0] + ky * self.dilation[0])
                                .checked_sub(self.padding[0])
                            else {
                                continue;
                            };
                            if iy >= in_h {
                                continue;
                            }
                            for kx in 0..k_w {
                                let Some(ix) = (ox * self.stride[1] + kx * self.dilation[1])
                                    .checked_sub(self.padding[1])
                                else {
                                    continue;
                                };
                                if ix >= in_w {
                                    continue;
                                }
                                let pixel = ((b * in_h + iy) * in_w + ix) * in_c;
                                match self.depthwise {
                                    Some(m) => {
                                        let x = input[pixel + oc / m] as i32 + self.input_offset;
                                        let w = filter[(ky * k_w + kx) * out_c + oc] as i32;
                                        acc += w * x;
                                    }
                                    None => {
                                        let taps =
                                            &filter[((oc * k_h + ky) * k_w + kx) * in_c..][..in_c];
                                        for (&w, &x) in taps.iter().zip(&input[pixel..pixel + in_c])
                                        {
                                            acc += w as i32 * (x as i32 + self.input_offset);
                                        }
                                    }
                                }
                            }
                        }
                        acc = acc.wrapping_add(self.bias[oc]);
                        out[o] = self.requant.apply(oc, acc, self.output_offset, self.range);
                        o += 1;
                    }
                }
            }
        }
    }
}

/// A fully connected layer: `out[b][u] = Σ_d w[u][d] * in[b][d] + bias[u]`.
pub(crate) struct FullyConnected {
    pub(crate) batches: usize,
    pub(crate) depth: usize,
    pub(crate) units: usize,
    pub(crate) input_offset: i32,
    pub(crate) filter_offset: i32,
    pub(crate) output_offset: i32,
    /// Per output channel (or one for all): input scale × filter scale /
    /// output scale.
    pub(crate) requant: Requant,
    pub(crate) bias: Vec<i32>,
    pub(crate) range: (i32, i32),
}

impl FullyConnected {
    pub(crate) fn run(&self, input: &[i8], filter: &[i8], out: &mut [i8]) {
        for b in 0..self.batches {
            let x = &input[b * self.depth..][..self.depth];
            for u in 0..self.units {
                let w = &filter[u * self.depth..][..self.depth];
                let mut acc = 0i32;
                for (&w, &x) in w.iter().zip(x) {
                    acc += (w as i32 + self.filter_offset) * (x as i32 + self.input_offset);
                }
                acc = acc.wrapping_add(self.bias[u]);
                out[b * self.units + u] =
                    self.requant.apply(u, acc, self.output_offset, self.range);
            }
        }
    }
}

/// An 8-bit quantized type's range.
pub(crate) fn type_range(unsigned: bool) -> (i32, i32) {
    if unsigned { (0, 255) } else { (-128, 127) }
}

/// The logistic function as a table over every 8-bit input, computed in
/// single precision as TFLite's optimized kernel does; indexed by the raw
/// byte, holding the raw output byte.
pub(crate) fn logistic_table(input: (f32, i32, bool), output: (f32, i32, bool)) -> Box<[u8; 256]> {
    let (in_scale, in_zp, in_unsigned) = input;
    let (out_scale, out_zp, out_unsigned) = output;
    let (lo, hi) = type_range(out_unsigned);
    let inverse = 1.0 / out_scale;
    let mut table = Box::new([0u8; 256]);
    for byte in 0..=255u8 {
        let q = if in_unsigned {
            byte as i32
        } else {
            byte as i8 as i32
        };
        let x = in_scale * (q - in_zp) as f32;
        let y = 1.0 / (1.0 + (-x).exp());
        let v = ((y * inverse).round() + out_zp as f32) as i32;
        table[byte as usize] = v.clamp(lo, hi) as u8;
    }
    table
}

/// Re-quantizes 8-bit values from one scale and zero point to another.
pub(crate) struct Requantize {
    pub(crate) input: (i32, bool),
    pub(crate) output: (i32, bool),
    pub(crate) multiplier: Multiplier,
}

impl Requantize {
    pub(crate) fn run(&self, input: &[i8], out: &mut [i8]) {
        let (lo, hi) = type_range(self.output.1);
        for (o, &x) in out.iter_mut().zip(input) {
            let q = if self.input.1 {
                x as u8 as i32
            } else {
                x as i32
            };
            let v = self.multiplier.apply(q - self.input.0) + self.output.0;
            *o = v.clamp(lo, hi) as u8 as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_reproduce_their_real_value() {
        for m in [1.0, 0.5, 0.0037, 1.7e-4, 3.25] {
            let q = Multiplier::new(m);
            for x in [-100_000, -7, 0, 1, 12_345, 1 << 20] {
                let want = (x as f64 * m).round();
                let got = q.apply(x) as f64;
                assert!((got - want).abs() <= 1.0, "{x} * {m}: {got} vs {want}");
            }
        }
        assert_eq!(Multiplier::new(1.0).apply(-77), -77);
    }

    #[test]
    fn rounding_shift_rounds_halves_away_from_zero() {
        assert_eq!(rounding_shift_right(5, 1), 3);
        assert_eq!(rounding_shift_right(-5, 1), -3);
        assert_eq!(rounding_shift_right(4, 1), 2);
        assert_eq!(rounding_shift_right(-6, 2), -2);
    }

    #[test]
    fn logistic_table_is_a_sigmoid() {
        let t = logistic_table((0.1, 0, false), (1.0 / 256.0, -128, false));
        assert_eq!(t[0] as i8, 0, "sigmoid(0) = 0.5 → 128 - 128");
        assert_eq!(t[127] as i8, 127, "sigmoid(12.7) saturates");
        assert_eq!(t[128] as i8, -128, "sigmoid(-12.8) ≈ 0");
    }
}
