//! The stand-in checks a WAKEWORD Recognize as AVS would: the word's
//! indices are present, start before end, leave about 500 ms of audio
//! before the word and lie inside the streamed audio; a good one gets
//! StopCapture as for TAP. Every refusal is a 400 that names the field.

use serde_json::{Value, json};
use support::sim::*;

fn wake(start: u64, end: u64) -> Value {
    json!({"type": "WAKEWORD", "payload": {
        "wakeWordIndices": {"startIndexInSamples": start, "endIndexInSamples": end},
        "wakeWord": "ALEXA"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wakeword_recognizes_are_refused_and_a_good_one_is_answered() {
    let sim = Sim::start().await;
    let (link, _down) = synced(&sim).await;
    let token = sim.token();
    // 2 s of sound: the word claimed at 0.5 s to 1 s.
    let audio = || tone(16_000 * 2);
    let cases = [
        ("NEAR_FIELD", wake(100, 9_000), "500 ms"),
        ("NEAR_FIELD", wake(12_000, 9_000), "not before"),
        ("CLOSE_TALK", wake(8_000, 16_000), "CLOSE_TALK"),
        (
            "NEAR_FIELD",
            wake(8_000, 40_000),
            "past the end of the audio",
        ),
        (
            "NEAR_FIELD",
            json!({"type": "WAKEWORD", "payload": {"wakeWord": "ALEXA"}}),
            "wakeWordIndices",
        ),
    ];
    for (i, (profile, init, named)) in cases.into_iter().enumerate() {
        let meta = recognize_metadata(profile, &format!("bad-{i}"), init.clone());
        let resp = recognize_at_once(&link, &token, &meta, audio()).await;
        assert_eq!(resp.status(), 400, "{init}");
        let (code, description) = exception(&body_of(resp).await);
        assert_eq!(code, "INVALID_REQUEST_EXCEPTION");
        assert!(description.contains(named), "{init}: {description}");
    }

    let meta = recognize_metadata("NEAR_FIELD", "good", wake(8_000, 16_000));
    let resp = recognize_at_once(&link, &token, &meta, audio()).await;
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    let stop = parts.directive().await;
    assert_eq!(stop["header"]["name"], "StopCapture", "{stop}");
    let stats = sim.wait("recognizes=1").await;
    assert_eq!(stats["recognizes"][0]["initiator"], wake(8_000, 16_000));
}
