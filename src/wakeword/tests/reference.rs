//! The Rust engine against the reference, pymicro-wakeword 2.5.0 (TFLite and
//! the TFLite-Micro front end, in the virtualenv scripts/wakeword-reference
//! makes): over the same speech, the features must be identical, every
//! model probability within 0.01, and the detections at the same frames.
//!
//! Needs, as scripts/test sets them up:
//! - `AVSD_WAKEWORD_MODEL_DIR`: the models (scripts/wakeword-model DIR);
//! - `AVSD_WAKEWORD_REFERENCE`: the virtualenv (scripts/wakeword-reference DIR);
//! - espeak-ng and sox (scripts/test-audio-deps).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use wakeword::{Event, WakeWord};

fn env_dir(var: &str, script: &str) -> PathBuf {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run `scripts/{script} DIR` and export {var}=DIR (scripts/test does both)")
    });
    assert!(
        dir.is_dir(),
        "{var}={} is not a directory: run `scripts/{script} {}`",
        dir.display(),
        dir.display()
    );
    dir
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot start {cmd:?}: {e} (install it: scripts/test-audio-deps)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speaks `text` into 16 kHz mono s16le raw audio, with `sox_effects`
/// (e.g. a gain) applied; silence before and after, as a room would have.
fn speak(
    dir: &Path,
    name: &str,
    voice: &str,
    speed: u32,
    text: &str,
    sox_effects: &[&str],
) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let raw = dir.join(format!("{name}.raw"));
    run(Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "-w"])
        .arg(&wav)
        .arg(text));
    run(Command::new("sox")
        .arg(&wav)
        .arg("-D")
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .args(["pad", "0.5", "0.7"])
        .args(sox_effects));
    raw
}

fn samples(raw: &Path) -> Vec<i16> {
    let bytes = std::fs::read(raw).expect("read the test audio");
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

struct Run {
    features: Vec<Vec<u64>>,
    /// Per model call: last frame index, probability, mean (0 until full).
    inferences: Vec<(usize, f64, f64)>,
    detections: Vec<usize>,
}

fn reference(venv: &Path, json: &Path, raw: &Path) -> (Run, f64) {
    let out = Command::new(venv.join("bin/python"))
        .arg(venv.join("run.py"))
        .arg(json)
        .arg(raw)
        .output()
        .expect("start the reference's python");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("reference output is JSON");
    let cutoff = v["cutoff"].as_f64().expect("cutoff");
    let features = v["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_u64().expect("integer"))
                .collect()
        })
        .collect();
    let mut inferences = Vec::new();
    let mut detections = Vec::new();
    let mut above = false;
    for i in v["inferences"].as_array().expect("inferences") {
        let frame = i["frame"].as_u64().expect("frame") as usize;
        let mean = i["mean"].as_f64().expect("mean");
        inferences.push((frame, i["probability"].as_f64().expect("probability"), mean));
        // pymicro-wakeword says "detected" on every call above the cutoff;
        // one word is the first call of such a run.
        if mean > cutoff && !above {
            detections.push(frame);
        }
        above = mean > cutoff;
    }
    (
        Run {
            features,
            inferences,
            detections,
        },
        cutoff,
    )
}

/// The engine over `audio`, fed in uneven chunks as a capture thread would.
fn engine(json: &Path, audio: &[i16]) -> Run {
    let mut ww = WakeWord::open(json).unwrap_or_else(|e| panic!("{e}"));
    let mut run = Run {
        features: Vec::new(),
        inferences: Vec::new(),
        detections: Vec::new(),
    };
    let sizes = [1usize, 160, 7, 1024, 333, 2048];
    let mut at = 0;
    for n in sizes.iter().cycle() {
        if at >= audio.len() {
            break;
        }
        let end = (at + n).min(audio.len());
        ww.process(&audio[at..end], |ev| match ev {
            Event::Features { values, .. } => run
                .features
                .push(values.iter().map(|&v| v as u64).collect()),
            Event::Inference {
                probability, mean, ..
            } => run.inferences.push((
                run.features.len() - 1,
                probability as f64,
                mean.unwrap_or(0.0),
            )),
            Event::Detected(d) => {
                // The end sample is where the last frame's window ends.
                assert_eq!(d.end_sample, 480 + 160 * (run.features.len() as u64 - 1));
                run.detections.push(run.features.len() - 1)
            }
        });
        at = end;
    }
    run
}

/// How many model outputs were compared and how many were identical.
#[derive(Default)]
struct Tally {
    calls: usize,
    identical: usize,
}

fn compare(model: &str, clip: &str, want: &Run, got: &Run, tally: &mut Tally) {
    assert_eq!(
        got.features.len(),
        want.features.len(),
        "{model} {clip}: number of frames"
    );
    for (i, (g, w)) in got.features.iter().zip(&want.features).enumerate() {
        assert_eq!(g, w, "{model} {clip}: features of frame {i}");
    }
    assert_eq!(
        got.inferences.len(),
        want.inferences.len(),
        "{model} {clip}: number of model calls"
    );
    for ((gf, gp, gm), (wf, wp, wm)) in got.inferences.iter().zip(&want.inferences) {
        assert_eq!(gf, wf, "{model} {clip}: frames per model call");
        // The probability pymicro-wakeword reports per frame, and compares
        // with the cutoff, is the sliding-window mean.
        assert!(
            (gm - wm).abs() <= 0.01,
            "{model} {clip} frame {gf}: probability {gm} vs reference {wm}"
        );
        // One model output: the reference's XNNPACK kernels round a few
        // intermediate values differently, which can move the last layer by
        // one step (at most 16/256 on the sigmoid's steepest part).
        assert!(
            (gp - wp).abs() <= 16.0 / 256.0,
            "{model} {clip} frame {gf}: model output {gp} vs reference {wp}"
        );
        tally.calls += 1;
        tally.identical += usize::from(gp == wp);
    }
    assert_eq!(
        got.detections, want.detections,
        "{model} {clip}: detection frames"
    );
}

#[test]
fn engine_matches_pymicro_wakeword() {
    let models = env_dir("AVSD_WAKEWORD_MODEL_DIR", "wakeword-model");
    let venv = env_dir("AVSD_WAKEWORD_REFERENCE", "wakeword-reference");
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path();
    let alexa = [
        speak(
            d,
            "alexa-time",
            "en-us",
            160,
            "Alexa, what time is it?",
            &[],
        ),
        speak(
            d,
            "alexa-weather-gb",
            "en-gb",
            140,
            "Alexa. What's the weather like today?",
            &["gain", "-12"],
        ),
        speak(
            d,
            "alexa-fast-f",
            "en-us+f3",
            200,
            "Alexa, stop.",
            &["gain", "-6"],
        ),
    ];
    let other = [
        speak(
            d,
            "news",
            "en-us",
            175,
            "The council met on Tuesday to discuss the new budget for the library, \
            the swimming pool and the roads. Most members agreed that repairs come first.",
            &[],
        ),
        speak(
            d,
            "recipe-gb",
            "en-gb+m3",
            150,
            "Preheat the oven, then mix the flour, sugar and butter \
            until the dough is smooth. Bake for twenty minutes.",
            &["gain", "-10"],
        ),
        speak(
            d,
            "noisy-alexa",
            "en-us",
            160,
            "Alexa, turn on the lights.",
            &["synth", "whitenoise", "mix", "gain", "-20"],
        ),
    ];
    let mut tally = Tally::default();
    let mut alexa_detections = 0;
    let mut other_detections = 0;
    for model in ["alexa", "okay_nabu", "hey_jarvis", "hey_mycroft"] {
        let json = models.join(format!("{model}.json"));
        for clip in alexa.iter().chain(&other) {
            let name = clip.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            let (want, _cutoff) = reference(&venv, &json, clip);
            // The reference casts out-of-range inputs to int8 with wrap-around
            // where the engine saturates: only in-range audio compares.
            let top = want.features.iter().flatten().max().copied().unwrap_or(0);
            assert!(
                top <= 666,
                "{name}: a feature of {top} overflows the model's input; lower the test audio's level"
            );
            let got = engine(&json, &samples(clip));
            compare(model, name, &want, &got, &mut tally);
            if model == "alexa" {
                if alexa.contains(clip) {
                    alexa_detections += got.detections.len();
                } else if name != "noisy-alexa" {
                    other_detections += got.detections.len();
                }
            }
        }
    }
    eprintln!(
        "{} of {} model outputs identical to the reference",
        tally.identical, tally.calls
    );
    assert!(
        tally.identical * 100 >= tally.calls * 98,
        "only {} of {} model outputs are identical to the reference",
        tally.identical,
        tally.calls
    );
    // The comparison must have covered detections, or it proves little.
    assert!(
        alexa_detections >= 2,
        "the alexa model woke on {alexa_detections} of 3 spoken \"Alexa\"s"
    );
    assert_eq!(
        other_detections, 0,
        "the alexa model woke on speech without \"Alexa\""
    );
}
