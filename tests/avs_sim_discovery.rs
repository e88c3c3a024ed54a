//! Capabilities, checked black-box: avsd's real `Alexa.Discovery` report is
//! accepted by the AVS stand-in and declares exactly avsd's registered
//! agents; the stand-in refuses a report AVS would refuse (an unknown
//! interface, a duplicate, a version it does not implement), an event whose
//! context names an interface the device did not declare (on the
//! connection of the report or a later one), and sends no directive of an
//! undeclared interface.

use std::time::Duration;

use avsctl::proxy::DialogProxy;
use avsd::avs::connection::Identity;
use avsd::avs::discovery::{Capability, add_or_update_report};
use kit::secret::Secret;
use serde_json::{Value, json};
use support::sim::{
    Parts, Sim, downchannel, event, exception, metadata, recognize_at_once, recognize_metadata,
    tone,
};
use support::system::{AvsSim, World, wait_connection};

/// The report avsd would send for a device with `capabilities`, with
/// the access token its request carries.
fn report(token: &Secret, capabilities: Vec<Capability>) -> String {
    let identity = Identity {
        product_id: "prod".into(),
        dsn: "0001".into(),
        capabilities,
    };
    add_or_update_report(&identity, token)
}

/// SynchronizeState with one SpeechState context entry.
fn sync_with_speech_state() -> String {
    json!({
        "context": [{"header": {"namespace": "SpeechSynthesizer", "name": "SpeechState"},
                     "payload": {"token": "", "offsetInMilliseconds": 0, "playerActivity": "FINISHED"}}],
        "event": {"header": {"namespace": "System", "name": "SynchronizeState",
                             "messageId": uuid::Uuid::new_v4().to_string()},
                  "payload": {}},
    })
    .to_string()
}

fn rejections(stats: &Value) -> Vec<String> {
    stats["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["description"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avsd_declares_exactly_its_registered_agents_and_its_contexts_pass() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let (avsd, _auth) = world
        .logged_in(&world.avsd_config_with_avs(&avs, 600))
        .await;
    let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    let stats = avs.wait("event=System.SynchronizeState").await;

    // The registry as the daemon builds it.
    let state = tempfile::tempdir().unwrap();
    let registry = avsd::agents::for_daemon(avsd::agents::Deps {
        state_dir: state.path().to_path_buf(),
        inactivity_report_every: Duration::from_secs(3600),
        dialog: tokio::sync::mpsc::channel(1).0,
        speech: tokio::sync::watch::channel(Default::default()).1,
        volume: avsd::volume::spawn(
            avsd::volume::Settings {
                state_dir: state.path().to_path_buf(),
                output: avsd::volume::Output::Software(Default::default()),
            },
            &tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        ),
        player: avsd::agents::audio_player::PlayerLink::new().0,
        alerts: avsd::agents::alerts::channel().0,
        // As the daemon decides it: its config names no model, so the
        // default one, which loads where the package is installed.
        wake_word: avsd::wakeword::Wake::from_config(&Default::default(), state.path())
            .engine
            .is_ok(),
    })
    .unwrap();
    let want: Vec<Value> = registry
        .discovery()
        .iter()
        .map(|c| {
            let mut v = c.to_json();
            v.as_object_mut().unwrap().remove("type");
            v
        })
        .collect();
    assert_eq!(want.len(), registry.namespaces().len());

    let discoveries = stats["discoveries"].as_array().unwrap();
    assert_eq!(discoveries.len(), 1, "{stats:#}");
    let d = &discoveries[0];
    assert_eq!(d["capabilities"], json!(want), "{stats:#}");
    assert_eq!(d["product_id"], support::companion::PRODUCT);
    assert_eq!(d["device_serial_number"], "kitchen-1");
    assert_eq!(
        d["endpoint_id"],
        format!("{}::kitchen-1", support::companion::PRODUCT)
    );
    let accepted: Vec<(String, u64)> = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        accepted[..2],
        [
            ("Alexa.Discovery.AddOrUpdateReport".to_string(), 202),
            ("System.SynchronizeState".to_string(), 204)
        ],
        "{stats:#}"
    );

    // An event sent later carries the registry's context, checked against
    // the declaration: a directive of no interface makes avsd send
    // ExceptionEncountered with its full context.
    avs.push(
        "",
        json!({"directive": {"header": {"namespace": "Bogus", "name": "Thing",
            "messageId": "m-1"}, "payload": {}}}),
    )
    .await;
    let stats = avs.wait("event=System.ExceptionEncountered").await;
    let last = stats["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["name"], "System.ExceptionEncountered", "{stats:#}");
    assert_eq!(last["status"], 204, "{stats:#}");
    assert!(rejections(&stats).is_empty(), "{stats:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_with_unknown_duplicate_or_unimplemented_interfaces_are_refused() {
    let sim = Sim::start().await;
    let link = sim.link().await;
    let token = sim.token();
    let _down = downchannel(&link, &token).await;
    let cases = [
        (
            vec![
                Capability::new("System", "1.0"),
                Capability::new("Frobnicator", "1.0"),
            ],
            "`Frobnicator` is not an interface avs-sim implements",
        ),
        (
            vec![
                Capability::new("SpeechSynthesizer", "1.3"),
                Capability::new("System", "1.0"),
                Capability::new("SpeechSynthesizer", "1.0"),
            ],
            "capabilities[2] declares SpeechSynthesizer again (first at capabilities[0])",
        ),
        (
            vec![Capability::new("SpeechRecognizer", "3.0")],
            "SpeechRecognizer version `3.0` is not one avs-sim implements",
        ),
    ];
    for (capabilities, why) in &cases {
        let (status, body) = event(&link, &token, &report(&token, capabilities.clone())).await;
        assert_eq!(status, 400, "{why}");
        let (code, description) = exception(&body);
        assert_eq!(code, "INVALID_REQUEST_EXCEPTION");
        assert!(description.contains(why), "{description}");
    }
    // A malformed report: a version that is not a string.
    let mut bad: Value =
        serde_json::from_str(&report(&token, vec![Capability::new("System", "1.0")])).unwrap();
    bad["event"]["payload"]["endpoints"][0]["capabilities"][0]["version"] = json!(1.0);
    let (status, body) = event(&link, &token, &bad.to_string()).await;
    assert_eq!(status, 400);
    assert!(
        exception(&body)
            .1
            .contains("capabilities[0].version is missing or not a string")
    );

    let stats = sim.wait("rejections=4").await;
    let refused = rejections(&stats);
    for (_, why) in &cases {
        assert!(refused.iter().any(|r| r.contains(why)), "{why}: {stats:#}");
    }
    assert!(
        stats["discoveries"].as_array().unwrap().is_empty(),
        "{stats:#}"
    );
    // Nothing was remembered: a well-formed report is accepted after all.
    let good = report(&token, vec![Capability::new("System", "1.0")]);
    assert_eq!(event(&link, &token, &good).await.0, 202);
    let stats = sim.wait("event=Alexa.Discovery.AddOrUpdateReport").await;
    assert_eq!(
        stats["discoveries"][0]["capabilities"],
        json!([{"interface": "System", "version": "1.0"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_entry_of_an_undeclared_interface_is_refused_on_any_connection() {
    let sim = Sim::start().await;
    let token = sim.token();
    let link = sim.link().await;
    let _down = downchannel(&link, &token).await;
    let declared = vec![
        Capability::new("System", "1.0"),
        Capability::new("SpeechRecognizer", "2.0"),
    ];
    assert_eq!(event(&link, &token, &report(&token, declared)).await.0, 202);
    let (status, body) = event(&link, &token, &sync_with_speech_state()).await;
    assert_eq!(status, 400);
    let (code, why) = exception(&body);
    assert_eq!(code, "INVALID_REQUEST_EXCEPTION");
    assert!(why.contains("did not declare SpeechSynthesizer"), "{why}");
    // Without the entry, it goes through.
    let sync = metadata("System", "SynchronizeState", json!({}));
    assert_eq!(event(&link, &token, &sync).await.0, 204);

    // AVS remembers what the device declared: a new connection that sends
    // no report of its own is held to it.
    let second = sim.link().await;
    let _down2 = downchannel(&second, &token).await;
    let (status, body) = event(&second, &token, &sync_with_speech_state()).await;
    assert_eq!(status, 400);
    assert!(
        exception(&body)
            .1
            .contains("did not declare SpeechSynthesizer")
    );

    // Declaring it lifts the refusal.
    let all = vec![
        Capability::new("System", "1.0"),
        Capability::new("SpeechRecognizer", "2.0"),
        Capability::new("SpeechSynthesizer", "1.3"),
    ];
    assert_eq!(event(&second, &token, &report(&token, all)).await.0, 202);
    assert_eq!(
        event(&second, &token, &sync_with_speech_state()).await.0,
        204
    );
    let stats = sim.wait("event=System.SynchronizeState&count=2").await;
    assert_eq!(
        stats["rejections"].as_array().unwrap().len(),
        2,
        "{stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_speak_for_a_device_that_did_not_declare_speech_synthesizer() {
    let sim = Sim::start().await;
    let token = sim.token();
    let link = sim.link().await;
    let _down = downchannel(&link, &token).await;
    let declared = vec![
        Capability::new("System", "1.0"),
        Capability::new("SpeechRecognizer", "2.0"),
    ];
    assert_eq!(event(&link, &token, &report(&token, declared)).await.0, 202);
    let sync = metadata("System", "SynchronizeState", json!({}));
    assert_eq!(event(&link, &token, &sync).await.0, 204);

    let meta = recognize_metadata("CLOSE_TALK", "dlg-x", json!({"type": "PRESS_AND_HOLD"}));
    let resp = recognize_at_once(&link, &token, &meta, tone(8000)).await;
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    assert!(parts.next().await.is_none(), "no directive at all");
    let stats = sim.wait("recognizes=1").await;
    let outcome = stats["recognizes"][0]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("no speak"), "{stats:#}");

    // The same audio from a device that declared it gets its Speak.
    let all = vec![
        Capability::new("System", "1.0"),
        Capability::new("SpeechRecognizer", "2.0"),
        Capability::new("SpeechSynthesizer", "1.0"),
    ];
    assert_eq!(event(&link, &token, &report(&token, all)).await.0, 202);
    let meta = recognize_metadata("CLOSE_TALK", "dlg-y", json!({"type": "PRESS_AND_HOLD"}));
    let resp = recognize_at_once(&link, &token, &meta, tone(8000)).await;
    assert_eq!(resp.status(), 200);
    let mut parts = Parts::new(resp);
    assert_eq!(parts.directive().await["header"]["name"], "Speak");
}
