//! A missing or damaged model gives an error that names the file, says what
//! is wrong and how to fix it, and never a panic: avsd must keep running
//! (and Tap keep working) whatever is in the model path.
//!
//! Needs `AVSD_WAKEWORD_MODEL_DIR` (scripts/wakeword-model DIR; scripts/test
//! sets it up).

use std::path::{Path, PathBuf};

use wakeword::WakeWord;

fn models() -> PathBuf {
    let dir = std::env::var_os("AVSD_WAKEWORD_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!("AVSD_WAKEWORD_MODEL_DIR is not set: run `scripts/wakeword-model DIR` and export it (scripts/test does both)")
    });
    assert!(
        dir.join("alexa.tflite").is_file(),
        "no alexa.tflite in {}: run scripts/wakeword-model {}",
        dir.display(),
        dir.display()
    );
    dir
}

fn error(path: &Path) -> String {
    match WakeWord::open(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of alexa.json in `dir` pointing at `model`, written with `bytes`.
fn model_with(dir: &Path, bytes: &[u8]) -> PathBuf {
    let json = std::fs::read_to_string(models().join("alexa.json")).expect("read alexa.json");
    std::fs::write(dir.join("alexa.json"), json).expect("write json");
    std::fs::write(dir.join("alexa.tflite"), bytes).expect("write model");
    dir.join("alexa.json")
}

#[test]
fn the_real_models_load_by_json_or_by_tflite() {
    let dir = models();
    for name in ["alexa", "okay_nabu", "hey_jarvis", "hey_mycroft"] {
        let ww =
            WakeWord::open(&dir.join(format!("{name}.json"))).unwrap_or_else(|e| panic!("{e}"));
        assert!(ww.manifest().probability_cutoff > 0.5);
        WakeWord::open(&dir.join(format!("{name}.tflite"))).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        WakeWord::open(&dir.join("alexa.json"))
            .map(|w| w.manifest().wake_word.clone())
            .ok()
            .as_deref(),
        Some("Alexa")
    );
}

#[test]
fn a_missing_model_names_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let json = tmp.path().join("nowhere.json");
    let msg = error(&json);
    assert!(msg.contains(&json.display().to_string()), "{msg}");
    assert!(msg.contains("cannot read it"), "{msg}");
    assert!(
        msg.contains("scripts/wakeword-model") && msg.contains("/usr/share/avsd/"),
        "{msg}"
    );

    // The JSON is there, the model it names is not.
    let json = model_with(tmp.path(), b"");
    std::fs::remove_file(tmp.path().join("alexa.tflite")).expect("remove");
    let msg = error(&json);
    assert!(
        msg.contains(&tmp.path().join("alexa.tflite").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("cannot read it"), "{msg}");
}

#[test]
fn a_damaged_json_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let json = tmp.path().join("alexa.json");
    for text in [
        "",
        "{",
        "[]",
        r#"{"type": "micro"}"#,
        r#"{"type":"open","wake_word":"x","model":"m","micro":{"probability_cutoff":0.5,"sliding_window_size":5,"feature_step_size":10}}"#,
    ] {
        std::fs::write(&json, text).expect("write");
        let msg = error(&json);
        assert!(msg.contains(&json.display().to_string()), "{msg}");
        assert!(msg.contains("microWakeWord"), "{text:?}: {msg}");
    }
}

#[test]
fn a_damaged_model_is_an_error_never_a_panic() {
    let good = std::fs::read(models().join("alexa.tflite")).expect("read alexa.tflite");
    let tmp = tempfile::tempdir().expect("temp dir");
    let tflite = tmp.path().join("alexa.tflite").display().to_string();

    let msg = error(&model_with(tmp.path(), b"not a model at all"));
    assert!(
        msg.contains(&tflite) && msg.contains("not a TensorFlow Lite model"),
        "{msg}"
    );
    assert!(msg.contains("scripts/wakeword-model"), "{msg}");

    // Cut short anywhere: always refused with the file named.
    for len in (0..good.len()).step_by(211) {
        let msg = error(&model_with(tmp.path(), &good[..len]));
        assert!(msg.contains(&tflite), "cut at {len}: {msg}");
    }
    // Single damaged bytes anywhere: loading may succeed (a changed weight is
    // still a model), but must not panic, and a model that loads must run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = good.clone();
        let at = (seed % bytes.len() as u64) as usize;
        bytes[at] ^= 1 << (seed >> 60 & 7);
        if let Ok(mut ww) = WakeWord::open(&model_with(tmp.path(), &bytes)) {
            ww.process(&[0i16; 4000], |_| {});
        }
    }
}
