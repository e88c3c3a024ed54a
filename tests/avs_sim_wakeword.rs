//! The stand-in checks a WAKEWORD Recognize as AVS would: the word's
//! indices are present, start before end, leave about 500 ms of audio
//! before the word and lie inside the streamed audio; a good one gets
//! StopCapture as for TAP. Every refusal is a 400 that names the field.
//! And only from a device that declared the word: SpeechRecognizer 2.3
//! with `wakeWords`, as avsd's agent declares it with a model loaded.

use avsd::agents::CapabilityAgent;
use avsd::agents::speech_recognizer::SpeechRecognizer;
use avsd::avs::connection::Identity;
use avsd::avs::discovery::{Capability, add_or_update_report};
use kit::secret::Secret;
use serde_json::{Value, json};
use support::sim::*;

/// A Discovery report declaring System and `speech`.
fn report(token: &Secret, speech: Capability) -> String {
    let identity = Identity {
        product_id: "prod".into(),
        dsn: "0001".into(),
        capabilities: vec![Capability::new("System", "1.0"), speech],
    };
    add_or_update_report(&identity, token)
}

/// avsd's SpeechRecognizer declaration, with or without a wake word.
fn avsd_speech_recognizer(wake_word: bool) -> Capability {
    SpeechRecognizer::new(tokio::sync::mpsc::channel(1).0, wake_word).discovery()
}

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

    // Undeclared: no report, then avsd's 2.0 declaration without a model.
    let refused = |why: &'static str| {
        let (link, token) = (&link, &token);
        async move {
            let meta = recognize_metadata("NEAR_FIELD", why, wake(8_000, 16_000));
            let resp = recognize_at_once(link, token, &meta, audio()).await;
            assert_eq!(resp.status(), 400, "{why}");
            let (_, description) = exception(&body_of(resp).await);
            assert!(description.contains(why), "{description}");
            assert!(
                description.contains("SpeechRecognizer 2.3"),
                "{description}"
            );
        }
    };
    refused("sent no Alexa.Discovery").await;
    let (status, _) = event(
        &link,
        &token,
        &report(&token, avsd_speech_recognizer(false)),
    )
    .await;
    assert_eq!(status, 202);
    refused("declared SpeechRecognizer 2.0 without a wakeWords configuration").await;
    // A 2.3 declaration AVS would refuse: an unknown scope.
    let mut bad = avsd_speech_recognizer(true);
    bad.configurations =
        Some(json!({"wakeWords": [{"scopes": ["KITCHEN"], "values": [["ALEXA"]]}]}));
    let (status, body) = event(&link, &token, &report(&token, bad)).await;
    assert_eq!(status, 400);
    let (_, description) = exception(&body);
    assert!(
        description.contains("configurations.wakeWords[0].scopes[0]"),
        "{description}"
    );
    // avsd's declaration with a model loaded.
    let (status, body) = event(&link, &token, &report(&token, avsd_speech_recognizer(true))).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
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
