//! The stand-in's dialog: a Recognize streamed through the daemon's own
//! HTTP/2 client gets StopCapture, Speak and its MP3 (and ExpectSpeech on
//! request); silent or malformed audio gets no Speak.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use support::sim::*;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_field_tone_gets_stop_capture_then_speak_with_its_mp3() {
    let sim = Sim::start().await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    let meta = recognize_metadata("NEAR_FIELD", "dlg-1", json!({"type": "TAP"}));
    let (resp, mut body, form) = start_recognize(&link, &token, &meta).await;

    // Capture-like upload: 320 bytes (10 ms) per tick until StopCapture.
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let uploader = tokio::spawn(async move {
        let audio = tone(16_000 * 30);
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tick.tick() => {
                    let chunk = Bytes::copy_from_slice(&audio[sent..sent + 320]);
                    body.send_data(chunk, false).unwrap();
                    sent += 320;
                }
            }
        }
        body.send_data(form.tail(), true).unwrap();
        sent
    });

    let resp = within("the Recognize answer", resp).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    let stop = parts.directive().await;
    assert_eq!(stop["header"]["namespace"], "SpeechRecognizer");
    assert_eq!(stop["header"]["name"], "StopCapture");
    assert_eq!(stop["header"]["dialogRequestId"], "dlg-1");
    stop_tx.send(()).unwrap();
    let sent = uploader.await.unwrap();

    let speak = parts.directive().await;
    assert_eq!(speak["header"]["name"], "Speak");
    assert_eq!(speak["header"]["dialogRequestId"], "dlg-1");
    assert_eq!(speak["payload"]["format"], "AUDIO_MPEG");
    assert!(!speak["payload"]["token"].as_str().unwrap().is_empty());
    let url = speak["payload"]["url"].as_str().unwrap();
    let cid = url.strip_prefix("cid:").expect("a cid: url");
    let mp3 = parts.next().await.expect("the MP3 part");
    assert_eq!(mp3.headers.content_id.as_deref(), Some(cid));
    assert_eq!(
        mp3.headers.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(&mp3.body[..], avs_sim::avs::BUILTIN_ANSWER_MP3);
    assert!(parts.next().await.is_none(), "nothing after the MP3");

    let stats = sim.wait("recognizes=1").await;
    let rec = &stats["recognizes"][0];
    assert_eq!(rec["outcome"], "speak");
    assert_eq!(rec["audio_bytes"], sent as u64);
    assert_eq!(rec["profile"], "NEAR_FIELD");
    assert_eq!(rec["initiator"], json!({"type": "TAP"}));
    assert!(rec["first_audio_ms"].as_f64().unwrap() < 5000.0, "{rec}");
    let stop_ms = rec["stop_capture_ms"].as_f64().unwrap();
    assert!(stop_ms >= 300.0, "{rec}");
    assert!(rec["upload_end_ms"].as_f64().unwrap() >= stop_ms, "{rec}");
    assert!(rec["peak_rms"].as_f64().unwrap() > 4000.0, "{rec}");
    let last = stats["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["name"].as_str(), last["status"].as_u64()),
        (Some("SpeechRecognizer.Recognize"), Some(200))
    );

    // What the stand-in heard, as a WAV file.
    let (status, wav) = sim.get_bytes("/audio?n=0").await;
    assert_eq!(status, 200);
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(wav.len(), 44 + sent);
    assert_eq!(&wav[44..], &tone(sent / 2)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_talk_gets_speak_and_expect_speech_whose_initiator_comes_back() {
    let sim = Sim::start().await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    let set = sim
        .post("/dialog?expect_speech_count=1&expect_speech_ms=5000")
        .await;
    assert_eq!(set["dialog"]["expect_speech_count"], 1);

    let meta = recognize_metadata("CLOSE_TALK", "dlg-2", json!({"type": "PRESS_AND_HOLD"}));
    let resp = recognize_at_once(&link, &token, &meta, tone(8000)).await;
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    // The client ended the audio: no StopCapture.
    assert_eq!(parts.directive().await["header"]["name"], "Speak");
    assert_eq!(
        parts.next().await.unwrap().body.len(),
        avs_sim::avs::BUILTIN_ANSWER_MP3.len()
    );
    let expect = parts.directive().await;
    assert_eq!(expect["header"]["name"], "ExpectSpeech");
    assert_eq!(expect["header"]["dialogRequestId"], "dlg-2");
    assert_eq!(expect["payload"]["timeoutInMilliseconds"], 5000);
    let initiator = expect["payload"]["initiator"].clone();
    assert!(initiator.is_object(), "{expect}");
    assert!(parts.next().await.is_none());

    // The answer to ExpectSpeech, silent this time: 204, no Speak.
    let meta = recognize_metadata("CLOSE_TALK", "dlg-3", initiator.clone());
    let resp = recognize_at_once(&link, &token, &meta, vec![0; 16_000]).await;
    assert_eq!(resp.status(), 204);
    let stats = sim.wait("recognizes=2").await;
    let recs = stats["recognizes"].as_array().unwrap();
    assert_eq!(recs[0]["expect_speech"], true);
    assert_eq!(recs[1]["outcome"], "silence");
    assert_eq!(recs[1]["initiator"], initiator);
    // Only one ExpectSpeech was asked for.
    assert_eq!(
        sim.post("/dialog").await["dialog"]["expect_speech_count"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_malformed_audio_get_no_speak() {
    let sim = Sim::start().await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();

    // NEAR_FIELD silence: StopCapture and nothing else.
    let meta = recognize_metadata("NEAR_FIELD", "dlg-s", Value::Null);
    let resp = recognize_at_once(&link, &token, &meta, vec![0; 32_000]).await;
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    assert_eq!(parts.directive().await["header"]["name"], "StopCapture");
    assert!(parts.next().await.is_none());

    // An odd byte count is not 16-bit PCM.
    let meta = recognize_metadata("CLOSE_TALK", "dlg-o", Value::Null);
    let resp = recognize_at_once(&link, &token, &meta, tone(800)[..1599].to_vec()).await;
    assert_eq!(resp.status(), 400);
    let (code, why) = exception(&body_of(resp).await);
    assert_eq!(code, "INVALID_REQUEST_EXCEPTION");
    assert!(why.contains("16-bit"), "{why}");

    // No audio part at all.
    let (status, body) = event(
        &link,
        &token,
        &recognize_metadata("CLOSE_TALK", "dlg-n", Value::Null),
    )
    .await;
    assert_eq!(status, 400);
    assert!(exception(&body).1.contains("`audio` part"));

    // Opus is not decoded here.
    let opus = recognize_metadata("NEAR_FIELD", "dlg-p", Value::Null)
        .replace("AUDIO_L16_RATE_16000_CHANNELS_1", "OPUS");
    let (status, body) = event(&link, &token, &opus).await;
    assert_eq!(status, 400);
    assert!(exception(&body).1.contains("OPUS"));

    let stats = sim.wait("recognizes=2").await;
    let outcomes: Vec<&str> = stats["recognizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes[0], "silence");
    assert!(outcomes[1].starts_with("bad audio"), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_capture_follows_the_end_of_speech() {
    let sim = Sim::start().await;
    sim.post("/dialog?stop_capture_ms=60000&end_of_speech_ms=300")
        .await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    let meta = recognize_metadata("NEAR_FIELD", "dlg-e", json!({"type": "TAP"}));
    let (resp, mut body, form) = start_recognize(&link, &token, &meta).await;
    // Half a second of speech, then silence; the upload stays open.
    let mut audio = tone(8000);
    audio.extend(std::iter::repeat_n(0u8, 16_000));
    body.send_data(Bytes::from(audio), false).unwrap();
    let resp = within("StopCapture at the end of speech", resp)
        .await
        .unwrap();
    let mut parts = Parts::new(resp);
    assert_eq!(parts.directive().await["header"]["name"], "StopCapture");
    body.send_data(form.tail(), true).unwrap();
    assert_eq!(parts.directive().await["header"]["name"], "Speak");
    let stats = sim.wait("recognizes=1").await;
    assert_eq!(stats["recognizes"][0]["audio_bytes"], 32_000);
}

/// Stop while listening: the client resets its Recognize stream. The
/// stand-in records it as failed, unanswered, and the connection lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recognize_the_client_resets_is_recorded_and_harmless() {
    let sim = Sim::start().await;
    sim.post("/dialog?stop_capture_ms=60000").await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    let meta = recognize_metadata("NEAR_FIELD", "dlg-r", json!({"type": "TAP"}));
    let (_resp, mut body, _form) = start_recognize(&link, &token, &meta).await;
    body.send_data(Bytes::from(tone(1600)), false).unwrap();
    sim.wait("arrived=SpeechRecognizer.Recognize").await;
    body.send_reset(h2::Reason::CANCEL);
    let stats = sim.wait("recognizes=1").await;
    let rec = &stats["recognizes"][0];
    assert!(
        rec["outcome"].as_str().unwrap().starts_with("failed"),
        "{rec}"
    );
    let last = stats["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "SpeechRecognizer.Recognize");
    assert_eq!(last["status"], 0);
    assert_eq!(link.get("/ping", &token).await.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_answer_follows_the_speak_without_undeclared_interfaces() {
    let sim = Sim::start().await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    // A device that sent no Discovery may be told of any implemented
    // interface; `Bogus` is none, so AVS would not send it.
    sim.answer(json!([
        {"namespace": "System", "name": "ResetUserInactivity"},
        {"namespace": "Bogus", "name": "Thing", "payload": {"x": 1}},
    ]))
    .await;
    let (status, refused) = sim
        .call(
            http::Method::POST,
            "/answer",
            Some("{\"directives\": []}".into()),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(sim.stats().await["scripted"], 1);

    let meta = recognize_metadata("CLOSE_TALK", "dlg-s", json!({"type": "PRESS_AND_HOLD"}));
    let resp = recognize_at_once(&link, &token, &meta, tone(8000)).await;
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    assert_eq!(parts.directive().await["header"]["name"], "Speak");
    let _mp3 = parts.next().await.expect("the MP3 part");
    let reset = parts.directive().await;
    assert_eq!(reset["header"]["namespace"], "System");
    assert_eq!(reset["header"]["name"], "ResetUserInactivity");
    assert_eq!(reset["header"]["dialogRequestId"], "dlg-s");
    assert!(
        reset["header"]["messageId"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(parts.next().await.is_none(), "Bogus.Thing must be left out");
    assert_eq!(sim.stats().await["scripted"], 0);

    // The next answer is the plain one again.
    let meta = recognize_metadata("CLOSE_TALK", "dlg-t", json!({"type": "PRESS_AND_HOLD"}));
    let mut parts = Parts::new(recognize_at_once(&link, &token, &meta, tone(8000)).await);
    assert_eq!(parts.directive().await["header"]["name"], "Speak");
    let _mp3 = parts.next().await.expect("the MP3 part");
    assert!(parts.next().await.is_none());
}
