//! Talking to avsd end to end: the real daemon captures speech through real
//! ALSA (FIFO-backed PCMs), streams it to `avs-sim avs` in a Recognize, and
//! plays the spoken answer back through real ALSA, driven over D-Bus. Each
//! test checks the Dialog.State sequence seen through PropertiesChanged.

use std::path::Path;

use serde_json::Value;
use support::audio::{
    active_span, best_correlation, decimate, path_str, reference_16k, s16le, tool,
};
use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker, keep, speech_raw, speech16};

const MIC16: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

/// A rig with the 16 kHz microphone and the speaker, its FIFOs fed and
/// drained, and the stand-in's dialog set by `knobs` (a `/dialog` query;
/// empty for its defaults).
async fn talking(extra_audio: &str, knobs: &str) -> (Rig, Mic, Speaker) {
    let rig = Rig::start(&format!("{MIC16}{extra_audio}")).await;
    let mic = Mic::new(&rig.path("mic.fifo"), 320);
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    if !knobs.is_empty() {
        rig.avs.post(&format!("/dialog?{knobs}")).await;
    }
    (rig, mic, speaker)
}

/// The stand-in ends a request after this much silence following speech.
const END_OF_SPEECH: &str = "end_of_speech_ms=500&stop_capture_ms=10000";

fn event_names(stats: &Value) -> Vec<String> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .filter(|n| !n.starts_with("Alexa.Discovery") && n != "System.SynchronizeState")
        .collect()
}

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            format!("{name}: {}", msg.as_deref().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

/// The answer MP3 avs-sim speaks, decoded by sox to 16 kHz mono.
fn answer_reference(dir: &Path) -> Vec<f32> {
    let out = dir.join("answer_ref.raw");
    let mp3 = support::repo().join("tests/fixtures/answer.mp3");
    tool(
        "sox",
        &[
            path_str(&mp3),
            "-r",
            "16000",
            "-c",
            "1",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-L",
            "-t",
            "raw",
            path_str(&out),
        ],
    );
    s16le(&std::fs::read(out).unwrap())
}

/// The left channel of 48 kHz stereo i16, brought to 16 kHz.
fn speaker_to_16k(bytes: &[u8]) -> Vec<f32> {
    let samples = s16le(bytes);
    let left: Vec<f32> = samples.chunks_exact(2).map(|f| f[0]).collect();
    decimate(&left, 3)
}

/// Compare the speech in `ours` with `reference` (both 16 kHz): the length
/// of the active span and the correlation once the spans are aligned.
fn assert_same_speech(what: &str, ours: &[f32], reference: &[f32], threshold: f32) {
    let (of, ol) = active_span(ours, threshold).unwrap_or_else(|| panic!("{what}: silence"));
    let (rf, rl) = active_span(reference, threshold).expect("speech in the reference");
    let (ours_len, ref_len) = ((ol - of) as f64, (rl - rf) as f64);
    println!("{what}: speech spans {ours_len} samples (reference {ref_len})");
    assert!(
        (ours_len / ref_len - 1.0).abs() < 0.05,
        "{what}: length within 5% ({ours_len} vs {ref_len})"
    );
    let a = decimate(&ours[of.saturating_sub(800)..=ol], 2);
    let b = decimate(&reference[rf.saturating_sub(800)..=rl], 2);
    let (corr, lag) = best_correlation(&a, &b, 400);
    println!("{what}: correlation with the reference {corr:.3} at lag {lag}");
    assert!(
        corr > 0.8,
        "{what}: the same sound, not garbled ({corr:.3})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_streams_the_question_and_plays_the_answer() {
    let rig = Rig::start(
        "capture_device = \"mic48\"\ncapture_format = \"f32:48000:2\"\n\
         playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n",
    )
    .await;
    let dir = rig.dir.path();
    let f32_48k = ["-r", "48000", "-c", "2", "-e", "floating-point", "-b", "32"];
    let question = speech_raw(dir, "q", "what time is it in Tokyo", &f32_48k);
    let raw48 = dir.join("q.raw");
    let ref16 = dir.join("q16.raw");
    reference_16k(&raw48, &ref16);
    let reference = s16le(&std::fs::read(&ref16).unwrap());
    let mic = Mic::new(&rig.path("mic48.fifo"), 3840);
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    rig.avs.post(&format!("/dialog?{END_OF_SPEECH}")).await;

    rig.dialog.tap().await.expect("Tap");
    let _said = mic.say(question);
    rig.wait_state("idle", 1).await;
    assert_eq!(
        rig.state_log(),
        ["idle", "listening", "thinking", "speaking", "idle"]
    );

    let stats = rig.avs_wait("event=SpeechSynthesizer.SpeechFinished").await;
    assert_eq!(
        event_names(&stats),
        [
            "SpeechRecognizer.Recognize",
            "SpeechSynthesizer.SpeechStarted",
            "SpeechSynthesizer.SpeechFinished"
        ],
        "{stats:#}"
    );
    let rec = &stats["recognizes"][0];
    assert_eq!(rec["profile"], "NEAR_FIELD", "{rec:#}");
    assert_eq!(rec["initiator"], serde_json::json!({"type": "TAP"}));
    assert_eq!(rec["outcome"], "speak", "{rec:#}");
    let first_audio = rec["first_audio_ms"].as_f64().expect("audio arrived");
    println!("first audio byte {first_audio:.1} ms after the Recognize headers");
    assert!(
        first_audio < 500.0,
        "audio streams from the start: {first_audio} ms"
    );
    // The upload ended promptly after StopCapture, not at the length limit.
    let stop = rec["stop_capture_ms"].as_f64().expect("StopCapture sent");
    let end = rec["upload_end_ms"].as_f64().expect("upload ended");
    assert!(
        end - stop < 1000.0,
        "closed {:.0} ms after StopCapture",
        end - stop
    );

    // What AVS heard is the question, resampled to 16 kHz mono.
    let wav = reqwest::get(format!("{}/audio?n=0", rig.avs.control))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    keep(&dir.join("heard.wav"), &wav);
    assert_same_speech("heard by AVS", &s16le(&wav[44..]), &reference, 0.02);

    // What the speaker played is the answer.
    let played = speaker.played();
    keep(&dir.join("played.raw"), &played);
    assert_same_speech(
        "played",
        &speaker_to_16k(&played),
        &answer_reference(dir),
        0.02,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_release_is_close_talk_and_a_second_press_is_busy() {
    let (rig, mic, _speaker) = talking("", "").await;
    let question = speech16(rig.dir.path(), "q", "turn on the kitchen light");

    rig.dialog.hold().await.expect("Hold");
    rig.wait_state("listening", 0).await;
    let busy = rig.dialog.tap().await.expect_err("Tap while listening");
    assert!(
        error_name(&busy).starts_with("org.avsd.Avs1.Error.Busy"),
        "{busy:?}"
    );
    let busy = rig.dialog.hold().await.expect_err("Hold while listening");
    assert!(
        error_name(&busy).starts_with("org.avsd.Avs1.Error.Busy"),
        "{busy:?}"
    );

    mic.say(question).await.expect("the question was spoken");
    rig.dialog.release().await.expect("Release");
    rig.wait_state("idle", 1).await;
    assert_eq!(
        rig.state_log(),
        ["idle", "listening", "thinking", "speaking", "idle"]
    );
    let stats = rig.avs_wait("event=SpeechSynthesizer.SpeechFinished").await;
    assert_eq!(
        stats["recognizes"].as_array().unwrap().len(),
        1,
        "{stats:#}"
    );
    let rec = &stats["recognizes"][0];
    assert_eq!(rec["profile"], "CLOSE_TALK", "{rec:#}");
    assert_eq!(
        rec["initiator"],
        serde_json::json!({"type": "PRESS_AND_HOLD"})
    );
    assert_eq!(rec["outcome"], "speak", "{rec:#}");
    assert!(
        rec["stop_capture_ms"].is_null(),
        "no StopCapture for CLOSE_TALK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_listening_and_speaking_at_once() {
    let (rig, mic, speaker) = talking("", END_OF_SPEECH).await;
    let question = speech16(rig.dir.path(), "q", "tell me a long story");

    // Stop while listening: the Recognize is abandoned, nothing is spoken.
    rig.dialog.tap().await.expect("Tap");
    rig.wait_state("listening", 0).await;
    rig.avs_wait("arrived=SpeechRecognizer.Recognize").await;
    rig.dialog.stop().await.expect("Stop");
    let idle = rig.wait_state("idle", 1).await;

    // Stop while speaking: the answer is cut short and AVS is told.
    rig.dialog.tap().await.expect("Tap again");
    let _said = mic.say(question);
    let speaking = rig.wait_state("speaking", idle).await;
    // Half a second of the answer, then Stop.
    speaker.wait_sound(SPEAKER_10MS * 50).await;
    rig.dialog.stop().await.expect("Stop");
    rig.wait_state("idle", speaking).await;
    assert_eq!(
        rig.state_log(),
        [
            "idle",
            "listening",
            "idle",
            "listening",
            "thinking",
            "speaking",
            "idle"
        ]
    );
    let stats = rig
        .avs_wait("event=SpeechSynthesizer.SpeechInterrupted")
        .await;
    let names = event_names(&stats);
    assert!(
        !names
            .iter()
            .any(|n| n == "SpeechSynthesizer.SpeechFinished"),
        "{names:?}"
    );
    let recs = stats["recognizes"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{stats:#}");
    assert!(
        recs[0]["outcome"].as_str().unwrap().starts_with("failed"),
        "the first Recognize was reset: {:#}",
        recs[0]
    );
    assert_eq!(recs[1]["outcome"], "speak");

    // Much less than the 3 s answer reached the speaker.
    let played = speaker_to_16k(&speaker.played());
    let heard = active_span(&played, 0.02).map_or(0, |(a, b)| b - a);
    let whole = active_span(&answer_reference(rig.dir.path()), 0.02).map_or(0, |(a, b)| b - a);
    println!("played {heard} of {whole} samples of the answer before Stop");
    assert!(heard > 16_000 / 4, "some of the answer was heard first");
    assert!(heard < whole * 3 / 4, "Stop cut the answer short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_speech_listens_again_and_times_out_when_nobody_answers() {
    let knobs = format!("{END_OF_SPEECH}&expect_speech_count=2&expect_speech_ms=3000");
    let (rig, mic, _speaker) = talking("", &knobs).await;
    let dir = rig.dir.path();
    let first = speech16(dir, "q1", "set a timer");
    let second = speech16(dir, "q2", "ten minutes");

    rig.dialog.tap().await.expect("Tap");
    let _said = mic.say(first);
    let speaking = rig.wait_state("speaking", 0).await;
    // The answer asks a question: avsd listens again, and the user answers.
    let listening = rig.wait_state("listening", speaking).await;
    let _said = mic.say(second);
    let speaking = rig.wait_state("speaking", listening).await;
    // Asked again, nobody answers.
    let listening = rig.wait_state("listening", speaking).await;
    rig.wait_state("idle", listening).await;
    assert_eq!(
        rig.state_log(),
        [
            "idle",
            "listening",
            "thinking",
            "speaking",
            "listening",
            "thinking",
            "speaking",
            "listening",
            "idle"
        ]
    );
    let stats = rig
        .avs_wait("event=SpeechRecognizer.ExpectSpeechTimedOut")
        .await;
    let recs = stats["recognizes"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{stats:#}");
    assert_eq!(
        recs[1]["initiator"]["type"], "EXPECT_SPEECH",
        "{:#}",
        recs[1]
    );
    assert!(recs[1]["initiator"]["payload"]["token"].is_string());
    assert_eq!(recs[1]["outcome"], "speak");
    assert!(recs.iter().all(|r| r["expect_speech"] == true));
    let names = event_names(&stats);
    assert_eq!(
        names.last().unwrap(),
        "SpeechRecognizer.ExpectSpeechTimedOut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_microphone_is_a_clear_error_and_avsd_stays_up() {
    let rig = Rig::start("capture_device = \"nosuchmic\"\n").await;
    let err = rig.dialog.tap().await.expect_err("Tap with no microphone");
    let text = error_name(&err);
    println!("{text}");
    assert!(
        text.starts_with("org.avsd.Avs1.Error.AudioDevice"),
        "{text}"
    );
    assert!(
        text.contains("nosuchmic") && text.contains("audio.capture_device"),
        "{text}"
    );
    let last = rig.wait_last_error("nosuchmic").await;
    assert!(last.contains("audio.capture_device"), "{last}");
    assert_eq!(rig.dialog.state().await.unwrap(), "idle");
    assert_eq!(rig.dialog.connection().await.unwrap(), "connected");
    rig.dialog.stop().await.expect("still answering");
    assert_eq!(rig.state_log(), ["idle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microphone_that_fails_mid_request_ends_the_dialog_with_an_error() {
    let rig = Rig::start("capture_device = \"micfail\"\ncapture_format = \"i16:16000:1\"\n").await;
    // ALSA copies what `micfail` captures into tee.fifo; draining it paces
    // the capture, and closing it makes ALSA's next read fail.
    let tee = Speaker::new(&rig.path("tee.fifo"), 320);
    rig.dialog.tap().await.expect("Tap");
    let listening = rig.wait_state("listening", 0).await;
    rig.avs_wait("arrived=SpeechRecognizer.Recognize").await;
    drop(tee);
    rig.wait_state("idle", listening).await;
    assert_eq!(rig.state_log(), ["idle", "listening", "idle"]);
    let last = rig.wait_last_error("micfail").await;
    assert!(last.contains("failed while streaming"), "{last}");
    assert_eq!(rig.dialog.connection().await.unwrap(), "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_length_limit_ends_a_request_and_a_tap_while_speaking_barges_in() {
    let (rig, mic, _speaker) = talking("max_listen_secs = 1\n", "").await;
    let question = speech16(
        rig.dir.path(),
        "q",
        "what is the weather like in Paris today",
    );

    // Held and never released: the one-second limit ends the request.
    rig.dialog.hold().await.expect("Hold");
    let _said = mic.say(question);
    let speaking = rig.wait_state("speaking", 0).await;
    let stats = rig.avs_wait("event=SpeechSynthesizer.SpeechStarted").await;
    let audio_ms = stats["recognizes"][0]["audio_ms"].as_f64().unwrap();
    println!("the held request carried {audio_ms:.0} ms of audio");
    assert!(
        (900.0..1300.0).contains(&audio_ms),
        "cut at about 1 s: {audio_ms} ms"
    );

    // A Tap while Alexa speaks interrupts her and listens.
    rig.dialog.tap().await.expect("Tap while speaking");
    let listening = rig.wait_state("listening", speaking).await;
    // Stopped well within its own one-second limit.
    rig.dialog.stop().await.expect("Stop");
    rig.wait_state("idle", listening).await;
    assert_eq!(
        rig.state_log(),
        [
            "idle",
            "listening",
            "thinking",
            "speaking",
            "listening",
            "idle"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_in_the_middle_of_a_request_loses_no_dialog() {
    let (rig, mic, _speaker) = talking("", END_OF_SPEECH).await;
    let question = speech16(rig.dir.path(), "q", "how far away is the moon");

    rig.dialog.tap().await.expect("Tap");
    rig.avs_wait("arrived=SpeechRecognizer.Recognize").await;
    // AVS's hourly GOAWAY arrives while the user is speaking.
    rig.avs.post("/goaway").await;
    let _said = mic.say(question);
    rig.wait_state("idle", 1).await;
    assert_eq!(
        rig.state_log(),
        ["idle", "listening", "thinking", "speaking", "idle"]
    );
    let stats = rig
        .avs_wait("event=SpeechSynthesizer.SpeechFinished&downchannels=2")
        .await;
    let rec = &stats["recognizes"][0];
    assert_eq!(rec["outcome"], "speak", "{stats:#}");
    assert_eq!(rec["connection"], 1, "the request finished where it began");
    let finished = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SpeechSynthesizer.SpeechFinished")
        .unwrap();
    assert_ne!(
        finished["connection"], 1,
        "later events use the new connection"
    );
    assert!(
        stats["connections"]["peak"].as_u64().unwrap() <= 2,
        "{stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speak_pushed_on_the_downchannel_is_played() {
    let (rig, _mic, speaker) = talking("", "").await;
    let speak = serde_json::json!({"directive": {
        "header": {"namespace": "SpeechSynthesizer", "name": "Speak", "messageId": "push-1"},
        "payload": {"url": "cid:reminder-1", "format": "AUDIO_MPEG", "token": "tok-pushed"}}});
    rig.avs.push("?attach=reminder-1", speak).await;
    let speaking = rig.wait_state("speaking", 0).await;
    rig.wait_state("idle", speaking).await;
    assert_eq!(rig.state_log(), ["idle", "thinking", "speaking", "idle"]);
    let stats = rig.avs_wait("event=SpeechSynthesizer.SpeechFinished").await;
    assert_eq!(
        event_names(&stats),
        [
            "SpeechSynthesizer.SpeechStarted",
            "SpeechSynthesizer.SpeechFinished"
        ]
    );
    assert_same_speech(
        "played",
        &speaker_to_16k(&speaker.played()),
        &answer_reference(rig.dir.path()),
        0.02,
    );
}

/// The threads of process `pid`: id and name, from /proc.
fn threads(pid: i32) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("avsd's /proc/<pid>/task")
        .filter_map(|e| {
            let e = e.ok()?;
            let tid = e.file_name().to_str()?.parse().ok()?;
            // A thread that ended since the listing has no comm: skipped.
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect();
    found.sort();
    found
}

/// Threads not owned by tokio's pools (whose blocking pool sizes itself).
fn own_threads(pid: i32) -> Vec<(u32, String)> {
    threads(pid)
        .into_iter()
        .filter(|(_, name)| !name.starts_with("tokio-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogs_reuse_the_audio_threads() {
    let (rig, mic, _speaker) = talking("", "").await;
    let pid = rig.avsd.pid();
    let idle = threads(pid).len();
    let mut at = 0;
    let mut after_first = Vec::new();
    let mut first_total = 0;
    const DIALOGS: usize = 4;
    for n in 0..DIALOGS {
        let question = speech16(
            rig.dir.path(),
            &format!("q{n}"),
            "turn on the kitchen light",
        );
        rig.dialog.hold().await.expect("Hold");
        at = rig.wait_state("listening", at).await;
        mic.say(question).await.expect("the question was spoken");
        rig.dialog.release().await.expect("Release");
        at = rig.wait_state("speaking", at).await;
        at = rig.wait_state("idle", at).await;
        if n == 0 {
            after_first = own_threads(pid);
            first_total = threads(pid).len();
        }
    }
    let stats = rig
        .avs_wait(&format!(
            "recognizes={DIALOGS}&event=SpeechSynthesizer.SpeechFinished&count={DIALOGS}"
        ))
        .await;
    let after = own_threads(pid);
    let total = threads(pid).len();
    println!(
        "threads: {idle} idle before any dialog, {first_total} after the first dialog, \
         {total} after {DIALOGS}\nafter the first: {after_first:?}\nafter the last: {after:?}"
    );
    assert_eq!(
        stats["recognizes"].as_array().map(Vec::len),
        Some(DIALOGS),
        "{stats:#}"
    );
    // The very threads of the first dialog serve the others: none started
    // per dialog (each would get a malloc arena of its own from glibc).
    assert_eq!(
        after, after_first,
        "the same threads after {DIALOGS} dialogs"
    );
    assert!(
        after.iter().any(|(_, name)| name == "avsd-capture"),
        "the capture thread outlives its dialog: {after:?}"
    );
    assert!(
        after.iter().any(|(_, name)| name == "avsd-mp3"),
        "the decoder thread outlives its answer: {after:?}"
    );
}
