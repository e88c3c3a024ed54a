//! The sound an alert rings with, made here in code so that it plays with
//! no network and no file: a bright two-tone beep pattern (a timer beeps
//! faster than an alarm; a reminder chimes once per loop). Made at the
//! output's rate, so nothing is resampled.

use std::f32::consts::TAU;

use avs_proto::message::AlertType;

use crate::audio::PcmSource;

/// The longest an alert rings with no loop count: the documentation's
/// hour.
pub const MAX_RING_MS: u64 = 60 * 60 * 1000;

/// Samples made per call: 20 ms at 48 kHz, ahead of the ring by little.
const BLOCK_MS: u64 = 20;
/// Peak amplitude: loud, yet room below full scale for the mixer.
const LEVEL: f32 = 0.5;

/// One loop of an alert's pattern: (frequency in Hz or 0 for silence,
/// milliseconds).
fn pattern(kind: AlertType) -> &'static [(f32, u64)] {
    match kind {
        AlertType::Timer => &[
            (1760.0, 120),
            (0.0, 80),
            (1760.0, 120),
            (0.0, 80),
            (1760.0, 120),
            (0.0, 80),
            (1760.0, 120),
            (0.0, 480),
        ],
        AlertType::Alarm => &[
            (880.0, 250),
            (1320.0, 250),
            (0.0, 100),
            (880.0, 250),
            (1320.0, 250),
            (0.0, 400),
        ],
        AlertType::Reminder => &[(1047.0, 200), (1319.0, 200), (1568.0, 400), (0.0, 700)],
    }
}

/// How long one loop of `kind`'s pattern lasts.
pub fn loop_ms(kind: AlertType) -> u64 {
    pattern(kind).iter().map(|(_, ms)| ms).sum()
}

/// The alert's sound: `loops` plays of the pattern (`None`: until
/// [`MAX_RING_MS`]) with `pause_ms` of silence between two plays, never
/// longer than [`MAX_RING_MS`].
pub fn source(kind: AlertType, loops: Option<u32>, pause_ms: u64) -> PcmSource {
    let steps = pattern(kind);
    let mut step = 0usize;
    let mut step_pos: u64 = 0; // samples into the step
    let mut loop_no: u32 = 0;
    let mut pausing: u64 = 0; // samples of pause left
    let mut phase = 0f32;
    let mut made: u64 = 0;
    Box::new(move |rate: u32, out: &mut Vec<f32>| {
        let rate64 = u64::from(rate);
        let max = MAX_RING_MS * rate64 / 1000;
        let block = BLOCK_MS * rate64 / 1000;
        for _ in 0..block {
            if made >= max || loops.is_some_and(|n| loop_no >= n) {
                return false;
            }
            made += 1;
            if pausing > 0 {
                pausing -= 1;
                out.push(0.0);
                continue;
            }
            let (freq, ms) = steps[step];
            let len = ms * rate64 / 1000;
            let sample = if freq > 0.0 {
                // A short fade at both ends of a beep keeps it from clicking.
                let fade = (rate64 / 200).max(1); // 5 ms
                let edge = step_pos.min(len.saturating_sub(step_pos + 1));
                let env = (edge as f32 / fade as f32).min(1.0);
                phase = (phase + TAU * freq / rate as f32) % TAU;
                LEVEL * env * phase.sin()
            } else {
                0.0
            };
            out.push(sample);
            step_pos += 1;
            if step_pos >= len {
                step_pos = 0;
                step += 1;
                if step == steps.len() {
                    step = 0;
                    loop_no += 1;
                    pausing = pause_ms * rate64 / 1000;
                }
            }
        }
        !(made >= max || loops.is_some_and(|n| loop_no >= n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(mut s: PcmSource, rate: u32) -> Vec<f32> {
        let mut out = Vec::new();
        while s(rate, &mut out) {
            assert!(out.len() < rate as usize * 3600, "never ends");
        }
        out
    }

    #[test]
    fn loops_and_pauses_add_up() {
        let rate = 16_000;
        let once = render(source(AlertType::Timer, Some(1), 0), rate);
        let per_loop = loop_ms(AlertType::Timer) * 16;
        assert_eq!(once.len() as u64, per_loop);
        let three = render(source(AlertType::Timer, Some(3), 500), rate);
        // The pause falls between plays, not after the last.
        assert_eq!(three.len() as u64, 3 * per_loop + 2 * 500 * 16);
        assert!(once.iter().all(|s| s.abs() <= LEVEL));
        assert!(once.iter().any(|s| s.abs() > LEVEL * 0.9), "it is loud");
    }

    #[test]
    fn without_a_loop_count_it_stops_after_an_hour() {
        let rate = 100; // an hour at 100 Hz is quick to make
        let out = render(source(AlertType::Alarm, None, 0), rate);
        assert_eq!(out.len() as u64, MAX_RING_MS / 10);
    }
}
