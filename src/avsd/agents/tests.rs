//! The registry is the one list of interfaces: Discovery, context and
//! dispatch agree with it.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::avs::connection::Identity;
use crate::avs::discovery::add_or_update_report;
use crate::dialog::Speech;
use avs_proto::message::{ExceptionErrorType, Header, SpeechActivity};
use kit::secret::Secret;

fn daemon_registry() -> (Registry, mpsc::Receiver<Input>, watch::Sender<SpeechState>) {
    let (dialog, dialog_rx) = mpsc::channel(4);
    let (speech_tx, speech) = watch::channel(SpeechState::default());
    let registry = for_daemon(Deps {
        state_dir: std::env::temp_dir(),
        inactivity_report_every: Duration::from_secs(3600),
        dialog,
        speech,
        volume: crate::volume::spawn(
            crate::volume::Settings {
                state_dir: std::env::temp_dir().join(format!("avsd-agents-{}", std::process::id())),
                output: crate::volume::Output::Software(Default::default()),
            },
            &tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        ),
        player: audio_player::PlayerLink::new().0,
        alerts: alerts::channel().0,
        wake_word: false,
    })
    .expect("each namespace once");
    (registry, dialog_rx, speech_tx)
}

fn directive(namespace: &str, name: &str) -> Directive {
    Directive {
        header: Header {
            namespace: namespace.into(),
            name: name.into(),
            message_id: "m-1".into(),
            dialog_request_id: None,
        },
        payload: json!({}),
    }
}

#[tokio::test]
async fn the_discovery_capability_list_is_the_registered_agents() {
    let (registry, _dialog, _speech) = daemon_registry();
    let namespaces = registry.namespaces();
    assert_eq!(
        namespaces,
        [
            "System",
            "SpeechRecognizer",
            "AudioPlayer",
            "PlaybackController",
            "SpeechSynthesizer",
            "Speaker",
            "Alerts"
        ],
        "the daemon's interfaces"
    );
    let identity = Identity {
        product_id: "p".into(),
        dsn: "d".into(),
        capabilities: registry.discovery(),
    };
    let report: Value = serde_json::from_str(&add_or_update_report(
        &identity,
        &Secret::new("t".to_string()),
    ))
    .expect("JSON");
    let listed = report["event"]["payload"]["endpoints"][0]["capabilities"]
        .as_array()
        .expect("a capability list")
        .clone();
    let expected: Vec<Value> = registry
        .agents
        .iter()
        .map(|a| a.discovery().to_json())
        .collect();
    assert_eq!(listed, expected);
    let interfaces: Vec<&str> = listed
        .iter()
        .map(|c| c["interface"].as_str().expect("interface"))
        .collect();
    assert_eq!(interfaces, namespaces, "one entry per agent, in order");
    for c in &listed {
        assert_eq!(c["type"], "AlexaInterface");
        let version = c["version"].as_str().expect("version");
        assert!(
            version.split('.').count() == 2 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
            "{version} is MAJOR.MINOR"
        );
    }
}

#[tokio::test]
async fn every_context_entry_is_an_agents_and_each_appears() {
    let (registry, _dialog, speech) = daemon_registry();
    speech.send_replace(SpeechState {
        token: "tok".into(),
        offset_in_milliseconds: 0,
        player_activity: SpeechActivity::Playing,
    });
    let context = registry.context_source()();
    let headers: Vec<(String, String)> = context
        .iter()
        .map(|e| {
            let (ns, name) = e.header();
            (ns.to_string(), name.to_string())
        })
        .collect();
    let mut from_agents = Vec::new();
    for agent in &registry.agents {
        if let Some(read) = agent.context() {
            let entry = read();
            assert_eq!(
                entry.header().0,
                agent.namespace(),
                "an agent reports its own"
            );
            assert!(
                context.contains(&entry),
                "{:?} is in the context",
                entry.header()
            );
            from_agents.push(entry);
        }
    }
    assert_eq!(context, from_agents, "nothing else: {headers:?}");
    assert!(
        context.contains(&ContextEntry::SpeechState(speech.borrow().clone())),
        "the context reads the state as it is now"
    );
}

#[tokio::test]
async fn an_unknown_namespace_or_name_is_unsupported() {
    let (mut registry, _dialog, _speech) = daemon_registry();
    for (ns, name) in [
        ("Bogus", "Thing"),
        ("System", "Thing"),
        ("SpeechSynthesizer", "StopCapture"),
    ] {
        let d = directive(ns, name);
        match registry.agent_for(&d) {
            Err(e) => assert_eq!(
                e.exception_type(),
                ExceptionErrorType::UnsupportedOperation,
                "{ns}.{name}"
            ),
            Ok(agent) => panic!("{ns}.{name} went to {}", agent.namespace()),
        }
    }
    for agent_ns in registry.namespaces() {
        let names = registry
            .agents
            .iter()
            .find(|a| a.namespace() == agent_ns)
            .map(|a| a.directives())
            .unwrap_or_default();
        for name in names {
            let d = directive(agent_ns, name);
            let agent = registry.agent_for(&d).expect("a declared directive");
            assert_eq!(agent.namespace(), agent_ns);
        }
    }
}

#[tokio::test]
async fn a_namespace_registers_once() {
    let (mut registry, _dialog, _speech) = daemon_registry();
    let again = system::System::new(std::env::temp_dir(), Duration::from_secs(1));
    assert!(registry.register(again).is_err());
    assert_eq!(registry.namespaces().len(), 7);
}

/// A real connection and login that never connect (no session, an
/// endpoint nobody listens on): enough for agents to act on.
fn offline_env(
    state_dir: &std::path::Path,
) -> (
    Env,
    tokio_util::task::TaskTracker,
    tokio_util::sync::CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let auth = crate::auth::spawn(
        crate::auth::Settings {
            companion: Err("no companion in this test".into()),
            product_id: "p".into(),
            dsn: "d".into(),
            state_dir: state_dir.to_path_buf(),
            register_on_start: false,
            renew_before: Duration::from_secs(60),
        },
        &tracker,
        shutdown.child_token(),
    );
    let (inbound, _) = mpsc::channel(1);
    let identity = Identity {
        product_id: "p".into(),
        dsn: "d".into(),
        capabilities: Vec::new(),
    };
    let connection = crate::avs::connection::spawn(
        crate::avs::connection::Settings::new("https://127.0.0.1:9".into(), identity),
        auth.clone(),
        inbound,
        Arc::new(Vec::new),
        &tracker,
        shutdown.child_token(),
    );
    (Env { connection, auth }, tracker, shutdown)
}

#[tokio::test]
async fn speech_directives_reach_the_dialog_parsed_once_or_not_at_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, _tracker, shutdown) = offline_env(dir.path());
    let (mut registry, mut dialog, _speech) = daemon_registry();
    let mut speak = directive("SpeechSynthesizer", "Speak");
    speak.header.dialog_request_id = Some("dlg".into());
    speak.payload = json!({"url": "cid:a%40b", "format": "AUDIO_MPEG", "token": "tok"});
    let agent = registry.agent_for(&speak).expect("an agent");
    agent
        .handle(&speak, "{raw}", &env)
        .await
        .expect("a good Speak");
    match dialog.try_recv() {
        Ok(Input::Directive(d)) => {
            assert_eq!(d.header, speak.header);
            assert_eq!(d.raw, "{raw}");
            let Speech::Speak(s) = d.directive else {
                panic!("not a Speak: {:?}", d.directive)
            };
            assert_eq!(
                (s.content_id(), s.token.as_str()),
                ("a@b".to_string(), "tok")
            );
        }
        other => panic!("the dialog got {other:?}"),
    }
    let mut bad = speak.clone();
    bad.payload["url"] = json!("https://elsewhere/a.mp3");
    let agent = registry.agent_for(&bad).expect("an agent");
    let err = agent
        .handle(&bad, "{}", &env)
        .await
        .expect_err("not a cid: URL");
    assert_eq!(
        err.exception_type(),
        ExceptionErrorType::UnexpectedInformationReceived
    );
    let mut expect = directive("SpeechRecognizer", "ExpectSpeech");
    expect.payload = json!({});
    let agent = registry.agent_for(&expect).expect("an agent");
    let err = agent
        .handle(&expect, "{}", &env)
        .await
        .expect_err("no timeout");
    assert_eq!(
        err.exception_type(),
        ExceptionErrorType::UnsupportedOperation
    );
    assert!(
        dialog.try_recv().is_err(),
        "nothing refused reaches the dialog"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn set_endpoint_is_kept_for_the_next_start_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    let (env, _tracker, shutdown) = offline_env(dir.path());
    let mut system = system::System::new(state_dir.clone(), Duration::from_secs(3600));
    let mut set = directive("System", "SetEndpoint");
    set.payload = json!({"endpoint": "http://plain.example"});
    let err = system
        .handle(&set, "{}", &env)
        .await
        .expect_err("not https");
    assert_eq!(
        err.exception_type(),
        ExceptionErrorType::UnexpectedInformationReceived
    );
    assert_eq!(system::saved_endpoint(&state_dir), None);
    set.payload = json!({"endpoint": "https://alexa.eu.gateway.devices.a2z.com"});
    system
        .handle(&set, "{}", &env)
        .await
        .expect("an https endpoint");
    assert_eq!(
        system::saved_endpoint(&state_dir).as_deref(),
        Some("https://alexa.eu.gateway.devices.a2z.com")
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn the_inactivity_clock_restarts_on_activity_and_on_the_directive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, _tracker, shutdown) = offline_env(dir.path());
    let every = Duration::from_secs(3600);
    let mut system = system::System::new(dir.path().to_path_buf(), every);
    let start = tokio::time::Instant::now();
    assert_eq!(system.wake_at(), Some(start + every));
    tokio::time::advance(Duration::from_secs(10)).await;
    system.user_activity();
    assert_eq!(
        system.wake_at(),
        Some(start + Duration::from_secs(10) + every)
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let reset = directive("System", "ResetUserInactivity");
    system.handle(&reset, "{}", &env).await.expect("handled");
    let due = start + Duration::from_secs(20) + every;
    assert_eq!(system.wake_at(), Some(due));
    system.wake(&env).await;
    assert_eq!(system.wake_at(), Some(due + every), "then every period");
    shutdown.cancel();
}

#[tokio::test]
async fn speaker_directives_change_the_volume_or_are_refused_changing_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (env, tracker, shutdown) = offline_env(dir.path());
    let volume = crate::volume::spawn(
        crate::volume::Settings {
            state_dir: dir.path().join("volume"),
            output: crate::volume::Output::Software(Default::default()),
        },
        &tracker,
        shutdown.child_token(),
    );
    let mut speaker = speaker::Speaker::new(volume.clone());
    let now = || *volume.state().borrow();
    let mut set = directive("Speaker", "SetVolume");
    set.payload = json!({"volume": 30});
    speaker
        .handle(&set, "{}", &env)
        .await
        .expect("SetVolume 30");
    assert_eq!(now().volume, 30);
    let read = speaker.context().expect("a context entry");
    assert_eq!(
        read(),
        ContextEntry::VolumeState(avs_proto::message::VolumeState {
            volume: 30,
            muted: false
        })
    );
    for (name, payload) in [
        ("SetVolume", json!({"volume": 150})),
        ("SetVolume", json!({"volume": -1})),
        ("SetVolume", json!({"volume": "30"})),
        ("SetVolume", json!({"volume": 30.5})),
        ("SetVolume", json!({})),
        ("AdjustVolume", json!({"volume": 101})),
        ("AdjustVolume", json!({"volume": "up"})),
        ("SetMute", json!({"mute": "true"})),
        ("SetMute", json!({})),
    ] {
        let mut d = directive("Speaker", name);
        d.payload = payload.clone();
        let err = speaker
            .handle(&d, "{}", &env)
            .await
            .expect_err(&format!("{name} {payload}"));
        assert_eq!(
            err.exception_type(),
            ExceptionErrorType::UnexpectedInformationReceived,
            "{name} {payload}"
        );
        assert_eq!((now().volume, now().muted), (30, false), "{name} {payload}");
    }
    let mut adjust = directive("Speaker", "AdjustVolume");
    adjust.payload = json!({"volume": 100});
    speaker
        .handle(&adjust, "{}", &env)
        .await
        .expect("AdjustVolume");
    assert_eq!(now().volume, 100, "clamped");
    let mut mute = directive("Speaker", "SetMute");
    mute.payload = json!({"mute": true});
    speaker.handle(&mute, "{}", &env).await.expect("SetMute");
    assert!(now().muted);
    shutdown.cancel();
}
