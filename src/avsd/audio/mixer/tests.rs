//! Unit tests of the mixer: gains, ramps, ducking, sources ending mid-buffer.

use super::*;

/// 1 kHz, so the ramp is 15 frames.
const RATE: u32 = 1_000;

fn constant(feed: &mut SourceFeed, value: f32, frames: usize) {
    assert_eq!(feed.push(&vec![value; frames]), frames, "room in the ring");
}

fn mixed(mixer: &mut Mixer, frames: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; frames];
    mixer.mix_mono(&mut out);
    out
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

#[test]
fn two_sources_are_summed_and_the_sum_is_clamped() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut a = handle.add(100, 1.0).expect("room");
    let mut b = handle.add(100, 1.0).expect("room");
    constant(&mut a, 0.25, 10);
    constant(&mut b, 0.5, 10);
    assert!(mixed(&mut mixer, 10).iter().all(|s| close(*s, 0.75)));
    constant(&mut a, 0.8, 10);
    constant(&mut b, 0.7, 10);
    assert!(mixed(&mut mixer, 10).iter().all(|s| *s == 1.0), "clamped");
    constant(&mut a, -0.8, 10);
    constant(&mut b, -0.7, 10);
    assert!(mixed(&mut mixer, 10).iter().all(|s| *s == -1.0), "clamped");
    assert_eq!(a.control().played_frames(), 30);
}

#[test]
fn each_source_has_its_own_gain() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut a = handle.add(100, 0.5).expect("room");
    let mut b = handle.add(100, DUCKED_GAIN).expect("room");
    constant(&mut a, 0.4, 20);
    constant(&mut b, 1.0, 20);
    let out = mixed(&mut mixer, 20);
    assert!(out.iter().all(|s| close(*s, 0.2 + 0.1)), "{out:?}");
}

#[test]
fn ducking_ramps_down_over_fifteen_ms_and_back_up() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut music = handle.add(200, 1.0).expect("room");
    constant(&mut music, 1.0, 200);
    assert!(mixed(&mut mixer, 5).iter().all(|s| *s == 1.0));

    music.control().set_gain(DUCKED_GAIN);
    let out = mixed(&mut mixer, 20);
    let ramp = RAMP_MS as usize; // frames at 1 kHz
    for (i, s) in out.iter().enumerate().take(ramp) {
        let expected = 1.0 - 0.9 * (i + 1) as f32 / ramp as f32;
        assert!(close(*s, expected), "frame {i}: {s} != {expected}");
    }
    assert!(
        out[..ramp].windows(2).all(|w| w[1] < w[0]),
        "falls steadily"
    );
    assert!(
        out[ramp - 1..].iter().all(|s| close(*s, DUCKED_GAIN)),
        "{out:?}"
    );

    // A ramp spans buffers.
    music.control().set_gain(1.0);
    let first = mixed(&mut mixer, 4);
    let rest = mixed(&mut mixer, 16);
    let out: Vec<f32> = first.into_iter().chain(rest).collect();
    for (i, s) in out.iter().enumerate().take(ramp) {
        let expected = DUCKED_GAIN + 0.9 * (i + 1) as f32 / ramp as f32;
        assert!(close(*s, expected), "frame {i}: {s} != {expected}");
    }
    assert!(out[ramp - 1..].iter().all(|s| *s == 1.0));
}

#[test]
fn a_source_ending_mid_buffer_leaves_the_others_and_silence() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut answer = handle.add(100, 1.0).expect("room");
    let mut music = handle.add(100, 1.0).expect("room");
    constant(&mut answer, 0.5, 10);
    answer.finish();
    constant(&mut music, 0.25, 20);
    let out = mixed(&mut mixer, 32);
    assert!(out[..10].iter().all(|s| close(*s, 0.75)), "{out:?}");
    assert!(out[10..20].iter().all(|s| close(*s, 0.25)), "{out:?}");
    assert!(out[20..].iter().all(|s| *s == 0.0), "{out:?}");
    assert!(answer.control().ended(), "the end is reported");
    assert_eq!(answer.control().played_frames(), 10);
    assert_eq!(answer.control().underruns(), 0, "an end is no underrun");
    assert!(
        !music.control().ended(),
        "still playing, only short of audio"
    );
    assert_eq!(music.control().underruns(), 1);
    assert!(answer.is_closed());
    assert_eq!(handle.collect(), 1, "the ended source was handed back");
}

#[test]
fn a_paused_source_fades_out_keeps_its_place_and_resumes() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut music = handle.add(200, 1.0).expect("room");
    let ramp: Vec<f32> = (0..100).map(|i| i as f32 / 1000.0).collect();
    assert_eq!(music.push(&ramp), 100);
    mixed(&mut mixer, 10);
    music.control().set_paused(true);
    let out = mixed(&mut mixer, 30);
    let fade = RAMP_MS as usize;
    assert!(out[fade..].iter().all(|s| *s == 0.0), "silent once faded");
    assert_eq!(music.control().played_frames(), 10 + fade as u64);
    assert_eq!(music.control().underruns(), 0, "a pause is no underrun");
    assert!(mixed(&mut mixer, 30).iter().all(|s| *s == 0.0));

    music.control().set_paused(false);
    let out = mixed(&mut mixer, 30);
    // It carries on with the sample after the fade, fading back in.
    let next = (10 + fade) as f32 / 1000.0;
    assert!(close(out[0], next / fade as f32), "{} vs {next}", out[0]);
    assert!(close(out[fade], (10 + 2 * fade) as f32 / 1000.0));
}

#[test]
fn stop_takes_the_source_out_at_once() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut a = handle.add(100, 1.0).expect("room");
    constant(&mut a, 0.5, 100);
    mixed(&mut mixer, 10);
    a.control().stop();
    assert!(mixed(&mut mixer, 10).iter().all(|s| *s == 0.0));
    assert!(a.control().ended());
    assert!(mixer.is_idle());
}

#[test]
fn at_most_max_sources_and_freed_ones_make_room() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let feeds: Vec<_> = (0..MAX_SOURCES)
        .map(|_| handle.add(10, 1.0).expect("room"))
        .collect();
    assert!(handle.add(10, 1.0).is_err(), "full");
    feeds[0].control().stop();
    mixed(&mut mixer, 1);
    assert!(handle.add(10, 1.0).is_ok(), "the stopped one made room");
}

#[test]
fn interleaved_integer_output_carries_the_mix_on_every_channel() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let mut a = handle.add(10_000, 1.0).expect("room");
    constant(&mut a, 0.5, 5_000);
    a.finish();
    // Longer than one internal block.
    let mut out = vec![7i16; 2 * 5_002];
    mixer.mix(&mut out, 2);
    assert!(out[..10_000].iter().all(|s| *s == 16_384));
    assert_eq!(&out[10_000..], &[0; 4]);
    assert!(a.control().ended());
}

#[test]
fn the_master_gain_scales_the_whole_mix_with_a_ramp() {
    let (mut mixer, mut handle) = Mixer::new(RATE);
    let master = MasterGain::default();
    mixer.set_master(master.clone());
    let mut a = handle.add(200, 1.0).expect("room");
    let mut b = handle.add(200, 1.0).expect("room");
    constant(&mut a, 0.25, 200);
    constant(&mut b, 0.25, 200);
    assert!(mixed(&mut mixer, 5).iter().all(|s| close(*s, 0.5)));
    master.set(0.2);
    let out = mixed(&mut mixer, 30);
    // Down in at most RAMP_MS, never below the target, then steady.
    assert!(out[0] < 0.5 && out[0] > 0.1, "{out:?}");
    assert!(out.windows(2).all(|w| w[1] <= w[0] + 1e-6), "{out:?}");
    assert!(
        out[RAMP_MS as usize..].iter().all(|s| close(*s, 0.1)),
        "{out:?}"
    );
    master.set(0.0);
    let out = mixed(&mut mixer, 30);
    assert!(out[RAMP_MS as usize..].iter().all(|s| *s == 0.0), "{out:?}");
}
