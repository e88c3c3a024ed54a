//! The wake word in the real avsd: speech synthesized by espeak-ng is fed
//! live into the capture FIFO (a real ALSA PCM), avsd's engine hears
//! "Alexa" and starts a WAKEWORD Recognize at `avs-sim avs`, which checks
//! it as AVS would. The model comes from `AVSD_WAKEWORD_MODEL_DIR`
//! (`scripts/wakeword-model` fills it; `scripts/test` sets it).

use std::path::PathBuf;
use std::time::Duration;

use avsctl::proxy::{MicrophoneProxy, WakeWordProxy};
use futures_util::StreamExt;
use serde_json::Value;
use support::audio::{active_span, s16le};
use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker, holds, speech16, wait_holds};
use support::system::{AvsSim, World};

const MIC16: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

/// What avsd logs each time its watcher opens the microphone.
const WATCHING: &str = "listening for the wake word";

/// 150 ms at 16 kHz: how far the indices may be from where the word is.
const TOLERANCE: i64 = 2_400;

fn model() -> PathBuf {
    let dir = std::env::var_os("AVSD_WAKEWORD_MODEL_DIR").expect(
        "AVSD_WAKEWORD_MODEL_DIR is not set: run scripts/wakeword-model and set it to that \
         directory (scripts/test does both: target/wakeword-model)",
    );
    let json = PathBuf::from(dir).join("alexa.json");
    assert!(
        json.is_file(),
        "{} is missing: run scripts/wakeword-model",
        json.display()
    );
    json
}

/// A connected avsd with the wake word on (model `model`), its microphone
/// fed and its speaker drained.
async fn woken_rig(model: &std::path::Path) -> (Rig, Mic, Speaker) {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let section = format!(
        "[wakeword]\nenabled = true\nmodel = \"{}\"\n",
        model.display()
    );
    let rig = Rig::start_on(world, avs, |c| format!("{c}{section}"), MIC16).await;
    let mic = Mic::new(&rig.path("mic.fifo"), 320);
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    rig.avs
        .post("/dialog?end_of_speech_ms=500&stop_capture_ms=10000")
        .await;
    (rig, mic, speaker)
}

fn silence(ms: usize) -> Vec<u8> {
    vec![0; ms * 32]
}

/// "Alexa" and where its sound is (first and last loud sample).
fn alexa(rig: &Rig) -> (Vec<u8>, usize, usize) {
    let pcm = speech16(rig.dir.path(), "alexa", "Alexa");
    let (first, last) = active_span(&s16le(&pcm), 0.01).expect("espeak-ng said something");
    (pcm, first, last)
}

fn recognizes(stats: &Value) -> &Vec<Value> {
    stats["recognizes"].as_array().expect("recognizes")
}

/// Says "Alexa, what time is it" after `lead` of silence and checks the
/// one WAKEWORD Recognize it gives: the indices bracket the word.
async fn alexa_what_time_is_it(rig: &Rig, mic: &Mic, lead_ms: usize) {
    let (word, first, last) = alexa(rig);
    let question = speech16(rig.dir.path(), "question", "what time is it");
    let wake = WakeWordProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    let mut detections = wake.receive_detected().await.unwrap();
    let before = recognizes(&rig.avs.stats().await).len();
    let from = rig.state_log().len();
    let mut pcm = silence(lead_ms);
    pcm.extend_from_slice(&word);
    pcm.extend_from_slice(&silence(250));
    pcm.extend_from_slice(&question);
    let said = mic.say(pcm);
    let signal = tokio::time::timeout(Duration::from_secs(60), detections.next())
        .await
        .expect("the wake word was detected")
        .expect("avsd left the bus");
    let args = signal.args().unwrap();
    println!(
        "Detected: samples {}..{}, score {:.3}",
        args.start_index, args.end_index, args.score
    );
    let at = rig.wait_state("listening", from).await;
    rig.wait_state("idle", at).await;
    let _ = said.await;
    let stats = rig
        .avs_wait(&format!(
            "event=SpeechSynthesizer.SpeechFinished&count={}",
            before + 1
        ))
        .await;
    let recs = recognizes(&stats);
    assert_eq!(recs.len(), before + 1, "exactly one Recognize: {stats:#}");
    let rec = &recs[before];
    assert_eq!(rec["profile"], "NEAR_FIELD", "{rec:#}");
    assert_eq!(rec["outcome"], "speak", "the dialog completes: {rec:#}");
    let init = &rec["initiator"];
    assert_eq!(init["type"], "WAKEWORD", "{init:#}");
    assert_eq!(init["payload"]["wakeWord"], "ALEXA", "{init:#}");
    let start = init["payload"]["wakeWordIndices"]["startIndexInSamples"]
        .as_i64()
        .unwrap();
    let end = init["payload"]["wakeWordIndices"]["endIndexInSamples"]
        .as_i64()
        .unwrap();
    assert_eq!(
        (start as u64, end as u64),
        (args.start_index, args.end_index)
    );

    // Where the word really is in what AVS heard: the stream begins in the
    // silence before it, so its first loud sample is the word's first.
    let wav = reqwest::get(format!("{}/audio?n={before}", rig.avs.control))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let heard = s16le(&wav[44..]);
    let (heard_first, _) = active_span(&heard, 0.01).expect("AVS heard the word");
    let want_start = heard_first as i64;
    let want_end = want_start + (last - first) as i64;
    println!(
        "word at {want_start}..{want_end} in the request's audio; indices {start}..{end}; \
         {} ms of audio before the word",
        want_start / 16
    );
    assert!(
        (start - want_start).abs() <= TOLERANCE && (end - want_end).abs() <= TOLERANCE,
        "indices {start}..{end} vs the word at {want_start}..{want_end}"
    );
    assert!(
        want_start >= 7_200,
        "about 500 ms before the word: {want_start}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alexa_what_time_is_it_wakes_avsd_once() {
    let model = model();
    let (rig, mic, _speaker) = woken_rig(&model).await;
    rig.avsd
        .wait_log(WATCHING, 1, Duration::from_secs(30))
        .await;
    alexa_what_time_is_it(&rig, &mic, 1500).await;
    // Watching again after the answer, and no second request came of it.
    rig.avsd
        .wait_log(WATCHING, 2, Duration::from_secs(30))
        .await;
    assert_eq!(recognizes(&rig.avs.stats().await).len(), 1);
    assert_eq!(rig.avsd.log_text().matches("wake word heard").count(), 1);
    // A Tap while the wake word listens takes the microphone over at once.
    let from = rig.state_log().len();
    // (Well within the 10 s a capture waits for the previous one to close.)
    rig.dialog.tap().await.expect("Tap while watching");
    rig.wait_state_within("listening", from, Duration::from_secs(5))
        .await;
    rig.dialog.stop().await.unwrap();
    // Switched off, the wake word lets the microphone go.
    let fifo = rig.path("mic.fifo");
    wait_holds(rig.avsd.pid(), &fifo, true).await;
    let wake = WakeWordProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    wake.set_enabled(false).await.unwrap();
    wait_holds(rig.avsd.pid(), &fifo, false).await;
    assert_eq!(wake.model().await.unwrap(), model.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_speech_does_not_wake_avsd() {
    let model = model();
    let (rig, mic, _speaker) = woken_rig(&model).await;
    rig.avsd
        .wait_log(WATCHING, 1, Duration::from_secs(30))
        .await;
    let dir = rig.dir.path();
    let mut pcm = Vec::new();
    for (i, text) in [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Alexander the Great led his army across the mountains in winter.",
        "Please set the table, we expect guests for dinner at seven o'clock.",
        "A lexicon lists the words of a language with their meanings.",
        "Electric cars are becoming more common in many European cities.",
        "She sells sea shells by the sea shore, and the shells are surely real.",
    ]
    .iter()
    .enumerate()
    {
        pcm.extend_from_slice(&speech16(dir, &format!("other{i}"), text));
        pcm.extend_from_slice(&silence(300));
    }
    let seconds = pcm.len() / 32_000;
    // The same engine then hears the real word: everything before it has
    // been through the engine by the time it fires.
    alexa_what_time_is_it_after(&rig, &mic, pcm).await;
    println!("{seconds} s of other speech: no detection");
}

/// Feeds `other` first, then "Alexa, what time is it": exactly one request
/// comes of it all, the one for the word.
async fn alexa_what_time_is_it_after(rig: &Rig, mic: &Mic, other: Vec<u8>) {
    let said = mic.say(other);
    let _ = said.await;
    assert_eq!(rig.state_log(), ["idle"], "no wake on other speech");
    alexa_what_time_is_it(rig, mic, 600).await;
    assert_eq!(
        rig.avsd.log_text().matches("wake word heard").count(),
        1,
        "only the word woke avsd"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_microphone_hears_nothing_until_unmuted() {
    let model = model();
    let (rig, mic, _speaker) = woken_rig(&model).await;
    let fifo = rig.path("mic.fifo");
    let pid = rig.avsd.pid();
    rig.avsd
        .wait_log(WATCHING, 1, Duration::from_secs(30))
        .await;
    assert!(holds(pid, &fifo), "the wake word keeps the microphone open");
    let switch = MicrophoneProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    switch.set_muted(true).await.unwrap();
    wait_holds(pid, &fifo, false).await;
    let err = rig.dialog.tap().await.expect_err("Tap while muted");
    assert!(err.to_string().contains("MicrophoneMuted"), "{err}");
    switch.set_muted(false).await.unwrap();
    wait_holds(pid, &fifo, true).await;
    rig.avsd
        .wait_log(WATCHING, 2, Duration::from_secs(30))
        .await;
    alexa_what_time_is_it(&rig, &mic, 1500).await;
    assert_eq!(rig.avsd.log_text().matches("wake word heard").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_is_reported_and_tap_still_works() {
    let (rig, _mic, _speaker) = woken_rig(std::path::Path::new("/nonexistent/alexa.json")).await;
    let last = rig.wait_last_error("/nonexistent/alexa.json").await;
    let wake = WakeWordProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    assert_eq!(wake.model().await.unwrap(), "/nonexistent/alexa.json");
    println!("LastError: {last}");
    assert!(
        last.contains("wakeword.model") && last.contains("scripts/wakeword-model"),
        "names the key and the fix: {last}"
    );
    assert!(rig.avsd.log_text().contains("the wake word is off"));
    rig.dialog.tap().await.expect("Tap works without the model");
    rig.wait_state("listening", 0).await;
    rig.dialog.stop().await.unwrap();
}
