//! The canceller against a room made here: a delay, an attenuation and a
//! reverberant tail, all deterministic, so ERLE (echo return loss
//! enhancement: how much weaker the echo is after the canceller) is the
//! same on every run.

use super::*;

/// A deterministic pseudo-random source (xorshift32), in -1..1.
struct Noise(u32);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 as f32 / u32::MAX as f32) * 2.0 - 1.0
    }
}

/// Speech-like far end: noise coloured towards low frequencies (a
/// resonance near 500 Hz) and chopped into 4 Hz syllables.
fn speechlike(seed: u32, n: usize) -> Vec<f32> {
    let mut noise = Noise(seed);
    let (mut y1, mut y2) = (0.0f32, 0.0f32);
    (0..n)
        .map(|i| {
            let x = noise.next();
            // Two poles at 500 Hz, radius 0.95.
            let y = x + 1.8 * 0.95 * (2.0 * std::f32::consts::PI * 500.0 / 16_000.0).cos() * y1
                - 0.95 * 0.95 * y2;
            (y2, y1) = (y1, y);
            let syllable = (i as f32 / 16_000.0 * 4.0 * std::f32::consts::TAU)
                .sin()
                .abs();
            y * 0.02 * (0.2 + syllable)
        })
        .collect()
}

/// The room: 75 ms of delay, -6 dB, and 50 ms of decaying reflections.
fn room() -> Vec<f32> {
    let delay = 1_200;
    let mut ir = vec![0.0f32; delay + 800];
    ir[delay] = 0.5;
    let mut noise = Noise(7);
    for (i, tap) in ir[delay + 1..].iter_mut().enumerate() {
        *tap = noise.next() * 0.15 * (-(i as f32) / 200.0).exp();
    }
    ir
}

fn convolve(x: &[f32], ir: &[f32]) -> Vec<f32> {
    (0..x.len())
        .map(|n| {
            ir.iter()
                .enumerate()
                .take(n + 1)
                .map(|(k, h)| h * x[n - k])
                .sum()
        })
        .collect()
}

/// Runs the canceller over `far` and `near`, block by block.
fn cancel(aec: &mut EchoCanceller, far: &[f32], near: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; near.len()];
    for ((f, n), o) in far
        .chunks_exact(BLOCK)
        .zip(near.chunks_exact(BLOCK))
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let (f, n) = (f.try_into().unwrap(), n.try_into().unwrap());
        aec.process(f, n, o.try_into().unwrap());
    }
    out
}

fn db(num: &[f32], den: &[f32]) -> f64 {
    let p = |x: &[f32]| x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>();
    10.0 * (p(num) / p(den)).log10()
}

#[test]
fn erle_through_a_reverberant_room() {
    let seconds = 8;
    let far = speechlike(1, 16_000 * seconds);
    let echo = convolve(&far, &room());
    let mut aec = EchoCanceller::new(16);
    let out = cancel(&mut aec, &far, &echo);
    let second = |s: usize| 16_000 * s..16_000 * (s + 1);
    let erle: Vec<f64> = (0..seconds)
        .map(|s| db(&echo[second(s)], &out[second(s)]))
        .collect();
    println!("ERLE per second (dB): {erle:.1?}");
    assert!(erle[1] > 10.0, "learns the room within 2 s: {erle:.1?}");
    assert!(
        erle[seconds - 1] > 25.0,
        "at least 25 dB once converged: {erle:.1?}"
    );
}

#[test]
fn double_talk_neither_cancels_the_talker_nor_unlearns_the_room() {
    let far = speechlike(1, 16_000 * 10);
    let echo = convolve(&far, &room());
    // A talker from 5 s to 6 s, as loud as the echo is before cancelling.
    let talk = speechlike(99, 16_000);
    let mut near = echo.clone();
    for (n, t) in near[80_000..96_000].iter_mut().zip(&talk) {
        *n += t * 2.0;
    }
    let mut aec = EchoCanceller::new(16);
    let out = cancel(&mut aec, &far, &near);
    // What came out while talking is mostly the talker.
    let talker: Vec<f32> = talk.iter().map(|t| t * 2.0).collect();
    let diff: Vec<f32> = out[80_000..96_000]
        .iter()
        .zip(&talker)
        .map(|(o, t)| o - t)
        .collect();
    println!(
        "ERLE before the talker: {:.1} dB",
        db(&echo[64_000..80_000], &out[64_000..80_000])
    );
    let snr = db(&talker, &diff);
    let after = db(&echo[128_000..], &out[128_000..]);
    println!(
        "talker kept at {snr:.1} dB over what is left of the echo; ERLE after: {after:.1} dB; {:?}",
        aec.stats()
    );
    assert!(snr > 15.0, "the talker passes: {snr:.1} dB");
    assert!(after > 20.0, "the room is still known after: {after:.1} dB");
    assert!(aec.stats().double_talk_blocks >= 50, "{:?}", aec.stats());
}

#[test]
fn silence_in_silence_out_and_no_far_end_passes_the_microphone() {
    let mut aec = EchoCanceller::new(4);
    let near = speechlike(3, 16_000);
    let out = cancel(&mut aec, &vec![0.0; 16_000], &near);
    assert_eq!(out, near, "nothing to cancel: the microphone as it was");
    aec.reset();
    assert_eq!(aec.span(), 640);
}

#[test]
fn cpu_per_second_of_audio() {
    // A figure for the report, not a pass mark: printed only. 30
    // partitions as avsd runs it (300 ms of echo path), converging.
    let seconds = 10;
    let far = speechlike(1, 16_000 * seconds);
    let near = convolve(&far[..16_000 * 2], &room());
    let mut near = near;
    near.resize(far.len(), 0.0);
    let mut aec = EchoCanceller::new(30);
    let started = std::time::Instant::now();
    let _ = cancel(&mut aec, &far, &near);
    let per_second = started.elapsed() / seconds as u32;
    println!("30 partitions (300 ms): {per_second:?} of CPU per second of audio");
}

/// Speech with pauses between phrases (0.6 s on, 0.4 s off).
fn phrases(seed: u32, n: usize) -> Vec<f32> {
    let mut x = speechlike(seed, n);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 16_000 >= 9_600 {
            *v = 0.0;
        }
    }
    x
}

#[test]
fn a_long_delay_and_phrases_with_pauses() {
    let seconds = 8;
    let far = phrases(5, 16_000 * seconds);
    let mut ir = vec![0.0f32; 1_600];
    ir.extend(room());
    let echo = convolve(&far, &ir);
    let mut aec = EchoCanceller::new(30);
    let out = cancel(&mut aec, &far, &echo);
    let second = |s: usize| 16_000 * s..16_000 * (s + 1);
    let erle: Vec<f64> = (0..seconds)
        .map(|s| db(&echo[second(s)], &out[second(s)]))
        .collect();
    println!(
        "ERLE per second, 200 ms away, with pauses (dB): {erle:.1?}; {:?}",
        aec.stats()
    );
    assert!(erle[3] > 15.0, "{erle:.1?}");
}
